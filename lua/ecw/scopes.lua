-- Which SMART scopes a call needs, and whether the scopes registered for
-- the app cover them.
--
-- Each call asks for exactly the scopes it needs (one token per scope set
-- is cached by the core), e.g. system/Patient.read.  When the app's
-- registered scopes are configured, a call outside them is refused locally:
-- eCW answers such token requests with invalid_grant, and every refused
-- request still counts against the practice's 250 calls/minute.
local type, ipairs, pairs = type, ipairs, pairs
local str_find, str_gmatch, str_match = string.find, string.gmatch, string.match
local tbl_concat, tbl_sort = table.concat, table.sort

local _M = {}

-- The scope one resource type needs for read and search.
function _M.for_type(rtype, style)
  if style == "v2" then
    return "system/" .. rtype .. ".rs"
  end
  return "system/" .. rtype .. ".read"
end

-- v1 permission words and their v2 meaning (SMART v2 "scopes for
-- requesting clinical data": .read => .rs, .write => .cud, .* => .cruds).
local V1 = {
  read = { r = true, s = true },
  write = { c = true, u = true, d = true },
  ["*"] = { c = true, r = true, u = true, d = true, s = true },
}

-- "patient|user|system/<Type|*>.<perm>[?query]" -> table, or nil for a
-- scope of another kind (openid, launch, a vendor scope).
local function parse(scope)
  local ctx, rtype, perm, q = str_match(scope, "^(%a+)/([%a*]+)%.([%a*]+)(.*)$")
  if not ctx or (q ~= "" and q:sub(1, 1) ~= "?") then
    return nil
  end
  local perms = V1[perm]
  if not perms then
    -- v2: a non-empty subset of c r u d s, in that order.
    if not str_match(perm, "^c?r?u?d?s?$") or perm == "" then
      return nil
    end
    perms = {}
    for ch in str_gmatch(perm, ".") do
      perms[ch] = true
    end
  end
  return { context = ctx, type = rtype, perms = perms, query = q }
end
_M.parse = parse

local function covers_one(reg, need)
  if reg.context ~= need.context then
    return false
  end
  if reg.type ~= "*" and reg.type ~= need.type then
    return false
  end
  -- A scope restricted by a query (?category=...) grants only part of the
  -- type: it covers nothing broader than itself.
  if reg.query ~= "" and reg.query ~= need.query then
    return false
  end
  for p in pairs(need.perms) do
    if not reg.perms[p] then
      return false
    end
  end
  return true
end

-- Splits and validates a scopes option (array or space-separated string).
-- Returns the list, or nil and why.
function _M.list(v)
  local out, seen = {}, {}
  local function add(s)
    if not seen[s] then
      seen[s] = true
      out[#out + 1] = s
    end
  end
  if type(v) == "string" then
    for s in str_gmatch(v, "%S+") do
      add(s)
    end
  elseif type(v) == "table" then
    for i, s in ipairs(v) do
      if type(s) ~= "string" or s == "" or str_find(s, "%s") then
        return nil, "entry " .. i .. " must be a scope string without spaces"
      end
      add(s)
    end
  else
    return nil, "must be a string or an array of strings"
  end
  if #out == 0 then
    return nil, "must name at least one scope"
  end
  tbl_sort(out)
  return out
end

-- A registered set, prepared for covers().
function _M.registered(list)
  local set = { exact = {}, parsed = {} }
  for _, s in ipairs(list) do
    set.exact[s] = true
    local p = parse(s)
    if p then
      set.parsed[#set.parsed + 1] = p
    end
  end
  return set
end

-- nil when every needed scope is covered, else the first one that is not.
function _M.uncovered(set, needed)
  for _, s in ipairs(needed) do
    local ok = set.exact[s]
    if not ok then
      local need = parse(s)
      if need then
        for _, reg in ipairs(set.parsed) do
          if covers_one(reg, need) then
            ok = true
            break
          end
        end
      end
    end
    if not ok then
      return s
    end
  end
  return nil
end

function _M.join(list)
  return tbl_concat(list, " ")
end

return _M
