-- Patient resources reduced to what a voice agent uses, and the phrases
-- it says about them.
--
-- The shaped table is small and flat (p.name, p.birthdate, p.phone...) so
-- IVR code never walks FHIR structures; the full resource stays in
-- p.resource for anything else.
local phone = require "ecw.phone"

local type, ipairs, tonumber = type, ipairs, tonumber
local str_match, str_format = string.match, string.format
local tbl_concat = table.concat

local _M = {}

local function str(v)
  return type(v) == "string" and v ~= "" and v or nil
end

local function list(v)
  return type(v) == "table" and v or {}
end

-- HumanName to pick: official, else usual, else the first one that is not
-- a nickname/old/maiden name, else the first.
local NAME_RANK = { official = 1, usual = 2 }
local NAME_AVOID = { nickname = true, old = true, maiden = true, anonymous = true }

function _M.pick_name(names)
  local best, rank
  for _, n in ipairs(list(names)) do
    if type(n) == "table" then
      local r = NAME_RANK[n.use] or (NAME_AVOID[n.use] and 9 or 5)
      if not rank or r < rank then
        best, rank = n, r
      end
    end
  end
  return best
end

-- "Jane Doe": first given name and family name, as a person says it;
-- HumanName.text when the parts are missing.
function _M.speakable(n, with_prefix)
  if type(n) ~= "table" then
    return nil
  end
  local given, family = str(list(n.given)[1]), str(n.family)
  if not given and not family then
    return str(n.text)
  end
  local parts = {}
  if with_prefix and str(list(n.prefix)[1]) then
    parts[#parts + 1] = list(n.prefix)[1]
  end
  parts[#parts + 1] = given
  parts[#parts + 1] = family
  return tbl_concat(parts, " ")
end

-- Phone to report: mobile, then home, then any other use; E.164 when it
-- normalises, the stored text otherwise.
local PHONE_RANK = { mobile = 1, home = 2 }

local function pick_phone(telecom)
  local best, rank
  for _, t in ipairs(list(telecom)) do
    if type(t) == "table" and t.system == "phone" and str(t.value) then
      local r = PHONE_RANK[t.use] or 3
      if t.period and type(t.period) == "table" and str(t.period["end"]) then
        r = r + 10                    -- a number that was retired
      end
      if not rank or r < rank then
        best, rank = t.value, r
      end
    end
  end
  return best and (phone.normalize(best) or best)
end

local function identifier_type(idf)
  local t = type(idf.type) == "table" and idf.type
  if not t then
    return nil
  end
  for _, c in ipairs(list(t.coding)) do
    if type(c) == "table" and str(c.code) then
      return c.code
    end
  end
  return str(t.text)
end

-- resource (nulls already removed) -> shaped patient.
function _M.shape(resource)
  local n = _M.pick_name(resource.name)
  local given_names = {}
  for _, g in ipairs(list(n and n.given)) do
    if str(g) then
      given_names[#given_names + 1] = g
    end
  end
  local identifiers, mrn = {}, nil
  for _, idf in ipairs(list(resource.identifier)) do
    if type(idf) == "table" and str(idf.value) then
      local t = identifier_type(idf)
      identifiers[#identifiers + 1] = { system = str(idf.system), value = idf.value, type = t }
      if t == "MR" and not mrn then
        mrn = idf.value
      end
    end
  end
  return {
    id = str(resource.id),
    family = n and str(n.family),
    given = given_names[1],
    given_names = given_names,
    name = _M.speakable(n),
    birthdate = str(resource.birthDate),
    gender = str(resource.gender),
    phone = pick_phone(resource.telecom),
    mrn = mrn,
    identifiers = identifiers,
    resource = resource,
  }
end

-- Does the resource carry the caller's number (E.164)?
function _M.has_phone(resource, e164)
  for _, t in ipairs(list(resource.telecom)) do
    if type(t) == "table" and t.system == "phone" and phone.matches(t.value, e164) then
      return true
    end
  end
  return false
end

------------------------------------------------------------------ speech
local MONTHS = {
  "January", "February", "March", "April", "May", "June", "July",
  "August", "September", "October", "November", "December",
}

local function ordinal(d)
  local suffix = "th"
  if d % 100 < 11 or d % 100 > 13 then
    local last = d % 10
    suffix = (last == 1 and "st") or (last == 2 and "nd") or (last == 3 and "rd") or "th"
  end
  return d .. suffix
end
_M.ordinal = ordinal

-- "1970-03-01" (or a dateTime) -> "March 1st, 1970"; "1970-03" -> "March
-- 1970"; "1970" -> "1970"; nil for anything else.
function _M.say_date(s)
  if type(s) ~= "string" then
    return nil
  end
  local y, m, d = str_match(s, "^(%d%d%d%d)%-(%d%d)%-(%d%d)")
  if y then
    m, d = tonumber(m), tonumber(d)
    if MONTHS[m] and d >= 1 and d <= 31 then
      return str_format("%s %s, %s", MONTHS[m], ordinal(d), y)
    end
    return nil
  end
  y, m = str_match(s, "^(%d%d%d%d)%-(%d%d)$")
  if y then
    m = tonumber(m)
    return MONTHS[m] and MONTHS[m] .. " " .. y or nil
  end
  return str_match(s, "^(%d%d%d%d)$")
end

return _M
