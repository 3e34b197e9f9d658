-- Shutdown with a token refresh in flight (ecw-host script).
-- Every call reads a Patient.  With short-lived tokens the core refreshes
-- ahead on one of its worker threads; the first call that sees that
-- refresh running ends the run (host.stop_run), so ecw-host goes on to
-- curl_global_cleanup -- as FreeSWITCH's shutdown does -- while the worker
-- still waits for the token endpoint (the sandbox holds that request).
-- Settings are channel variables (ecw-host -v): ecw_fhir_base,
-- ecw_client_id, ecw_private_key, ecw_kid, ecw_ca_file.
local core = require "ecw.core"

local function var(name)
  return session:getVariable(name) or error("channel variable " .. name .. " is not set")
end

local h = assert(core.client{
  fhir_base = var("ecw_fhir_base"), client_id = var("ecw_client_id"),
  private_key = var("ecw_private_key"), kid = var("ecw_kid"),
  ca_file = var("ecw_ca_file"),
})
local res, err = h:get("Patient/p-1001", "system/Patient.read")
if not res then error("lookup failed: " .. err.code .. ": " .. err.message) end
if res.status ~= 200 then error("lookup failed: HTTP " .. res.status) end

local s = core.stats()
if s.jobs_running + s.jobs_queued > 0 then
  host.stop_run = true
  io.stdout:write(("EMBED call=%d refresh_in_flight=1 t=%d\n"):format(call_index, core.now_ms()))
  io.stdout:flush()
end
return true
