-- SMART system scopes the sandbox understands, and the permission check
-- the FHIR endpoints apply to a token's granted scopes.
--
--   v1:  system/<Type>.read             read + search
--   v2:  system/<Type>.rs               read + search
--        system/<Type>.r / .s           read only / search only
--   <Type> may be "*" for every served type.
local data = require "sandbox.data"

local M = {}

local KNOWN_TYPE = {}
for _, t in ipairs(data.types) do
  KNOWN_TYPE[t] = true
end

-- permission suffix -> interactions it grants
local GRANTS = {
  read = { read = true, search = true },
  rs = { read = true, search = true },
  r = { read = true },
  s = { search = true },
}

local function split(scope_string)
  local list = {}
  for s in scope_string:gmatch("%S+") do
    list[#list + 1] = s
  end
  return list
end
M.split = split

-- Returns type, permission for a well-formed known scope, or nil.
local function parse_one(scope)
  local rtype, perm = scope:match("^system/([%w*]+)%.(%a+)$")
  if not rtype or not GRANTS[perm] then
    return nil
  end
  if rtype ~= "*" and not KNOWN_TYPE[rtype] then
    return nil
  end
  return rtype, perm
end

-- Validates a requested scope string. deny (optional) is one scope the
-- admin API told us to refuse. Returns the list of scopes, or nil and the
-- first offending scope.
function M.validate(scope_string, deny)
  local list = split(scope_string)
  if #list == 0 then
    return nil, ""
  end
  for _, s in ipairs(list) do
    if s == deny or not parse_one(s) then
      return nil, s
    end
  end
  return list
end

-- Does a granted scope list allow `interaction` ("read"/"search") on rtype?
-- Unknown entries in a configured grant_scope simply grant nothing.
function M.allows(granted, rtype, interaction)
  for _, s in ipairs(granted) do
    local t, perm = parse_one(s)
    if t and (t == rtype or t == "*") and GRANTS[perm][interaction] then
      return true
    end
  end
  return false
end

-- Everything we accept, for scopes_supported in the discovery document.
function M.supported()
  local list = {}
  for _, t in ipairs(data.types) do
    for _, perm in ipairs({ "read", "rs", "r", "s" }) do
      list[#list + 1] = "system/" .. t .. "." .. perm
    end
  end
  for _, perm in ipairs({ "read", "rs", "r", "s" }) do
    list[#list + 1] = "system/*." .. perm
  end
  return list
end

return M
