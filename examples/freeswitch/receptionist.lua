-- receptionist.lua: the demo's call, for FreeSWITCH mod_lua.
--
-- Dialplan: <action application="lua" data="receptionist.lua"/> (see
-- dialplan.xml); settings come from channel or global variables
-- ecw_fhir_base, ecw_client_id, ecw_private_key, ecw_kid, and optionally
-- ecw_ca_file and ecw_front_desk (vars.xml / dialplan.xml).
--
-- Rules this script follows, and yours should too:
--   * look the caller up BEFORE session:answer(): while ecw waits for the
--     EHR the caller hears ringback, not dead air;
--   * ecw returns nil, err for every run-time failure: branch on err.code,
--     never let a lookup failure end the call without a transfer;
--   * check session:ready() after every blocking call (the caller may
--     have hung up meanwhile);
--   * never log PHI: log err.code, counts and timings, not names, numbers,
--     birth dates or ids.  freeswitch.consoleLog goes to files and
--     terminals that are not protected like the chart is.
-- luacheck: globals session freeswitch
local ecw = require "ecw"

local FRONT_DESK_CONTEXT = "default"

local function log(level, msg)
  freeswitch.consoleLog(level, "receptionist: " .. msg .. "\n")
end

local function setting(name)
  return session:getVariable(name) or freeswitch.getGlobalVariable(name)
end

local function say(text)
  if session:ready() then
    session:speak(text)
  end
end

-- Prompts with TTS ("say:" uses the channel's tts_engine and tts_voice)
-- and returns the digits, or "" when the caller entered nothing valid.
local function ask(min, max, prompt, regex)
  if not session:ready() then
    return ""
  end
  return session:playAndGetDigits(min, max, 3, 7000, "#", "say:" .. prompt,
    "say:Sorry, I did not get that.", regex) or ""
end

local function front_desk(reason)
  log("INFO", "transferring to the front desk (" .. reason .. ")")  -- a code, never PHI
  if session:ready() then
    say("Let me transfer you to the front desk.")
    session:transfer(setting("ecw_front_desk") or "1000", "XML", FRONT_DESK_CONTEXT)
  end
end

-- "03011970" (MMDDYYYY, as callers say it) -> "1970-03-01", or nil.
local function dob_from_digits(d)
  local m, day, y = d:match("^(%d%d)(%d%d)(%d%d%d%d)$")
  if not m or tonumber(m) < 1 or tonumber(m) > 12 or tonumber(day) < 1 or tonumber(day) > 31 then
    return nil
  end
  return y .. "-" .. m .. "-" .. day
end

local function refill(p)
  local meds, err = ecw.medications(p)
  if not session:ready() then return end
  if not meds then
    log("WARNING", "medications lookup failed: " .. err.code)
    return front_desk(err.code)
  end
  log("INFO", "active prescriptions: " .. #meds)
  if #meds == 0 then
    say("I don't see any active prescriptions on file.")
    return front_desk("no_active_medications")
  end
  local menu = {}
  for i, m in ipairs(meds) do
    if i > 9 then break end
    menu[#menu + 1] = "For " .. (m.name or "an unnamed medication") .. ", press " .. i .. "."
  end
  local choice = tonumber(ask(1, 1, "I see " .. #meds .. " active prescription" ..
    (#meds == 1 and "" or "s") .. ". " .. table.concat(menu, " "), "^[1-9]$"))
  local m = choice and meds[choice]
  if not m then
    return front_desk("no_choice")
  end
  -- Hand the request to the practice's task system; ids stay inside
  -- FreeSWITCH's event bus, they are not written to the log.
  local event = freeswitch.Event("CUSTOM", "ecw::refill_request")
  event:addHeader("Patient-ID", p.id)
  event:addHeader("MedicationRequest-ID", m.id)
  event:fire()
  say("Thank you. I've sent a refill request for " .. (m.name or "that prescription") ..
    ". The pharmacy will let you know when it is ready.")
end

local function main()
  for _, k in ipairs({ "ecw_fhir_base", "ecw_client_id", "ecw_private_key", "ecw_kid" }) do
    if not setting(k) then
      log("ERR", "missing setting " .. k)
      return front_desk("not_configured")
    end
  end
  -- Cheap on every call: the C core shares keys, tokens and connections
  -- across calls and threads.
  local client, err = ecw.configure {
    fhir_base = setting("ecw_fhir_base"),
    client_id = setting("ecw_client_id"),
    private_key = setting("ecw_private_key"),
    kid = setting("ecw_kid"),
    ca_file = setting("ecw_ca_file"),   -- optional; default: the system CA store
    -- optional: requests per minute for this practice on this box (eCW
    -- allows 250 per practice in all; default 250 for vendor "ecw")
    rate_limit = tonumber(setting("ecw_rate_limit")),
    timeout_ms = 3000,
  }
  if not client then
    log("ERR", "ecw.configure failed: " .. err.code)
    return front_desk(err.code)
  end

  -- 1. Caller ID, before answering.
  local caller_id = session:getVariable("caller_id_number") or "anonymous"
  local p
  p, err = ecw.patient { phone = caller_id }
  if not session:ready() then return end
  session:answer()
  say("Thank you for calling. This is the virtual assistant.")

  -- 2. Several patients on this number: the date of birth tells them apart.
  if not p and err.code == "ambiguous" then
    log("INFO", "caller ID matches " .. err.count .. " patients; asking for the date of birth")
    local dob = dob_from_digits(ask(8, 8, "I see more than one patient on this phone number. " ..
      "Please enter the patient's date of birth: two digits for the month, two for the day, " ..
      "and four for the year.", "^\\d{8}$"))
    if not dob then
      return front_desk("no_birthdate")
    end
    p, err = ecw.patient { phone = caller_id, birthdate = dob }
    if not session:ready() then return end
  end
  if not p then
    log("INFO", "no single patient for this caller: " .. err.code)
    return front_desk(err.code)
  end

  say("Hello " .. (p.given or "there") .. ".")
  local choice = ask(1, 1, "To hear who your doctor is, press 1. To request a prescription " ..
    "refill, press 2. For the front desk, press 0.", "^[012]$")

  -- 3. Primary care provider.
  if choice == "1" then
    local pr
    pr, err = ecw.practitioner(p)
    if not session:ready() then return end
    if pr then
      say("Your primary care provider is " .. pr.name .. ".")
    else
      log("INFO", "practitioner lookup: " .. err.code)
      say("I don't see a primary care provider on file.")
    end
  -- 4. Refill.
  elseif choice == "2" then
    refill(p)
  else
    return front_desk("caller_choice")
  end
  say("Thank you for calling. Goodbye.")
  if session:ready() then
    session:hangup()
  end
end

local t0 = os.time()
local ok, e = pcall(main)
if not ok then
  -- ecw raises only for programming errors; its messages carry no call data.
  log("ERR", "script error: " .. tostring(e))
  front_desk("script_error")
end
log("INFO", string.format("done in %d s", os.time() - t0))
