-- Caller-ID normalisation and phone matching.
--
-- FreeSWITCH hands scripts caller IDs in many shapes ("+15550100199",
-- "15550100199", "5550100199", "sip:+15550100199@host;user=phone",
-- "tel:+1-555-010-0199", "\"Jane\" <sip:...>"), and practices store phone
-- numbers in whatever format the front desk typed.  Everything is reduced
-- to E.164 so that both sides compare equal.  North American numbers get
-- the most help (10 digits, or 11 starting with 1, mean +1); other countries
-- are recognised only with a leading "+" because a bare digit string is
-- ambiguous without knowing the caller's country.
local type = type
local str_byte, str_find, str_gsub, str_match, str_sub, str_lower =
  string.byte, string.find, string.gsub, string.match, string.sub, string.lower
local tonumber, string_char = tonumber, string.char

local _M = {}

local function unescape(s)
  return (str_gsub(s, "%%(%x%x)", function(h) return string_char(tonumber(h, 16)) end))
end

-- NANP area codes never start with 0 or 1 (the exchange may, in the
-- fictional 555-01xx block, so it is not checked).
local function nanp_ok(ten)
  local first = str_byte(ten, 1)
  return first and first >= 50 and first <= 57   -- '2'..'9'
end

-- Returns "+<digits>" or nil when s is not a usable phone number
-- (withheld caller ID, "anonymous", a SIP user name, too few digits...).
function _M.normalize(s)
  if type(s) ~= "string" or #s > 256 then
    return nil
  end
  -- Display-name form: take the URI between angle brackets.
  s = str_match(s, "<([^>]*)>") or s
  s = str_match(s, "^%s*(.-)%s*$")
  local scheme, rest = str_match(s, "^(%a[%w+.-]*):(.*)$")
  if scheme then
    scheme = str_lower(scheme)
    if scheme == "sip" or scheme == "sips" then
      rest = str_match(rest, "^([^@]*)")     -- the user part
    elseif scheme ~= "tel" then
      return nil
    end
    s = unescape(rest)                       -- "%2B1555..." in SIP URIs
  end
  s = str_gsub(s, ";.*$", "")                -- ";user=phone", ";ext=12"
  s = str_match(s, "^%s*(.-)%s*$")
  local plus = str_sub(s, 1, 1) == "+"
  if plus then
    s = str_sub(s, 2)
  end
  -- Only digits and visual separators: letters ("1-800-FLOWERS",
  -- "anonymous") or a second "+" mean this is not a number we can match.
  if s == "" or str_find(s, "[^%d%s%(%)%-%./]") then
    return nil
  end
  local digits = str_gsub(s, "%D", "")
  local n = #digits
  if str_sub(digits, 1, 1) == "1" and n == 11 then
    return nanp_ok(str_sub(digits, 2)) and "+" .. digits or nil
  elseif not plus and n == 10 then
    return nanp_ok(digits) and "+1" .. digits or nil
  elseif plus and n >= 8 and n <= 15 and str_sub(digits, 1, 1) ~= "0"
      and str_sub(digits, 1, 1) ~= "1" then
    return "+" .. digits
  end
  return nil
end

-- Digits that identify the line inside its country: the 10 NANP digits for
-- +1 numbers, all digits otherwise.
function _M.national(e164)
  if str_sub(e164, 1, 2) == "+1" and #e164 == 12 then
    return str_sub(e164, 3)
  end
  return str_sub(e164, 2)
end

-- The spellings to try against a server's `phone` token search, most
-- likely first.  eCW's matching rules for this token are not published, so
-- the forms a front desk commonly types follow the canonical ones.
function _M.search_forms(e164)
  if str_sub(e164, 1, 2) == "+1" and #e164 == 12 then
    local d = str_sub(e164, 3)
    local a, b, c = str_sub(d, 1, 3), str_sub(d, 4, 6), str_sub(d, 7, 10)
    return { e164, d, "(" .. a .. ") " .. b .. "-" .. c, a .. "-" .. b .. "-" .. c }
  end
  return { e164, str_sub(e164, 2) }
end

-- Does a stored phone value denote the caller's number?  Stored values
-- that do not normalise (local formats of other countries) fall back to a
-- digits comparison with the national number.
function _M.matches(stored, e164)
  if type(stored) ~= "string" then
    return false
  end
  -- Front desks type extensions too: "555-010-0199 ext. 12", "x12".
  stored = str_gsub(stored, "%s*[eE][xX][tT]%.?%s*%d+%s*$", "")
  stored = str_gsub(stored, "%s*[xX#]%s*%d+%s*$", "")
  local s = _M.normalize(stored)
  if s then
    return s == e164
  end
  local digits = str_gsub(stored, "%D", "")
  return digits ~= "" and digits == _M.national(e164)
end

return _M
