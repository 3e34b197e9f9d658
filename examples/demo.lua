-- A receptionist call against the local SMART/FHIR sandbox.
--
--   make demo          (or: lua5.4 examples/demo.lua, from anywhere)
--
-- Starts the sandbox EHR (TLS with its own CA), creates an RS384 key the
-- way bin/ecw-keygen does, registers it, configures ecw and plays a call:
-- caller ID -> two patients on that number -> date of birth -> one patient
-- -> primary care provider -> active medications (refill) -> read-back.
-- Lines starting with "  ecw" are what the script did and how long it took.
-- All data is synthetic (555-01xx numbers, "Example" names).

-- Find lua/, build/ and the sandbox launcher relative to this file.
local ROOT do
  local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
  ROOT = here .. "/.."
  local ver = _VERSION:match("(%d+%.%d+)$")
  package.path = ROOT .. "/lua/?.lua;" .. ROOT .. "/?.lua;" .. package.path
  package.cpath = ROOT .. "/build/" .. ver .. "/?.so;" .. package.cpath
end

local ecw = require "ecw"
local core = require "ecw.core"
local sandbox = require "spec.support.sandbox"

local CLIENT_ID = "ecw-demo"
local PRACTICE = "DEMO01"
local CALLER_ID = "+15550100199"          -- what caller_id_number holds

local function printf(...)
  io.write(string.format(...), "\n")
end

local function agent(s) printf("AGENT:  %s", s) end
local function caller(s) printf("CALLER: %s", s) end

-- Runs fn, prints what it did and how long it took, returns its results.
-- noun names what a list holds ("active prescription").
local lookup_ms = 0
local function step(label, fn, noun)
  local t0 = core.now_ms()
  local r = table.pack(fn())
  local ms = core.now_ms() - t0
  lookup_ms = lookup_ms + ms
  local res, err = r[1], r[2]
  local outcome
  if res == nil and err then
    outcome = err.code .. (err.count and (": " .. err.count .. " patients") or "")
  elseif type(res) == "table" and res.name then
    outcome = res.name
  elseif type(res) == "table" then
    noun = noun or "record"
    if #res ~= 1 then
      noun = noun:find("y$") and noun:sub(1, -2) .. "ies" or noun .. "s"
    end
    outcome = #res .. " " .. noun
  else
    outcome = tostring(res)
  end
  printf("  ecw %-52s -> %-24s %3d ms", label, outcome, ms)
  return table.unpack(r, 1, r.n)
end

local function sh(cmd)
  local f = assert(io.popen(cmd .. " 2>&1"))
  local out = f:read("*a")
  local ok = f:close()
  assert(ok, cmd .. ": " .. out)
  return out
end

