-- Runtime behaviour switches, changed by tests through POST /config.
--
-- A POST merges its keys into the current settings; a JSON null resets a
-- key to its start-up default. Unknown keys and wrong types are refused so
-- a misspelt switch fails the test that sets it instead of being ignored.
local json = require "sandbox.json"

local M = {}
M.__index = M

-- key -> expected Lua type
local SCHEMA = {
  token_lifetime = "number",          -- seconds, may be fractional
  grant_scope = "string",             -- scope granted whatever was asked
  token_type = "string",              -- e.g. "bearer" instead of "Bearer"
  relative_token_endpoint = "boolean",-- discovery: "/oauth/oauth2/token"
  omit_token_endpoint = "boolean",    -- discovery: no token_endpoint at all
  deny_scope = "string",              -- this scope gets invalid_scope
  next_link_origin = "string",        -- replaces scheme://host:port of next links
  clock_offset = "number",            -- seconds the token endpoint's clock runs ahead
}

function M.new(defaults)
  local self = setmetatable({ defaults = defaults, values = {} }, M)
  for k, v in pairs(defaults) do
    self.values[k] = v
  end
  return self
end

function M:get(key)
  return self.values[key]
end

-- Validates all of t before applying any of it. Returns true or nil, err.
function M:merge(t)
  if type(t) ~= "table" then
    return nil, "config must be a JSON object"
  end
  for k, v in pairs(t) do
    local expected = SCHEMA[k]
    if not expected then
      return nil, "unknown config key " .. tostring(k)
    end
    if v ~= json.null and type(v) ~= expected then
      return nil, k .. " must be a " .. expected .. " or null"
    end
    if k == "token_lifetime" and v ~= json.null and v <= 0 then
      return nil, "token_lifetime must be > 0"
    end
  end
  for k, v in pairs(t) do
    if v == json.null then
      self.values[k] = self.defaults[k]
    else
      self.values[k] = v
    end
  end
  return true
end

function M:snapshot()
  local out = {}
  for k in pairs(SCHEMA) do
    local v = self.values[k]
    if v == nil then v = json.null end
    out[k] = v
  end
  return out
end

return M
