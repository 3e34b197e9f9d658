-- Building request targets safely.
--
-- Everything a caller supplies ends up percent-encoded (only RFC 3986
-- unreserved characters pass through), so no value can add a parameter
-- ("&_id=x"), cut the query ("#"), climb the path ("../") or smuggle a
-- header (CR LF).  Ids and resource types are validated against FHIR's
-- grammar instead of being encoded: they form the path.
local type, tostring, tonumber, pairs, ipairs = type, tostring, tonumber, pairs, ipairs
local math_type = math.type
local str_byte, str_find, str_format, str_gsub, str_match, str_gmatch, str_sub =
  string.byte, string.find, string.format, string.gsub, string.match, string.gmatch, string.sub
local tbl_concat, tbl_sort = table.concat, table.sort

local _M = {}

-- Explicit ASCII classes: %w depends on the C locale of the host process.
function _M.encode(s)
  return (str_gsub(s, "[^A-Za-z0-9%-%._~]", function(c)
    return str_format("%%%02X", str_byte(c))
  end))
end

-- FHIR id: [A-Za-z0-9\-\.]{1,64}.  "." and ".." match the grammar but are
-- path segments, never ids.
function _M.valid_id(id)
  return type(id) == "string" and #id >= 1 and #id <= 64
    and not str_find(id, "[^A-Za-z0-9%-%.]") and id ~= "." and id ~= ".."
end

-- Resource type names are capitalised ASCII words ("Patient",
-- "MedicationRequest").
function _M.valid_type(t)
  return type(t) == "string" and #t <= 64 and str_match(t, "^[A-Z][A-Za-z]*$") ~= nil
end

-- Search parameter names: letters, digits, "_", "-", plus ":" modifiers
-- and "." chains ("name:exact", "subject.name").  Encoded anyway.
function _M.valid_param(name)
  return type(name) == "string" and #name <= 64
    and str_match(name, "^[A-Za-z_][A-Za-z0-9_%-%.:]*$") ~= nil
end

local function scalar(v)
  local t = type(v)
  if t == "string" then
    return v
  elseif t == "number" then
    return math_type(v) == "integer" and tostring(v) or str_format("%.17g", v)
  elseif t == "boolean" then
    return tostring(v)
  end
end

-- Checks a params table: { name = value | {value, ...} }.  Returns the
-- ordered list of {name, value} pairs (names sorted, so URLs are stable),
-- or nil and a message naming the offending key.
function _M.pairs_of(params)
  local names = {}
  for k in pairs(params) do
    if not _M.valid_param(k) then
      return nil, "bad search parameter name " .. (type(k) == "string"
        and str_format("%q", k) or "of type " .. type(k))
    end
    names[#names + 1] = k
  end
  tbl_sort(names)
  local list = {}
  for _, k in ipairs(names) do
    local v = params[k]
    if type(v) == "table" then
      -- Repeated parameter: AND semantics in FHIR.
      if #v == 0 then
        return nil, "search parameter '" .. k .. "' is an empty list"
      end
      for i = 1, #v do
        local s = scalar(v[i])
        if not s then
          return nil, "search parameter '" .. k .. "' must hold strings or numbers"
        end
        list[#list + 1] = { k, s }
      end
    else
      local s = scalar(v)
      if not s then
        return nil, "search parameter '" .. k .. "' must be a string, number or list"
      end
      list[#list + 1] = { k, s }
    end
  end
  return list
end

-- "Type?a=1&b=2" from a type and a list of {name, value} pairs.
function _M.search_target(rtype, list)
  local parts = {}
  for i, p in ipairs(list) do
    parts[i] = _M.encode(p[1]) .. "=" .. _M.encode(p[2])
  end
  if #parts == 0 then
    return rtype
  end
  return rtype .. "?" .. tbl_concat(parts, "&")
end

function _M.read_target(rtype, id)
  return rtype .. "/" .. id
end

-- scheme://host:port with the scheme and host lower-cased and the default
-- port made explicit, so "https://H/x" and "https://h:443/y" compare equal.
-- Returns nil for anything that is not an absolute http(s) URL.
function _M.origin(url)
  if type(url) ~= "string" then
    return nil
  end
  local scheme, authority = str_match(url, "^(%a[%w+.-]*)://([^/?#]*)")
  if not scheme then
    return nil
  end
  scheme = scheme:lower()
  local default = (scheme == "https" and "443") or (scheme == "http" and "80")
  if not default then
    return nil
  end
  authority = str_gsub(authority, "^.*@", "")       -- userinfo
  local host, port = str_match(authority, "^(%[[^%]]*%])(.*)$")
  if not host then
    host, port = str_match(authority, "^([^:]*)(.*)$")
  end
  if port == "" or port == ":" then
    port = default
  else
    port = str_match(port, "^:(%d+)$")
    if not port then
      return nil
    end
    port = tostring(tonumber(port))                   -- ":0443" == ":443"
  end
  if host == "" then
    return nil
  end
  return scheme .. "://" .. host:lower() .. ":" .. port
end

-- Does an absolute URL lie under the FHIR base: the base itself with a
-- query ("base?_getpages=..."), or a path below it, with no dot segment
-- and no encoded "/", "\\" or "." that a server could decode into one?
-- (Compare origins with _M.origin first: this looks at the path only.)
local function path_of(url)
  return str_match(url, "^%a[%w+.-]*://[^/?#]*(.*)$")
end

function _M.under_base(url, base)
  local p, b = type(url) == "string" and path_of(url), path_of(base)
  if not p or not b then
    return false
  end
  local path = str_match(p, "^([^?#]*)")
  if str_find(path, "\\", 1, true) or str_find(path, "%%2[fF]") or str_find(path, "%%5[cC]") then
    return false
  end
  local decoded = str_gsub(path, "%%2[eE]", ".")
  for seg in str_gmatch(decoded .. "/", "([^/]*)/") do
    if seg == "." or seg == ".." then
      return false
    end
  end
  if p == b then
    return true
  end
  local next_char = str_sub(p, #b + 1, #b + 1)
  return str_sub(p, 1, #b) == b and (next_char == "/" or next_char == "?")
end

return _M
