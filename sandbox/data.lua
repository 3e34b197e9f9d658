-- Synthetic FHIR R4 data served by the sandbox (identical for every
-- practice code).
--
-- Everything is fake on purpose: phone numbers use the fictional 555-01xx
-- block, addresses are on "Example" streets, MRNs are obviously made up.
-- Specs require this module too (`require "sandbox.data"`), so it must load
-- under Lua 5.3 and 5.4 and only depend on lua-cjson (for JSON null).
--
-- Exports:
--   resources[Type][id]  -> resource table (treat as read-only)
--   ordered[Type]        -> array of resources in a stable order (search
--                           results and paging follow it)
--   fixtures             -> named handles for the interesting records
--   phi                  -> every name/phone/birth date/MRN string, for
--                           tests that scan logs for leaked PHI
local cjson = require "cjson"

local NULL = cjson.null
local MRN_SYSTEM = "urn:oid:2.16.840.1.113883.3.564.1"

local M = {
  MRN_SYSTEM = MRN_SYSTEM,
  resources = {},
  ordered = {},
  phi = {},
}

local function add(resource)
  local t = resource.resourceType
  M.resources[t] = M.resources[t] or {}
  M.ordered[t] = M.ordered[t] or {}
  assert(not M.resources[t][resource.id], "duplicate id " .. resource.id)
  M.resources[t][resource.id] = resource
  table.insert(M.ordered[t], resource)
  return resource
end

-- Deduplicated; strings under 3 characters (a middle initial) are left out
-- because a log scanner would match them everywhere.
local phi_seen = {}
local function phi(...)
  for _, s in ipairs({ ... }) do
    if #s >= 3 and not phi_seen[s] then
      phi_seen[s] = true
      table.insert(M.phi, s)
    end
  end
end

local function mrn(value)
  return {
    use = "usual",
    type = {
      coding = { {
        system = "http://terminology.hl7.org/CodeSystem/v2-0203",
        code = "MR",
        display = "Medical Record Number",
      } },
      text = "MRN",
    },
    system = MRN_SYSTEM,
    value = value,
  }
end

local function phone(value, use)
  return { system = "phone", value = value, use = use or "home" }
end

local function ref(type, id, display)
  return { reference = type .. "/" .. id, display = display }
end

---------------------------------------------------------------- practitioners
local function practitioner(id, given, family, npi)
  phi(given .. " " .. family)
  return add {
    resourceType = "Practitioner",
    id = id,
    meta = { lastUpdated = "2024-01-02T03:04:05Z" },
    identifier = { { system = "http://hl7.org/fhir/sid/us-npi", value = npi } },
    active = true,
    name = { { use = "official", family = family, given = { given }, prefix = { "Dr." } } },
  }
end

local alice = practitioner("pr-1001", "Alice", "Example", "9990000011")
local bob = practitioner("pr-1002", "Robert", "Sample", "9990000012")

--------------------------------------------------------------------- patients
-- opts: id, given, family, gender, birth, phones = {...}, mrn, gp, extra
local function patient(o)
  local p = {
    resourceType = "Patient",
    id = o.id,
    meta = { lastUpdated = "2024-05-06T07:08:09Z" },
    active = true,
    identifier = o.mrn and { mrn(o.mrn) } or nil,
    name = { { use = "official", family = o.family, given = o.given } },
    gender = o.gender,
    birthDate = o.birth,
  }
  phi(table.concat(o.given, " ") .. " " .. o.family, o.family, o.birth)
  for _, g in ipairs(o.given) do phi(g) end
  if o.mrn then phi(o.mrn) end
  if o.phones then
    p.telecom = {}
    for _, number in ipairs(o.phones) do
      table.insert(p.telecom, phone(number))
      phi(number)
    end
  end
  if o.gp then
    p.generalPractitioner = { ref("Practitioner", o.gp.id,
      "Dr. " .. o.gp.name[1].given[1] .. " " .. o.gp.name[1].family) }
  end
  for k, v in pairs(o.extra or {}) do
    p[k] = v
  end
  return add(p)
end

-- Two family members sharing one phone, stored in two different formats:
-- a phone search must find both whichever format the caller uses.
local jane = patient {
  id = "p-1001", given = { "Jane" }, family = "Doe", gender = "female",
  birth = "1970-03-01", phones = { "(555) 010-0199" }, mrn = "MRN-0001001", gp = alice,
  extra = {
    address = { { line = { "1 Example Street" }, city = "Springfield", state = "ZZ", postalCode = "00001" } },
  },
}
local john = patient {
  id = "p-1002", given = { "John" }, family = "Doe", gender = "male",
  birth = "1968-11-12", phones = { "+1 555 010 0199" }, mrn = "MRN-0001002", gp = alice,
}
-- A patient whose phone is unique to them.
local ursula = patient {
  id = "p-1003", given = { "Ursula", "Q" }, family = "Unique", gender = "female",
  birth = "1985-07-19", phones = { "555-010-0123" }, mrn = "MRN-0001003", gp = bob,
}
-- JSON nulls where a careless client would crash: gender, a telecom value,
-- maritalStatus. (FHIR forbids nulls; real-world feeds still send them.)
local nullable = patient {
  id = "p-1004", given = { "Pat" }, family = "Nullfield", gender = NULL,
  birth = "1990-01-01", phones = { "555-010-0150" }, mrn = "MRN-0001004",
  extra = { maritalStatus = NULL },
}
table.insert(nullable.telecom, { system = "email", value = NULL })
-- Several names, no phone, no MRN (only a non-MR identifier).
local robert = patient {
  id = "p-1005", given = { "Robert", "James" }, family = "Smith", gender = "male",
  birth = "1955-12-31", gp = bob,
  extra = {
    identifier = { { system = "urn:example:insurance-member", value = "MEMBER-77" } },
  },
}
table.insert(robert.name, { use = "nickname", given = { "Bob" } })
phi("Bob", "MEMBER-77")

