-- Speech helpers: short phrases for TTS built from shaped records.
-- They never make requests; pass what the lookup calls returned.
local patient = require "ecw.patient"

local type, ipairs = type, ipairs
local tbl_concat = table.concat

local _M = {}

-- Accepts a shaped patient (from ecw.patient) or a Patient resource.
local function shaped(p)
  if type(p) ~= "table" then
    return nil
  end
  if p.resourceType == "Patient" then
    return patient.shape(p)
  end
  return p
end

-- "a", "a and b", "a, b and c"
local function join(items)
  local n = #items
  if n <= 1 then
    return items[1] or ""
  end
  return tbl_concat(items, ", ", 1, n - 1) .. " and " .. items[n]
end
_M.join = join

local function names(list)
  local out = {}
  for _, it in ipairs(type(list) == "table" and list or {}) do
    if type(it) == "table" and type(it.name) == "string" and it.name ~= "" then
      out[#out + 1] = it.name
    end
  end
  return out
end

-- "Jane Doe"
function _M.name(p)
  p = shaped(p)
  return p and p.name or nil
end

-- "March 1st, 1970"
function _M.birthdate(p)
  p = shaped(p)
  return p and patient.say_date(p.birthdate) or nil
end

-- Any FHIR date or dateTime: "June 2nd, 2024".
_M.date = patient.say_date

-- "Jane Doe, born March 1st, 1970." followed by what `extra` holds:
-- { practitioner = ecw.practitioner(...), medications = ecw.medications(...),
--   allergies = ..., coverage = ..., encounters = ... }.  A list that is
-- present but empty is said as such ("No active medications on file.");
-- a missing one is not mentioned.
function _M.summary(p, extra)
  p = shaped(p)
  if not p then
    return nil
  end
  extra = type(extra) == "table" and extra or {}
  local s = {}
  local head = p.name or "This patient"
  local born = patient.say_date(p.birthdate)
  s[#s + 1] = born and (head .. ", born " .. born .. ".") or (head .. ".")
  local pr = extra.practitioner
  if type(pr) == "table" and pr.name then
    s[#s + 1] = "Primary care provider: " .. pr.name .. "."
  end
  if extra.medications then
    local m = names(extra.medications)
    s[#s + 1] = #m > 0 and ("Active medications: " .. join(m) .. ".")
      or "No active medications on file."
  end
  if extra.allergies then
    local a = names(extra.allergies)
    s[#s + 1] = #a > 0 and ("Allergies: " .. join(a) .. ".") or "No known allergies on file."
  end
  if extra.coverage then
    local c = names(extra.coverage)
    s[#s + 1] = #c > 0 and ("Insurance: " .. join(c) .. ".") or "No insurance on file."
  end
  if extra.encounters then
    local last = type(extra.encounters) == "table" and extra.encounters[1]
    local when = type(last) == "table" and patient.say_date(last.date)
    if when then
      s[#s + 1] = "Last visit: " .. when .. "."
    end
  end
  return tbl_concat(s, " ")
end

return _M
