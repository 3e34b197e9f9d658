-- bin/ecw-keygen: key file, JWKS output, rotation, and an end-to-end check
-- that the key it writes gets tokens from the sandbox.
package.path = "./lua/?.lua;./?.lua;" .. package.path
package.cpath = (_VERSION == "Lua 5.3" and "build/5.3/?.so;" or "build/5.4/?.so;") .. package.cpath

local sandbox = require "spec.support.sandbox"
local core = require "ecw.core"
local ecw = require "ecw"
local cjson = require "cjson"

local function q(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Runs bin/ecw-keygen; returns exit code, stdout, stderr.
local function keygen(dir, args)
  local errfile = dir .. "/stderr"
  local f = assert(io.popen("bin/ecw-keygen " .. args .. " 2>" .. q(errfile)))
  local out = f:read("*a")
  local _, _, code = f:close()
  local ef = io.open(errfile)
  local err = ef and ef:read("*a") or ""
  if ef then ef:close() end
  return code, out, err
end

local function mode(path)
  local f = assert(io.popen("stat -c %a " .. q(path)))
  local m = f:read("*l")
  f:close()
  return m
end

describe("bin/ecw-keygen", function()
  local dir

  setup(function()
    dir = sandbox.tmpdir("ecw-keygen-spec")
  end)

  teardown(function()
    os.execute("rm -rf " .. q(dir))
  end)

  it("writes a 0600 RS384 key and prints its JWKS", function()
    local path = dir .. "/rsa.pem"
    local code, out, err = keygen(dir, "--out " .. q(path))
    assert.equal(0, code)
    assert.equal("600", mode(path))
    local jwks = cjson.decode(out)
    assert.equal(1, #jwks.keys)
    local k = jwks.keys[1]
    assert.equal("RSA", k.kty)
    assert.equal("RS384", k.alg)
    assert.equal("sig", k.use)
    assert.equal(core.jwk(path).kid, k.kid)
    assert.is_string(k.n)
    assert.equal("AQAB", k.e)
    assert.matches("kid: " .. k.kid:gsub("%p", "%%%0"), err)
    assert.matches("allow-list", err, 1, true)
    assert.is_nil(out:find("PRIVATE", 1, true))
  end)

  it("writes ES384 keys and names the JWKS URL", function()
    local path = dir .. "/ec.pem"
    local code, out, err = keygen(dir, "--alg ES384 --jku https://keys.example.com/jwks.json --out " .. q(path))
    assert.equal(0, code)
    local k = cjson.decode(out).keys[1]
    assert.equal("EC", k.kty)
    assert.equal("P-384", k.crv)
    assert.is_nil(k.d)
    assert.matches("https://keys.example.com/jwks.json", err, 1, true)
  end)

  it("refuses to overwrite without --force", function()
    local path = dir .. "/twice.pem"
    assert.equal(0, (keygen(dir, "--out " .. q(path))))
    local kid1 = core.jwk(path).kid
    local code, out, err = keygen(dir, "--out " .. q(path))
    assert.equal(1, code)
    assert.equal("", out)
    assert.matches("--force", err, 1, true)
    assert.equal(kid1, core.jwk(path).kid)
    code = keygen(dir, "--force --out " .. q(path))
    assert.equal(0, code)
    assert.is_not.equal(kid1, core.jwk(path).kid)
  end)

  it("prints one JWKS for several keys (rotation)", function()
    local a, b = dir .. "/a.pem", dir .. "/b.pem"
    assert.equal(0, (keygen(dir, "--out " .. q(a))))
    assert.equal(0, (keygen(dir, "--alg ES384 --out " .. q(b))))
    local code, out = keygen(dir, "--jwks " .. q(a) .. " " .. q(b))
    assert.equal(0, code)
    local keys = cjson.decode(out).keys
    assert.equal(2, #keys)
    assert.equal(core.jwk(a).kid, keys[1].kid)
    assert.equal(core.jwk(b).kid, keys[2].kid)
    code = keygen(dir, "--jwks " .. q(a) .. " " .. q(a))
    assert.equal(1, code)
    code = keygen(dir, "--jwks " .. q(dir .. "/missing.pem"))
    assert.equal(1, code)
  end)

  it("rejects bad usage", function()
    assert.equal(2, (keygen(dir, "--alg RS256")))
    assert.equal(2, (keygen(dir, "--bogus")))
    assert.equal(2, (keygen(dir, "--jwks")))
    assert.equal(0, (keygen(dir, "--help")))
  end)

  it("writes keys the EHR accepts", function()
    local sb = sandbox.start { tls = true }
    local ok, e = pcall(function()
      for _, alg in ipairs({ "RS384", "ES384" }) do
        local path = dir .. "/e2e-" .. alg .. ".pem"
        assert.equal(0, (keygen(dir, "--alg " .. alg .. " --out " .. q(path))))
        local f = assert(io.popen("openssl pkey -in " .. q(path) .. " -pubout 2>/dev/null"))
        local pub = f:read("*a")
        f:close()
        local kid = core.jwk(path).kid
        local client_id = "keygen-e2e-" .. alg
        sb:register { client_id = client_id, kid = kid, alg = alg, public_key_pem = pub }
        local c = assert(ecw.configure { name = client_id, fhir_base = sb:fhir_base_for("KEYGEN"),
          client_id = client_id, private_key = path, kid = kid, ca_file = sb.ca_file })
        local p = assert(c:patient { phone = "555-010-0123" })
        assert.equal("p-1003", p.id)
      end
    end)
    sb:stop()
    assert(ok, e)
  end)
end)
