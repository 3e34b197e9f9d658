-- Dialplan stage for examples/freeswitch/receptionist.lua under ecw-host
-- (ecw-host -p): what FreeSWITCH does before the `lua` application runs.
-- The endpoint sets caller_id_number, dialplan.xml sets ecw_front_desk,
-- and the caller will key in host.dtmf, one entry per playAndGetDigits.
-- Settings (ecw_fhir_base, ecw_client_id, ...) are global variables given
-- with ecw-host -g, as vars.xml sets them in a real deployment.
--
-- Two test knobs, channel variables given with ecw-host -v:
--   embed_practices=N  spread the calls over N practices: the dialplan sets
--       ecw_fhir_base per call (the script prefers the channel variable to
--       the global), as a box serving several practices does per DID.
--   embed_rate_limit=R  the call's ecw_rate_limit setting (0: off).  The
--       default for eCW -- 250 requests a minute per practice, as eCW
--       enforces -- refuses most of a 1,000-calls-a-second load on one
--       practice, as it should.
--
-- Calls cycle through five callers of the sandbox EHR, so a run touches
-- three scope sets: Patient (every call), Practitioner (menu 1) and
-- MedicationRequest (menu 2).  host.expect tells receptionist_check.lua
-- what the caller must hear.
local CALLERS = {
  -- unique phone, "who is my doctor"
  { phone = "555-010-0123", dtmf = { "1" }, given = "Ursula",
    say = "Your primary care provider is Dr. Robert Sample." },
  -- same patient, E.164 caller ID, refill of her one active prescription
  { phone = "+15550100123", dtmf = { "2", "1" }, given = "Ursula",
    refill = { patient = "p-1003", med = "mr-4" } },
  -- shared family phone: the date of birth picks Jane, then a refill
  { phone = "(555) 010-0199", dtmf = { "03011970", "2", "1" }, given = "Jane",
    refill = { patient = "p-1001", med = "mr-1" } },
  -- same phone, digits only: John, "who is my doctor"
  { phone = "5550100199", dtmf = { "11121968", "1" }, given = "John",
    say = "Your primary care provider is Dr. Alice Example." },
  -- a patient without a practitioner on file
  { phone = "555-010-0150", dtmf = { "1" }, given = "Pat",
    say = "I don't see a primary care provider on file." },
}

local practices = tonumber(session:getVariable("embed_practices") or "1")
if practices > 1 then
  local base = assert(freeswitch.getGlobalVariable("ecw_fhir_base"))
  session:setVariable("ecw_fhir_base", (base:gsub("/[^/]+$", "")) ..
    ("/EMBED%03d"):format((call_index - 1) % practices + 1))
end

local rate_limit = session:getVariable("embed_rate_limit")
if rate_limit then
  session:setVariable("ecw_rate_limit", rate_limit)
end

local c = CALLERS[(call_index - 1) % #CALLERS + 1]
session:setVariable("caller_id_number", c.phone)
session:setVariable("ecw_front_desk", "1000")
for i, d in ipairs(c.dtmf) do host.dtmf[i] = d end
host.expect = c
return true
