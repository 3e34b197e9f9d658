-- Per-call state while a token fetch is in flight (ecw-host script).
--
-- Run with -b and -t T: the first T calls start together.  Their roles:
--   "long"  (odd call_index <= T): ask for a token with a long timeout; one
--           of them becomes the leader and makes the single, slow token
--           request, the others wait on it;
--   "short" (even call_index <= T): start a little later (so they are
--           never the leader), wait on the leader's fetch with a short
--           timeout, time out, and return: ecw-host then collects and
--           closes their state while the leader's fetch is still running;
--   "later" (call_index > T): ordinary calls on the same threads, started
--           after the short calls closed; they must all succeed.
-- Every call prints one line: EMBED call= role= outcome= fetched= waited=
-- t_end= (core.now_ms, one clock for the whole process).
-- Settings are channel variables (ecw-host -v): ecw_fhir_base,
-- ecw_client_id, ecw_private_key, ecw_kid, ecw_ca_file, ecw_threads,
-- ecw_short_ms, ecw_long_ms.
local core = require "ecw.core"

local function var(name)
  return session:getVariable(name) or error("channel variable " .. name .. " is not set")
end

local T = tonumber(var("ecw_threads"))
local SCOPES = "system/Patient.read"
local role = call_index > T and "later" or (call_index % 2 == 1 and "long" or "short")

local h = assert(core.client{
  fhir_base = var("ecw_fhir_base"), client_id = var("ecw_client_id"),
  private_key = var("ecw_private_key"), kid = var("ecw_kid"),
  ca_file = var("ecw_ca_file"),
})

if role == "short" then freeswitch.msleep(150) end
local timeout = tonumber(role == "short" and var("ecw_short_ms") or var("ecw_long_ms"))
local info, err = h:token(SCOPES, { timeout_ms = timeout })
local outcome
if info then
  outcome = "ok"
  if role == "later" then
    -- and the token works
    local res = assert(h:get("Patient/p-1001", SCOPES))
    if res.status ~= 200 then outcome = "http_" .. res.status end
  end
else
  outcome = err.code
end
io.stdout:write(("EMBED call=%d role=%s outcome=%s fetched=%s waited=%s t_end=%d msg=%s\n"):format(
  call_index, role, outcome, info and tostring(info.fetched) or "-",
  info and tostring(info.waited) or "-", core.now_ms(),
  err and (tostring(err.message):gsub("%s", "_")) or "-"))
io.stdout:flush()
if role == "short" then
  return outcome == "timeout"
end
return outcome == "ok"