-- 60 patients with family "Paging" and no phone/MRN: enough for three
-- default pages of 20 and two pages at the _count maximum of 50.
local PAGING_COUNT = 60
for i = 1, PAGING_COUNT do
  patient {
    id = string.format("p-2%03d", i),
    given = { string.format("Test%02d", i) },
    family = "Paging",
    gender = (i % 2 == 0) and "female" or "male",
    birth = string.format("2000-01-%02d", (i - 1) % 28 + 1),
  }
end

------------------------------------------------------------ clinical records
local function med(id, pat, status, text, dosage, authored)
  return add {
    resourceType = "MedicationRequest",
    id = id,
    status = status,
    intent = "order",
    medicationCodeableConcept = { text = text },
    subject = ref("Patient", pat.id),
    requester = ref("Practitioner", alice.id),
    authoredOn = authored,
    dosageInstruction = { { text = dosage } },
  }
end

med("mr-1", jane, "active", "Lisinopril 10 mg tablet",
  "Take 1 tablet by mouth once daily", "2024-02-01")
med("mr-2", jane, "stopped", "Atorvastatin 20 mg tablet",
  "Take 1 tablet by mouth at bedtime", "2023-03-15")
med("mr-3", john, "active", "Metformin 500 mg tablet",
  "Take 1 tablet by mouth twice daily with meals", "2024-04-20")
med("mr-4", ursula, "active", "Albuterol 90 mcg/actuation inhaler",
  "Inhale 2 puffs every 4 to 6 hours as needed", "2024-05-05")

local function allergy(id, pat, substance, reaction)
  return add {
    resourceType = "AllergyIntolerance",
    id = id,
    clinicalStatus = { coding = { {
      system = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
      code = "active",
    } } },
    code = { text = substance },
    patient = ref("Patient", pat.id),
    reaction = { { manifestation = { { text = reaction } } } },
  }
end

allergy("ai-1", jane, "Penicillin", "Hives")
allergy("ai-2", ursula, "Peanut", "Anaphylaxis")

local function coverage(id, pat, subscriber_id)
  phi(subscriber_id)
  return add {
    resourceType = "Coverage",
    id = id,
    status = "active",
    subscriberId = subscriber_id,
    beneficiary = ref("Patient", pat.id),
    payor = { { display = "Example Health Plan (TEST)" } },
    period = { start = "2024-01-01" },
  }
end

coverage("cov-1", jane, "SUB-0001001")
coverage("cov-2", john, "SUB-0001002")

local function encounter(id, pat, start, finish)
  return add {
    resourceType = "Encounter",
    id = id,
    status = "finished",
    class = {
      system = "http://terminology.hl7.org/CodeSystem/v3-ActCode",
      code = "AMB", display = "ambulatory",
    },
    subject = ref("Patient", pat.id),
    participant = { { individual = ref("Practitioner", alice.id) } },
    period = { start = start, ["end"] = finish },
  }
end

encounter("enc-1", jane, "2024-01-15T09:00:00Z", "2024-01-15T09:30:00Z")
encounter("enc-2", jane, "2024-06-02T14:00:00Z", "2024-06-02T14:20:00Z")
encounter("enc-3", john, "2023-12-01T10:00:00Z", "2023-12-01T10:45:00Z")

local function condition(id, pat, text)
  return add {
    resourceType = "Condition",
    id = id,
    clinicalStatus = { coding = { {
      system = "http://terminology.hl7.org/CodeSystem/condition-clinical",
      code = "active",
    } } },
    code = { text = text },
    subject = ref("Patient", pat.id),
  }
end

condition("cond-1", jane, "Essential hypertension")
condition("cond-2", john, "Type 2 diabetes mellitus")

local function observation(id, pat, text, value, unit, date)
  return add {
    resourceType = "Observation",
    id = id,
    status = "final",
    code = { text = text },
    subject = ref("Patient", pat.id),
    effectiveDateTime = date,
    valueQuantity = { value = value, unit = unit },
  }
end

observation("obs-1", jane, "Systolic blood pressure", 128, "mm[Hg]", "2024-06-02T14:05:00Z")
observation("obs-2", john, "Hemoglobin A1c", 6.9, "%", "2023-12-01T10:30:00Z")

-- Types every practice serves (also the set of types scopes may name).
M.types = {
  "Patient", "Practitioner", "MedicationRequest", "AllergyIntolerance",
  "Coverage", "Encounter", "Observation", "Condition",
}
for _, t in ipairs(M.types) do
  M.resources[t] = M.resources[t] or {}
  M.ordered[t] = M.ordered[t] or {}
end

M.fixtures = {
  jane = jane.id,
  john = john.id,
  unique_phone_patient = ursula.id,
  null_gender_patient = nullable.id,
  multi_name_patient = robert.id,
  practitioner = alice.id,
  shared_phone = "(555) 010-0199",         -- Jane's format
  shared_phone_alt = "+1 555 010 0199",    -- John's format
  shared_phone_digits = "5550100199",
  unique_phone = "555-010-0123",
  paging_family = "Paging",
  paging_count = PAGING_COUNT,
}

return M
