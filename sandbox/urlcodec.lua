-- Percent-decoding of query strings and application/x-www-form-urlencoded
-- bodies, plus the base64url encoding used for opaque access tokens.
local M = {}

-- Form/query decoding: "+" is a space, "%XX" a byte. A malformed escape
-- ("%G1", a trailing "%") is kept literally rather than rejected, like most
-- servers do; the token endpoint then fails on the garbled value anyway.
function M.unescape(s)
  s = s:gsub("+", " ")
  return (s:gsub("%%(%x%x)", function(hex)
    return string.char(tonumber(hex, 16))
  end))
end

-- Percent-encodes everything except RFC 3986 unreserved characters.
function M.escape(s)
  return (s:gsub("[^%w%-%._~]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end

-- Parses "a=1&b=2&a=3" into { a = {"1", "3"}, b = {"2"} } plus the ordered
-- list of { name, value } pairs (needed to rebuild paging links). Repeated
-- names are kept because FHIR gives them AND semantics.
function M.parse(query)
  local map, pairs_list = {}, {}
  if not query or query == "" then
    return map, pairs_list
  end
  for part in query:gmatch("[^&]+") do
    local raw_name, raw_value = part:match("^([^=]*)=(.*)$")
    if not raw_name then
      raw_name, raw_value = part, ""
    end
    local name, value = M.unescape(raw_name), M.unescape(raw_value)
    if name ~= "" then
      map[name] = map[name] or {}
      table.insert(map[name], value)
      table.insert(pairs_list, { name, value })
    end
  end
  return map, pairs_list
end

-- Inverse of parse() for an ordered list of { name, value } pairs.
function M.build(pairs_list)
  local parts = {}
  for _, p in ipairs(pairs_list) do
    parts[#parts + 1] = M.escape(p[1]) .. "=" .. M.escape(p[2])
  end
  return table.concat(parts, "&")
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

-- Unpadded base64url (RFC 4648 section 5).
function M.base64url_encode(bytes)
  local out = {}
  for i = 1, #bytes, 3 do
    local a, b, c = bytes:byte(i, i + 2)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    local chars = 2 + (b and 1 or 0) + (c and 1 or 0)
    for k = 1, chars do
      local idx = (n >> (18 - 6 * (k - 1))) & 63
      out[#out + 1] = B64:sub(idx + 1, idx + 1)
    end
  end
  return table.concat(out)
end

return M
