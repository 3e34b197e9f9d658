-- Check stage for examples/freeswitch/receptionist.lua under ecw-host
-- (ecw-host -c): runs in the call's own Lua state after the script and
-- fails the call unless the caller got their own patient's dialogue.
local c = assert(host.expect, "no host.expect: run with receptionist_dialplan.lua")

local function fail(why)
  local heard = table.concat(host.spoken, " | ")
  local logs = table.concat(host.logs, ""):gsub("\n", " | ")
  error(("call %d (%s): %s\n  heard: %s\n  logs: %s"):format(
    call_index, c.given, why, heard, logs), 0)
end

local function heard(text)
  for _, s in ipairs(host.spoken) do
    if s == text then return true end
  end
  return false
end

if host.transfer then fail("transferred to " .. tostring(host.transfer)) end
if not host.answered then fail("never answered") end
if not heard("Hello " .. c.given .. ".") then fail("did not greet the patient") end
if c.say and not heard(c.say) then fail("did not say: " .. c.say) end
if c.refill then
  local ev = host.events[1]
  if #host.events ~= 1 or ev.subclass ~= "ecw::refill_request" then
    fail(#host.events .. " events fired, expected one ecw::refill_request")
  end
  if ev.headers["Patient-ID"] ~= c.refill.patient or
     ev.headers["MedicationRequest-ID"] ~= c.refill.med then
    fail("refill event for the wrong patient or prescription")
  end
elseif #host.events ~= 0 then
  fail("unexpected events")
end
if host.spoken[#host.spoken] ~= "Thank you for calling. Goodbye." or not host.hungup then
  fail("did not end the call with goodbye and hangup")
end
for _, line in ipairs(host.logs) do
  if line:match("^ERR") or line:match("^WARNING") then fail("logged: " .. line) end
  -- the script promises not to log PHI
  if line:find(c.given, 1, true) or line:find(c.phone, 1, true) then
    fail("logged PHI: " .. line)
  end
end
return true
