-- A call that starts lookups and hangs up before they finish: odd calls
-- leave without waiting (the state closes with requests in flight), even
-- calls wait for theirs.  The host must survive every one of them.
local ecw = require "ecw"

local function env(name)
  local v = os.getenv(name)
  if not v then error(name .. " is not set") end
  return v
end

assert(ecw.configure {
  fhir_base = env("ECW_T_BASE"), client_id = env("ECW_T_CLIENT"),
  private_key = env("ECW_T_KEY"), kid = env("ECW_T_KID"), ca_file = env("ECW_T_CA"),
})
local req = assert(ecw.start("patient", { phone = env("ECW_T_PHONE") }))
local second = assert(ecw.start("patient", { phone = env("ECW_T_PHONE") }))
second:cancel()
if call_index % 2 == 0 then
  local p, err = req:wait(5000)
  if not p then error("lookup failed: " .. tostring(err)) end
end
return true
