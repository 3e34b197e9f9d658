-- One call in the mod_lua pattern (run by bench.calls in a fresh lua_State):
-- require ecw, configure, read one Patient.  Returns the read's own time and
-- the time spent in require + configure, in microseconds.
-- ARG: a Lua literal { fhir_base, client_id, key_path, kid, ca_file,
-- patient_id, scopes = { scope sets, chosen by call_index } }.
local cfg = load("return " .. ARG)()
local bench = require "bench"
local now = bench.now_us

local t0 = now()
local ecw = require "ecw"
assert(ecw.configure {
  fhir_base = cfg.fhir_base, client_id = cfg.client_id,
  private_key = cfg.key_path, kid = cfg.kid, ca_file = cfg.ca_file,
  rate_limit = 0,   -- see bench/lib/util.lua ecw_opts
})
local t1 = now()
local opts = cfg.scopes and { scopes = cfg.scopes[(call_index - 1) % #cfg.scopes + 1] } or nil
local p, err = ecw.read("Patient", cfg.patient_id, opts)
local t2 = now()
if not p then error("ecw.read: " .. tostring(err), 0) end
if p.id ~= cfg.patient_id then error("wrong patient", 0) end
return t2 - t1, t1 - t0
