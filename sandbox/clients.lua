-- Registry of OAuth clients and their public keys.
--
-- A client may register several kids (key rotation tests); each kid carries
-- exactly one alg, and the key type must fit it: RS384 needs RSA, ES384 an
-- EC P-384 key. Anything else is refused at registration so a typo in a
-- test shows up there instead of as a puzzling 401 later.
local pkey = require "openssl.pkey"

local M = {}
M.__index = M

local P384_PARAMS = pkey.new { type = "EC", curve = "secp384r1" }
  :getParameters().group:toPEM()

local function key_kind(key)
  local t = key:type()
  if t == "rsaEncryption" then
    local n = key:getParameters().n
    return "RSA", #n:toBinary() * 8
  elseif t == "id-ecPublicKey" then
    local group = key:getParameters().group:toPEM()
    return "EC", group == P384_PARAMS and "P-384" or "other-curve"
  end
  return t
end

function M.new()
  return setmetatable({ by_id = {} }, M)
end

-- entry: { client_id, kid, alg, public_key_pem }. Returns true or nil, err.
function M:register(entry)
  if type(entry) ~= "table" then
    return nil, "client must be a JSON object"
  end
  for _, field in ipairs({ "client_id", "kid", "alg", "public_key_pem" }) do
    if type(entry[field]) ~= "string" or entry[field] == "" then
      return nil, "missing or non-string field " .. field
    end
  end
  local ok, key = pcall(pkey.new, entry.public_key_pem)
  if not ok or not key then
    return nil, "public_key_pem is not a PEM public key"
  end
  local kind, detail = key_kind(key)
  if entry.alg == "RS384" then
    if kind ~= "RSA" then
      return nil, "RS384 needs an RSA key"
    end
  elseif entry.alg == "ES384" then
    if kind ~= "EC" or detail ~= "P-384" then
      return nil, "ES384 needs an EC P-384 key"
    end
  else
    return nil, "alg must be RS384 or ES384"
  end
  local client = self.by_id[entry.client_id] or { client_id = entry.client_id, keys = {} }
  client.keys[entry.kid] = {
    alg = entry.alg,
    key = key,
    rsa_bits = kind == "RSA" and detail or nil,
  }
  self.by_id[entry.client_id] = client
  return true
end

-- Returns the key record { alg, key, rsa_bits } or nil, reason.
function M:find(client_id, kid)
  local client = self.by_id[client_id]
  if not client then
    return nil, "unknown client_id"
  end
  local k = client.keys[kid]
  if not k then
    return nil, "unknown kid for this client"
  end
  return k
end

-- Summary for the admin API (no key material beyond the alg).
function M:list()
  local out = {}
  for id, client in pairs(self.by_id) do
    local kids = {}
    for kid, k in pairs(client.keys) do
      kids[kid] = k.alg
    end
    out[id] = kids
  end
  return out
end

return M
