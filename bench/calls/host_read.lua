-- Bench item 6: one call under ecw-host (spec/host/host.c), which embeds
-- Lua exactly as mod_lua does.  Settings come from freeswitch globals
-- (ecw-host -g, as vars.xml would give them).
local function g(name)
  return freeswitch.getGlobalVariable(name) or error("global " .. name .. " is not set")
end
local ecw = require "ecw"
assert(ecw.configure {
  fhir_base = g("bench_fhir_base"), client_id = g("bench_client_id"),
  private_key = g("bench_key"), kid = g("bench_kid"), ca_file = g("bench_ca"),
  rate_limit = 0,   -- see bench/lib/util.lua ecw_opts
})
local id = g("bench_patient")
local p, err = ecw.read("Patient", id)
if not p then error("ecw.read: " .. tostring(err), 0) end
return p.id == id
