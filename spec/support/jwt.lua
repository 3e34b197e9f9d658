-- Test-side JWS signer for SMART client assertions (Lua 5.3/5.4, luaossl).
--
-- Used by specs that talk to the sandbox directly, without the ecw module.
-- It deliberately shares nothing with sandbox/jwt_verify.lua or the module.
--
--   local jwt = require "spec.support.jwt"
--   local token = jwt.assertion { key = k, kid = "k1", client_id = "c1", aud = sb.token_url }
local pkey = require "openssl.pkey"
local digest = require "openssl.digest"
local rand = require "openssl.rand"
local cjson = require "cjson"

local M = {}

local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

function M.b64url(bytes)
  local out = {}
  for i = 1, #bytes, 3 do
    local a, b, c = bytes:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chars = 2 + (b and 1 or 0) + (c and 1 or 0)
    for k = 1, chars do
      local idx = math.floor(n / 64 ^ (4 - k)) % 64
      out[#out + 1] = ALPHABET:sub(idx + 1, idx + 1)
    end
  end
  return table.concat(out)
end

local function hex(bytes)
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

function M.random_jti()
  return hex(rand.bytes(16))
end

-- DER ECDSA-Sig-Value -> fixed-width R || S (JWS form), size bytes each.
function M.der_to_raw(der, size)
  local pos = 1
  local function byte()
    local b = der:byte(pos)
    pos = pos + 1
    return b
  end
  local function length()
    local l = byte()
    if l >= 0x80 then
      local n = l - 0x80
      l = 0
      for _ = 1, n do
        l = l * 256 + byte()
      end
    end
    return l
  end
  assert(byte() == 0x30, "not a DER SEQUENCE")
  length()
  local parts = {}
  for i = 1, 2 do
    assert(byte() == 0x02, "not a DER INTEGER")
    local len = length()
    local v = der:sub(pos, pos + len - 1)
    pos = pos + len
    v = v:gsub("^%z+", "")
    assert(#v <= size, "integer too large")
    parts[i] = string.rep("\0", size - #v) .. v
  end
  return parts[1] .. parts[2]
end

local function load_key(key)
  if type(key) == "table" and key.path then
    local f = assert(io.open(key.path, "rb"))
    local pem = f:read("*a")
    f:close()
    return pkey.new(pem), key.alg
  end
  return key
end

-- Signs a JWS. alg: "RS384" | "ES384" (ES sizes from the curve: 48 bytes
-- for P-384). opts.der = true keeps the DER ECDSA signature (negative tests).
function M.sign(header, claims, key, opts)
  opts = opts or {}
  local private = load_key(key)
  local input = M.b64url(cjson.encode(header)) .. "." .. M.b64url(cjson.encode(claims))
  local sig = private:sign(digest.new("sha384"):update(input))
  if header.alg:sub(1, 2) == "ES" and not opts.der then
    sig = M.der_to_raw(sig, opts.ecdsa_size or 48)
  end
  return input .. "." .. M.b64url(sig)
end

-- Builds and signs a standard SMART client assertion.
-- p: key (keygen() result or luaossl pkey), kid, client_id, aud,
--    alg (default key.alg), exp_in (default 240 s), jti (default random),
--    header (extra/override header fields), claims (extra/override claims;
--    a value of false removes the claim), der (see sign).
function M.assertion(p)
  local now = os.time()
  local alg = p.alg or (type(p.key) == "table" and p.key.alg)
  local header = { alg = alg, typ = "JWT", kid = p.kid }
  for k, v in pairs(p.header or {}) do
    header[k] = v or nil
  end
  local claims = {
    iss = p.client_id, sub = p.client_id, aud = p.aud,
    exp = now + (p.exp_in or 240), iat = now, jti = p.jti or M.random_jti(),
  }
  for k, v in pairs(p.claims or {}) do
    claims[k] = v or nil
  end
  return M.sign(header, claims, p.key, { der = p.der })
end

return M
