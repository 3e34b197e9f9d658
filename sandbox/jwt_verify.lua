-- Independent verification of compact JWS client assertions.
--
-- Deliberately shares no code with the ecw module: if the module's JWS
-- encoder and this verifier came from the same source, a shared bug (say, in
-- base64url or in the ECDSA signature layout) would cancel itself out and
-- the tests would pass against a real server that rejects us.
--
-- Only signature and structure are checked here; claim policy (iss, aud,
-- exp, jti...) lives in auth.lua.
local digest = require "openssl.digest"
local cjson = require "cjson"

local M = {}

local ES384_SIG_LEN = 96 -- JWS ES384 signature: R || S, 48 bytes each

-- Strict base64url decoder (RFC 7515 section 2: no padding, no whitespace,
-- URL-safe alphabet only). Returns nil on any deviation.
local DECODE = {}
do
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
  for i = 1, #alphabet do
    DECODE[alphabet:byte(i)] = i - 1
  end
end

function M.base64url_decode(s)
  if type(s) ~= "string" or #s % 4 == 1 then
    return nil
  end
  local out = {}
  local acc, bits = 0, 0
  for i = 1, #s do
    local v = DECODE[s:byte(i)]
    if not v then
      return nil
    end
    acc = (acc << 6) | v
    bits = bits + 6
    if bits >= 8 then
      bits = bits - 8
      out[#out + 1] = string.char((acc >> bits) & 0xFF)
    end
    acc = acc & ((1 << bits) - 1)
  end
  -- Leftover bits must be zero, otherwise two different strings would
  -- decode to the same bytes (non-canonical encoding).
  if acc ~= 0 then
    return nil
  end
  return table.concat(out)
end

-- DER length octets (short form below 128, long form above).
local function der_length(n)
  if n < 0x80 then
    return string.char(n)
  end
  local bytes = {}
  while n > 0 do
    table.insert(bytes, 1, string.char(n & 0xFF))
    n = n >> 8
  end
  return string.char(0x80 | #bytes) .. table.concat(bytes)
end

-- An unsigned big-endian integer as a DER INTEGER: minimal length, with a
-- 0x00 prefix when the high bit is set so it is not read as negative.
local function der_integer(raw)
  local i = 1
  while i < #raw and raw:byte(i) == 0 do
    i = i + 1
  end
  local v = raw:sub(i)
  if v:byte(1) >= 0x80 then
    v = "\0" .. v
  end
  return "\x02" .. der_length(#v) .. v
end

-- JWS ECDSA signatures are the fixed-width concatenation R || S (RFC 7518
-- section 3.4); OpenSSL wants the DER ECDSA-Sig-Value SEQUENCE.
function M.raw_ecdsa_to_der(raw)
  local half = #raw // 2
  local body = der_integer(raw:sub(1, half)) .. der_integer(raw:sub(half + 1))
  return "\x30" .. der_length(#body) .. body
end

local function decode_json_part(b64, what)
  local text = M.base64url_decode(b64)
  if not text then
    return nil, what .. " is not valid base64url"
  end
  local ok, value = pcall(cjson.decode, text)
  if not ok or type(value) ~= "table" then
    return nil, what .. " is not a JSON object"
  end
  return value
end

-- Splits and decodes a compact JWS without verifying it.
-- Returns { header=, claims=, signing_input=, signature= } or nil, reason.
function M.parse(jws)
  if type(jws) ~= "string" then
    return nil, "client_assertion is not a string"
  end
  local h, p, s = jws:match("^([^.]*)%.([^.]*)%.([^.]*)$")
  if not h then
    return nil, "client_assertion is not a compact JWS (3 parts)"
  end
  local header, err = decode_json_part(h, "JWS header")
  if not header then
    return nil, err
  end
  local claims
  claims, err = decode_json_part(p, "JWS payload")
  if not claims then
    return nil, err
  end
  local signature = M.base64url_decode(s)
  if not signature or signature == "" then
    return nil, "JWS signature is not valid base64url"
  end
  return {
    header = header,
    claims = claims,
    signing_input = h .. "." .. p,
    signature = signature,
  }
end

-- Verifies parsed.signature over parsed.signing_input with a luaossl public
-- key. alg is the expected algorithm ("RS384" or "ES384"), already matched
-- against the registered key by the caller. Returns true or nil, reason.
function M.verify(parsed, alg, public_key)
  local sig = parsed.signature
  if alg == "ES384" then
    -- A DER signature is 102-104 bytes for P-384, so this also rejects
    -- clients that forget the DER -> R||S conversion.
    if #sig ~= ES384_SIG_LEN then
      return nil, string.format(
        "ES384 signature must be 96 bytes (raw R||S), got %d", #sig)
    end
    sig = M.raw_ecdsa_to_der(sig)
  elseif alg ~= "RS384" then
    return nil, "unsupported alg " .. tostring(alg)
  end
  local md = digest.new("sha384"):update(parsed.signing_input)
  local ok, valid = pcall(public_key.verify, public_key, sig, md)
  if not ok or not valid then
    return nil, "invalid signature"
  end
  return true
end

return M
