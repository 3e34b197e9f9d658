-- FHIR search parameter matching over the in-memory data set.
--
-- Semantics (a pragmatic subset of FHIR R4 search):
--   * each supported parameter may repeat (AND) and hold comma-separated
--     alternatives (OR);
--   * unknown parameters and modifiers are ignored, as lenient servers do;
--   * string params (name/family/given): case-insensitive prefix match;
--   * token params (identifier/gender/status/phone): exact, with the
--     phone digit normalisation described at phone_matches().
local M = {}

-- Parameters that control the result page, not the match.
M.CONTROL = { _count = true, page = true }

local function lower_prefix(value, prefix)
  return type(value) == "string" and value:lower():sub(1, #prefix) == prefix:lower()
end

local function any(list, pred)
  for _, v in ipairs(type(list) == "table" and list or {}) do
    if pred(v) then
      return true
    end
  end
  return false
end

local function name_parts(resource, which)
  local parts = {}
  for _, n in ipairs(type(resource.name) == "table" and resource.name or {}) do
    if (which == "family" or which == "any") and type(n.family) == "string" then
      parts[#parts + 1] = n.family
    end
    if which == "given" or which == "any" then
      for _, g in ipairs(type(n.given) == "table" and n.given or {}) do
        parts[#parts + 1] = g
      end
    end
    if which == "any" then
      for _, field in ipairs({ "prefix", "suffix" }) do
        for _, x in ipairs(type(n[field]) == "table" and n[field] or {}) do
          parts[#parts + 1] = x
        end
      end
      if type(n.text) == "string" then
        parts[#parts + 1] = n.text
      end
    end
  end
  return parts
end

local function name_matcher(which)
  return function(resource, value)
    return any(name_parts(resource, which), function(part)
      return lower_prefix(part, value)
    end)
  end
end

-- National digits of a phone number: non-digits stripped, and the NANP
-- country code dropped from an 11-digit "1..." number, so that
-- "(555) 010-0199", "+1 555 010 0199" and "5550100199" are all equal.
local function national_digits(s)
  local d = s:gsub("%D", "")
  if #d == 11 and d:sub(1, 1) == "1" then
    d = d:sub(2)
  end
  return d
end
M.national_digits = national_digits

local function phone_matches(resource, value)
  local want = national_digits(value)
  return any(resource.telecom, function(t)
    if t.system ~= "phone" or type(t.value) ~= "string" then
      return false
    end
    return t.value == value or (want ~= "" and national_digits(t.value) == want)
  end)
end

-- identifier token: "system|value", "|value" (no system), "system|"
-- (any value in system) or bare "value" (any system).
local function identifier_matches(resource, value)
  local system, code = value:match("^(.-)|(.*)$")
  return any(resource.identifier, function(id)
    if not system then
      return id.value == value
    end
    local sys_ok
    if system == "" then
      sys_ok = id.system == nil
    else
      sys_ok = id.system == system
    end
    return sys_ok and (code == "" or id.value == code)
  end)
end

local function id_matches(resource, value)
  return resource.id == value
end

-- "patient" reference param: "p-1001" or "Patient/p-1001" against the
-- resource's subject/patient/beneficiary reference.
local function patient_matcher(field)
  return function(resource, value)
    local id = value:match("^Patient/(.+)$") or value
    local r = resource[field]
    return type(r) == "table" and r.reference == "Patient/" .. id
  end
end

local function field_equals(field)
  return function(resource, value)
    return resource[field] == value
  end
end

local function birthdate_matches(resource, value)
  -- "eq" is the only date prefix we honour; others never match.
  return resource.birthDate == (value:match("^eq(.+)$") or value)
end

local PATIENT_PARAMS = {
  _id = id_matches,
  identifier = identifier_matches,
  name = name_matcher("any"),
  family = name_matcher("family"),
  given = name_matcher("given"),
  birthdate = birthdate_matches,
  gender = field_equals("gender"),
  phone = phone_matches,
}

local BY_TYPE = {
  Patient = PATIENT_PARAMS,
  Practitioner = {
    _id = id_matches, identifier = identifier_matches,
    name = name_matcher("any"), family = name_matcher("family"), given = name_matcher("given"),
  },
  MedicationRequest = { _id = id_matches, patient = patient_matcher("subject"), status = field_equals("status") },
  AllergyIntolerance = { _id = id_matches, patient = patient_matcher("patient") },
  Coverage = { _id = id_matches, patient = patient_matcher("beneficiary") },
  Encounter = { _id = id_matches, patient = patient_matcher("subject") },
  Condition = { _id = id_matches, patient = patient_matcher("subject") },
  Observation = { _id = id_matches, patient = patient_matcher("subject") },
}

local function split_commas(s)
  local alternatives = {}
  for alt in (s .. ","):gmatch("([^,]*),") do
    alternatives[#alternatives + 1] = alt
  end
  return alternatives
end

-- params: name -> list of raw values (urlcodec.parse). Returns the matching
-- resources from `ordered`, preserving order.
function M.run(rtype, ordered, params)
  local matchers = BY_TYPE[rtype] or { _id = id_matches }
  local criteria = {}
  for name, values in pairs(params) do
    local matcher = matchers[name]
    if matcher then
      for _, v in ipairs(values) do
        criteria[#criteria + 1] = { matcher, split_commas(v) }
      end
    end
  end
  local out = {}
  for _, resource in ipairs(ordered) do
    local ok = true
    for _, c in ipairs(criteria) do
      if not any(c[2], function(alt) return c[1](resource, alt) end) then
        ok = false
        break
      end
    end
    if ok then
      out[#out + 1] = resource
    end
  end
  return out
end

return M
