-- Throwaway PKI for the sandbox's HTTPS listener.
--
-- Every run mints a fresh CA, a server certificate for 127.0.0.1/localhost
-- signed by it, and an unrelated "wrong" CA. Clients trust DIR/ca.pem; tests
-- that must see certificate verification fail point at DIR/wrong-ca.pem.
-- Nothing here is meant to outlive the process, so keys stay in memory.
--
-- P-256 keys: generation is instant (RSA-2048 would add ~100 ms per key)
-- and every TLS stack we care about accepts ECDSA server certificates.
local pkey = require "openssl.pkey"
local x509 = require "openssl.x509"
local xname = require "openssl.x509.name"
local altname = require "openssl.x509.altname"
local extension = require "openssl.x509.extension"
local bignum = require "openssl.bignum"
local rand = require "openssl.rand"
local ssl_context = require "openssl.ssl.context"

local M = {}

local VALID_BEFORE = 3600   -- tolerate a client clock slightly behind ours
local VALID_AFTER = 86400   -- a sandbox never lives a day

local function new_key()
  return pkey.new { type = "EC", curve = "prime256v1" }
end

local function name(cn)
  local n = xname.new()
  n:add("O", "ecw sandbox (TEST ONLY)")
  n:add("CN", cn)
  return n
end

-- Random positive 127-bit serial: browsers/OpenSSL reject duplicate
-- issuer+serial pairs, and runs reuse subject names.
local function serial()
  local bytes = rand.bytes(16)
  bytes = string.char(bytes:byte(1) & 0x7F) .. bytes:sub(2)
  local hex = bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end)
  return bignum.new("0x" .. hex)
end

local function key_id(crt)
  return crt:getPublicKeyDigest("sha1")
end

local function hex_colon(bytes)
  return (bytes:gsub(".", function(c)
    return string.format("%02X:", c:byte())
  end):sub(1, -2))
end

-- Common skeleton: version 3, serial, validity window, key identifiers.
-- The AKI is given as DER because luaossl cannot pass OpenSSL the issuer
-- context that "keyid:always" needs: SEQUENCE { [0] keyIdentifier }.
local function new_cert(subject, key, issuer_crt)
  local crt = x509.new()
  crt:setVersion(3)
  crt:setSerial(serial())
  crt:setSubject(subject)
  local now = os.time()
  crt:setLifetime(now - VALID_BEFORE, now + VALID_AFTER)
  crt:setPublicKey(key)
  local skid = key_id(crt)
  crt:addExtension(extension.new("subjectKeyIdentifier", hex_colon(skid)))
  local akid = issuer_crt and key_id(issuer_crt) or skid
  crt:addExtension(extension.new("authorityKeyIdentifier", "DER",
    "\x30\x16\x80\x14" .. akid))
  return crt
end

local function new_ca(cn)
  local key = new_key()
  local crt = new_cert(name(cn), key, nil)
  crt:setIssuer(crt:getSubject())
  crt:setBasicConstraints { CA = true, pathLen = 0 }
  crt:setBasicConstraintsCritical(true)
  crt:addExtension(extension.new("keyUsage", "critical,keyCertSign,cRLSign"))
  crt:sign(key, "sha256")
  return { key = key, cert = crt }
end

local function new_server_cert(ca)
  local key = new_key()
  local crt = new_cert(name("127.0.0.1"), key, ca.cert)
  crt:setIssuer(ca.cert:getSubject())
  crt:setBasicConstraints { CA = false }
  crt:setBasicConstraintsCritical(true)
  local san = altname.new()
  san:add("IP", "127.0.0.1")
  san:add("DNS", "localhost")
  crt:setSubjectAlt(san)
  crt:addExtension(extension.new("keyUsage", "critical,digitalSignature"))
  crt:addExtension(extension.new("extendedKeyUsage", "serverAuth"))
  crt:sign(ca.key, "sha256")
  return { key = key, cert = crt }
end

local function write_file(path, contents)
  local f = assert(io.open(path, "wb"))
  assert(f:write(contents))
  assert(f:close())
end

-- Creates the PKI, writes DIR/ca.pem, DIR/wrong-ca.pem and DIR/server.pem
-- (the leaf, for pinning experiments) and returns
-- { ssl_context = <server context>, ca_file =, wrong_ca_file =, server_cert_file = }.
function M.create(dir)
  local ca = new_ca("ecw sandbox test CA")
  local wrong = new_ca("ecw sandbox WRONG CA")
  local server = new_server_cert(ca)

  local files = {
    ca_file = dir .. "/ca.pem",
    wrong_ca_file = dir .. "/wrong-ca.pem",
    server_cert_file = dir .. "/server.pem",
  }
  write_file(files.ca_file, ca.cert:toPEM())
  write_file(files.wrong_ca_file, wrong.cert:toPEM())
  write_file(files.server_cert_file, server.cert:toPEM())

  local ctx = ssl_context.new("TLS", true)
  ctx:setCertificate(server.cert)
  ctx:setPrivateKey(server.key)
  files.ssl_context = ctx
  return files
end

return M
