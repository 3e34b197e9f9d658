-- One simulated phone call for ecw-host: configure, read a Patient, check.
-- Settings arrive in the environment, as a dialplan would pass channel
-- variables.  Returns true, or raises with the reason.
local core = require "ecw.core"

local function env (name)
  local v = os.getenv(name)
  if not v then error(name .. " is not set") end
  return v
end

local h = assert(core.client{
  fhir_base   = env("ECW_T_BASE"),
  client_id   = env("ECW_T_CLIENT"),
  private_key = env("ECW_T_KEY"),
  kid         = env("ECW_T_KID"),
  ca_file     = env("ECW_T_CA"),
})
local res, err = h:get("Patient/" .. env("ECW_T_PATIENT"), env("ECW_T_SCOPES"))
if not res then error("lookup failed: " .. tostring(err)) end
if res.status ~= 200 then error("lookup failed: HTTP " .. res.status) end

-- The cache is process-wide: in a sequential run every call after the
-- first must find the token cached, even though each call is a new state.
if os.getenv("ECW_T_EXPECT_WARM") and call_index > 1 then
  local s = core.stats()
  if s.token_requests ~= 1 then
    error("token requests: " .. s.token_requests .. " after call " .. call_index)
  end
end
return true
