-- One soak call for ecw-host: a receptionist-style lookup with a hard
-- deadline, while the driver switches sandbox faults on and off.  The call
-- fails (and the soak with it) when ecw raises, answers later than its
-- deadline plus 50 ms, or returns an error code outside the documented set.
-- Each thread appends "code elapsed_ms" lines to its own file, and the
-- process-wide counters after its call, for the driver to add up.
local ecw = require "ecw"
local core = require "ecw.core"

local TIMEOUT = tonumber(session:getVariable("soak_timeout_ms"))
local GRACE = 50
local CODES = {
  ok = true, config = true, auth = true, scope = true, not_found = true,
  ambiguous = true, timeout = true, network = true, tls = true,
  rate_limited = true, unavailable = true, bad_response = true, http = true,
}
local PHONES = { "+15550100123", "5550100199", "(555) 010-0199", "555-010-0150" }

local function var(name)
  return session:getVariable(name) or error("channel variable " .. name .. " is not set")
end

local client = assert(ecw.configure {
  fhir_base = var("ecw_fhir_base"), client_id = var("ecw_client_id"),
  private_key = var("ecw_private_key"), kid = var("ecw_kid"),
  ca_file = var("ecw_ca_file"), timeout_ms = TIMEOUT, rate_limit = 0,
  breaker_threshold = 5, breaker_cooldown_ms = 1000,
})

local t0 = core.now_ms()
local p, err = client:patient { phone = PHONES[call_index % #PHONES + 1] }
local code = p and "ok" or err.code
if p and call_index % 3 == 0 then
  local meds
  meds, err = client:medications(p)
  if not meds then code = err.code end
end
local took = core.now_ms() - t0

local dir = var("soak_dir")
local f = assert(io.open(("%s/calls-%d"):format(dir, thread_index), "a"))
f:write(code, " ", took, "\n")
f:close()
local s = core.stats()
f = assert(io.open(("%s/stats-%d"):format(dir, thread_index), "w"))
f:write(s.http_requests, " ", s.token_requests, " ", s.discovery_requests, "\n")
f:close()

if not CODES[code] then error("unexpected error code " .. tostring(code)) end
if took > TIMEOUT + GRACE then
  error(("answered after %d ms, deadline %d ms (%s)"):format(took, TIMEOUT, code))
end
return true
