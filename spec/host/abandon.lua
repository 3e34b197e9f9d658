-- A caller hangs up while a lookup it started runs on a module worker
-- thread (ecw-host script, run with -b).  Call 1 spawns the lookup, whose
-- token request is the first (the sandbox delays it), and returns at once
-- without collecting it: ecw-host closes the state, which cancels the job.
-- The other calls started at the same moment ask for the same token on
-- their own threads (after a short pause, so the job leads) and must still
-- get it: one caller hanging up must not fail the others.
-- Channel variables as for slow_token.lua, plus ecw_abandon_after_ms (how
-- long call 1 stays before hanging up) and ecw_lenient=1 (report outcomes
-- but never fail a call: for the sanitizer runs, which judge memory and
-- races only).
local core = require "ecw.core"

local function var(name)
  return session:getVariable(name) or error("channel variable " .. name .. " is not set")
end
local SCOPES = "system/Patient.read"
local cfg = { var("ecw_fhir_base"), var("ecw_client_id"), var("ecw_private_key"),
              var("ecw_kid"), var("ecw_ca_file"), SCOPES }

local outcome, extra = "ok", "-"
if call_index == 1 then
  local job = assert(core.spawn{ module = "spec.host.async_job", func = "token",
                                 payload = table.concat(cfg, "\t") })
  freeswitch.msleep(tonumber(var("ecw_abandon_after_ms")))
  extra = job:status()
  outcome = "abandoned"
else
  freeswitch.msleep(200)
  local h = assert(core.client{ fhir_base = cfg[1], client_id = cfg[2],
                                private_key = cfg[3], kid = cfg[4], ca_file = cfg[5] })
  local info, err = h:token(SCOPES, { timeout_ms = 10000 })
  outcome = info and "ok" or err.code
  extra = info and ("fetched=" .. tostring(info.fetched)) or tostring(err.message):gsub("%s", "_")
end
io.stdout:write(("EMBED call=%d outcome=%s info=%s t_end=%d\n"):format(
  call_index, outcome, extra, core.now_ms()))
io.stdout:flush()
return session:getVariable("ecw_lenient") == "1" or outcome == "ok" or outcome == "abandoned"
