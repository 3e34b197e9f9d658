-- ecw_warm.lua: keep tokens warm so no caller waits for one.
--
-- lua.conf.xml: <param name="startup-script" value="ecw_warm.lua"/>
-- mod_lua runs a startup script once, in its own thread, when the module
-- loads.  The C core keeps tokens process-wide, so a token fetched here is
-- the one receptionist.lua uses.  Each pass costs no request while the
-- cached tokens are fresh; a token is fetched only when it nears expiry
-- (eCW tokens last 300 s and count against 250 requests/min per practice).
--
-- Set the global variable ecw_warm=false (fsctl or vars.xml) to stop it.
-- luacheck: globals freeswitch
local ecw = require "ecw"

local TYPES = { "Patient", "Practitioner", "MedicationRequest" }
local PERIOD_MS = 60000

local function log(level, msg)
  freeswitch.consoleLog(level, "ecw_warm: " .. msg .. "\n")
end

local function setting(name)
  return freeswitch.getGlobalVariable(name)
end

for _, k in ipairs({ "ecw_fhir_base", "ecw_client_id", "ecw_private_key", "ecw_kid" }) do
  if not setting(k) then
    log("ERR", "missing global variable " .. k .. "; not warming tokens")
    return
  end
end

while setting("ecw_warm") ~= "false" do
  local client, err = ecw.configure {
    fhir_base = setting("ecw_fhir_base"), client_id = setting("ecw_client_id"),
    private_key = setting("ecw_private_key"), kid = setting("ecw_kid"),
    ca_file = setting("ecw_ca_file"),
    rate_limit = tonumber(setting("ecw_rate_limit")),   -- same as receptionist.lua
  }
  if client then
    local ok
    ok, err = client:warm(TYPES)
    if not ok then
      log("WARNING", "token refresh failed: " .. err.code .. " (" .. err.message .. ")")
    end
  else
    log("ERR", "ecw.configure failed: " .. err.code)
  end
  freeswitch.msleep(PERIOD_MS)
end