local function run(sb, keydir)
  -- 1. The app's key pair: what `bin/ecw-keygen --out KEY` does.  In
  --    production eCW fetches the public half from your JWKS URL; here we
  --    hand it to the sandbox directly.
  local key_path = keydir .. "/demo-signing-key.pem"
  local jwk = assert(core.keygen { alg = "RS384", path = key_path })
  local public_pem = sh("openssl pkey -in '" .. key_path .. "' -pubout")
  sb:register { client_id = CLIENT_ID, kid = jwk.kid, alg = "RS384", public_key_pem = public_pem }

  -- 2. Configuration, as a FreeSWITCH script would do it on every call.
  assert(ecw.configure {
    fhir_base = sb:fhir_base_for(PRACTICE),
    client_id = CLIENT_ID,
    private_key = key_path,
    kid = jwk.kid,
    ca_file = sb.ca_file,
    timeout_ms = 3000,
    scopes = {
      "system/Patient.read", "system/Practitioner.read", "system/MedicationRequest.read",
      "system/AllergyIntolerance.read", "system/Encounter.read",
    },
  })

  printf("ecw %s demo: a receptionist call against the local SMART on FHIR sandbox", ecw._VERSION)
  printf("  FHIR base   %s", sb:fhir_base_for(PRACTICE))
  printf("  token URL   %s (found through .well-known/smart-configuration)", sb.token_url)
  printf("  app key     RS384, kid %s", jwk.kid)
  printf("")
  printf("--- Incoming call from %s ---", CALLER_ID)

  -- (1) Caller ID: two family members share the home phone.
  local p, err = step("patient{phone = caller_id}", function()
    return ecw.patient { phone = CALLER_ID }
  end)
  agent("Thank you for calling Springfield Family Medicine, this is the virtual assistant.")
  if not p and err.code == "ambiguous" then
    agent("I see " .. err.count .. " patients on this phone number. " ..
          "To pull up the right chart, what is the patient's date of birth?")
    caller("March first, nineteen seventy.")
    -- (2) The date of birth narrows it to one patient.
    p, err = step("patient{phone = caller_id, birthdate = \"1970-03-01\"}", function()
      return ecw.patient { phone = CALLER_ID, birthdate = "1970-03-01" }
    end)
  end
  if not p then
    -- err.code says why: not_found, ambiguous, timeout, unavailable...
    agent("I'm sorry, I couldn't find your chart (" .. err.code .. "). " ..
          "Let me transfer you to the front desk.")
    return
  end
  agent("Thank you, " .. p.given .. ". I have your chart for " .. ecw.say.name(p) ..
        ", born " .. ecw.say.birthdate(p) .. ". How can I help you today?")

  -- (3) Primary care provider.
  caller("I need a refill, but first, who is my regular doctor again?")
  local pr = step("practitioner(patient)", function()
    return ecw.practitioner(p)
  end)
  if pr then
    agent("Your primary care provider is " .. pr.name .. ".")
  else
    agent("I don't see a primary care provider on file.")
  end

  -- (4) Active medications for the refill.
  caller("Great. The refill is for my blood pressure pill.")
  local meds = step("medications(patient)", function()
    return ecw.medications(p)
  end, "active prescription")
  if not meds then
    agent("I can't reach your medication list right now; I'll have the nurse call you back.")
    return
  end
  if #meds == 1 then
    agent("I see one active prescription: " .. meds[1].name .. ", " ..
          meds[1].dosage:gsub("^%u", string.lower) .. ". Is that the one?")
  else
    local names = {}
    for i, m in ipairs(meds) do names[i] = m.name end
    agent("I see " .. #meds .. " active prescriptions: " .. ecw.say.join(names) ..
          ". Which one do you need?")
  end
  caller("Yes, the lisinopril.")

  -- (5) Read-back summary for the refill request.
  local allergies, visits
  allergies = step("allergies(patient)", function() return ecw.allergies(p) end, "allergy")
  visits = step("encounters(patient, {count = 1})", function()
    return ecw.encounters(p, { count = 1 })
  end, "recent visit")
  local summary = ecw.say.summary(p, {
    practitioner = pr, medications = meds, allergies = allergies, encounters = visits,
  })
  agent("Let me read back the request. " .. summary ..
        " Refill requested: " .. meds[1].name .. ".")
  agent("I've sent it to " .. (pr and pr.name or "your care team") ..
        "'s team. The pharmacy will text you when it's ready. Anything else?")
  caller("No, that's all. Thanks!")
  agent("You're welcome, " .. p.given .. ". Goodbye!")
  printf("--- Call ended. ecw lookups took %d ms in all (first one includes discovery, " ..
         "tokens and the TLS handshake) ---", lookup_ms)

  -- A second call a minute later reuses the cached tokens and connection.
  printf("")
  printf("--- Incoming call from +1 555-010-0123 (tokens are cached now) ---")
  local before = core.stats()
  local other = step("patient{phone = caller_id}", function()
    return ecw.patient { phone = "+1 555-010-0123" }
  end)
  if other then
    agent("Hello " .. other.given .. ", thank you for calling Springfield Family Medicine.")
  end
  local after = core.stats()
  printf("  (this lookup: %d token requests, %d HTTP request, %d new connections)",
    after.token_requests - before.token_requests, after.http_requests - before.http_requests,
    after.connections_opened - before.connections_opened)

  local s, sbs = ecw.stats(), sb:stats()
  printf("")
  printf("Counters (ecw.stats)")
  printf("  tokens fetched %d, token cache hits %d, discovery requests %d",
    s.token_requests, s.token_cache_hits, s.discovery_requests)
  printf("  HTTP requests %d, connections opened %d, 401 retries %d",
    s.http_requests, s.connections_opened, s.retries_401)
  printf("  calls %d, phone forms tried %d, pages followed %d, refused out-of-scope calls %d",
    s.calls, s.phone_forms_tried, s.pages_followed, s.scope_refusals)
  printf("The sandbox saw %d token requests, %d FHIR requests, %d TLS connections",
    sbs.token_requests, sbs.fhir_requests, sbs.connections)
end

local sb = sandbox.start { tls = true }
local keydir = sandbox.tmpdir("ecw-demo")
local ok, err = xpcall(run, debug.traceback, sb, keydir)
sb:stop()
os.execute("rm -rf '" .. keydir .. "'")
if not ok then
  io.stderr:write("demo failed: ", tostring(err), "\n")
  os.exit(1)
end
