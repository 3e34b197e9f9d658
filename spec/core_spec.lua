-- ecw.core against the sandbox EHR: client assertions checked by the
-- sandbox's independent verifier, the scope-keyed cache, expiry, single
-- flight across real threads, state lifetime, TLS and failure handling.
package.path = "./lua/?.lua;./?.lua;" .. package.path

local core = require "ecw.core"
local sandbox = require "spec.support.sandbox"
local host = require "spec.support.host"

local PATIENT = "p-1001"
local READ = "system/Patient.read"

local sb, rsa, ec
local n_practice = 0

-- A fresh practice code per test keeps token cache keys apart.
local function base ()
  n_practice = n_practice + 1
  return sb.base_url .. "/fhir/r4/CORE" .. n_practice
end

local function client (o)
  o = o or {}
  local cfg = {
    fhir_base = o.fhir_base or base(),
    client_id = o.client_id or "core-client",
    private_key = o.private_key or rsa.path,
    kid = o.kid or "rsa-1",
    ca_file = o.ca_file or sb.ca_file,
  }
  for k, v in pairs(o) do cfg[k] = v end
  return core.client(cfg)
end

-- Token requests are not per practice (one token endpoint serves all), so
-- the host tests reset the sandbox's counters and read its totals.
local function practice_stats (fhir_base)
  local s = sb:stats()
  local p = fhir_base:match("/fhir/r4/([^/]+)$")
  local bp = s.by_practice[p] or {}
  return { token_requests = s.token_requests, fhir_requests = bp.fhir_requests,
           connections = s.connections }
end

local function delta (f)
  local before = core.stats()
  local sb_before = sb:stats()
  f()
  local after, sb_after = core.stats(), sb:stats()
  local d = {}
  for k, v in pairs(after) do d[k] = v - (before[k] or 0) end
  d.sb_token_requests = sb_after.token_requests - sb_before.token_requests
  d.sb_fhir_requests = sb_after.fhir_requests - sb_before.fhir_requests
  d.sb_connections = sb_after.connections - sb_before.connections
  return d
end

setup(function ()
  sb = sandbox.start{ tls = true }
  rsa = sandbox.keygen(sb.dir, "RS384")
  ec = sandbox.keygen(sb.dir, "ES384")
  sb:register{ client_id = "core-client", kid = "rsa-1", alg = "RS384",
               public_key_pem = rsa.public_pem }
  sb:register{ client_id = "core-client", kid = "ec-1", alg = "ES384",
               public_key_pem = ec.public_pem }
end)

teardown(function ()
  if sb then sb:stop() end
end)

before_each(function ()
  sb:clear_faults()
  sb:config{ token_lifetime = 300, grant_scope = sandbox.null,
             relative_token_endpoint = false, omit_token_endpoint = false }
end)

describe("module", function ()
  it("has a version and only the documented functions", function ()
    assert.is_string(core._VERSION)
    assert.matches("^%d+%.%d+%.%d+$", core._VERSION)
    for _, f in ipairs{ "client", "stats", "flush", "set_cache_limit",
                        "set_pool_size", "now_ms", "normalize_scopes",
                        "keygen", "jwk" } do
      assert.is_function(core[f], f)
    end
  end)

  it("normalizes scope sets: split, deduplicate, sort", function ()
    assert.equal("a b c", core.normalize_scopes("  c b\ta  b\n"))
    assert.equal("a b", core.normalize_scopes{ "b", "a", "b" })
    assert.has_error(function () core.normalize_scopes("   ") end)
    assert.has_error(function () core.normalize_scopes{ 1 } end)
  end)

  it("scales the refresh margin with the lifetime", function ()
    assert.equal(60000, core.margin_ms(300000))
    assert.equal(60000, core.margin_ms(3600000))
    assert.equal(600, core.margin_ms(3000))
  end)
end)

describe("client assertion", function ()
  it("RS384 is accepted by the independent verifier, with SMART claims", function ()
    local h = assert(client())
    local t0 = os.time()
    local info, err = h:token(READ)
    assert.is_nil(err)
    assert.equal(READ, info.scope)
    local a = sb:stats().last_assertion
    assert.same({ alg = "RS384", typ = "JWT", kid = "rsa-1" }, a.header)
    assert.equal("core-client", a.claims.iss)
    assert.equal("core-client", a.claims.sub)
    assert.equal(sb.token_url, a.claims.aud)
    assert.is_string(a.claims.jti)
    assert.is_true(#a.claims.jti >= 22)           -- >= 128 bits, base64url
    assert.is_true(a.claims.exp <= t0 + 300)
    assert.is_true(a.claims.exp >= t0 + 200)
    assert.is_nil(a.claims.iat)
  end)

  it("ES384 (raw R||S) is accepted by the independent verifier", function ()
    local h = assert(client{ private_key = ec.path, kid = "ec-1" })
    assert.equal("ES384", h:info().alg)
    local info, err = h:token(READ)
    assert.is_nil(err)
    assert.truthy(info)
    assert.equal("ES384", sb:stats().last_assertion.header.alg)
  end)

  it("a signature by another key under our kid is rejected: invalid_client", function ()
    local other = sandbox.keygen(sb.dir, "RS384")
    local h = assert(client{ private_key = other.path })
    local info, err = h:token(READ)
    assert.is_nil(info)
    assert.equal("invalid_client", err.code)
    assert.equal("invalid_client", err.oauth_error)
    assert.is_string(err.oauth_error_description)
    assert.is_false(err.retryable)
    assert.matches("invalid_client", tostring(err))
  end)

  it("an unknown kid is rejected: invalid_client", function ()
    local h = assert(client{ kid = "nobody" })
    local _, err = h:token(READ)
    assert.equal("invalid_client", err.code)
  end)

  it("carries jku and iat only when configured", function ()
    local h = assert(client{ jku = "https://keys.example/jwks.json", iat = true })
    -- the sandbox accepts or rejects jku; either way it records the header
    h:token(READ)
    local a = sb:stats().last_assertion
    assert.equal("https://keys.example/jwks.json", a.header.jku)
    assert.is_number(a.claims.iat)
  end)

  it("uses a fresh jti for every token request", function ()
    local h = assert(client())
    local seen = {}
    for i = 1, 3 do
      assert(h:token("system/Patient.read system/Practitioner.read"))
      assert.is_true(h:invalidate("system/Practitioner.read system/Patient.read"))
      local jti = sb:stats().last_assertion.claims.jti
      assert.is_nil(seen[jti], "jti reused on request " .. i)
      seen[jti] = true
    end
  end)
end)

describe("discovery", function ()
  it("finds the token endpoint and caches it per base", function ()
    local fb = base()
    local d = delta(function ()
      assert(assert(client{ fhir_base = fb }):token(READ))
      assert(assert(client{ fhir_base = fb }):token("system/Practitioner.read"))
    end)
    assert.equal(1, d.discovery_requests)
    assert.equal(2, d.token_requests)
  end)

  it("resolves a relative token_endpoint against the base", function ()
    sb:config{ relative_token_endpoint = true }
    local h = assert(client())
    assert(h:token(READ))
    assert.equal(sb.token_url, sb:stats().last_assertion.claims.aud)
  end)

  it("fails clearly without a token_endpoint", function ()
    sb:config{ omit_token_endpoint = true }
    local _, err = assert(client()):token(READ)
    assert.equal("bad_response", err.code)
    assert.matches("token_endpoint", err.message)
  end)

  it("is skipped when token_url is given", function ()
    local d = delta(function ()
      assert(assert(client{ token_url = sb.token_url }):token(READ))
    end)
    assert.equal(0, d.discovery_requests)
    assert.equal(1, d.token_requests)
  end)
end)

describe("token cache", function ()
  it("keys tokens by scope set: two sets, two tokens; reordered, a hit", function ()
    local h = assert(client())
    local d = delta(function ()
      assert(h:get("Patient/" .. PATIENT, "system/Patient.read"))
      assert(h:get("Patient/" .. PATIENT, "system/Patient.read system/Practitioner.read"))
      assert(h:get("Patient/" .. PATIENT, { "system/Practitioner.read", "system/Patient.read",
                                            "system/Patient.read" }))
      assert(h:get("Patient/" .. PATIENT, "system/Patient.read"))
    end)
    assert.equal(2, d.token_requests)
    assert.equal(2, d.sb_token_requests)
    assert.equal(2, d.token_cache_hits)
    assert.equal(4, d.sb_fhir_requests)
  end)

  it("keeps the granted scope when it differs from the request", function ()
    sb:config{ grant_scope = "system/Patient.rs system/Patient.read" }
    local info = assert(assert(client()):token(READ))
    assert.equal("system/Patient.read system/Patient.rs", info.scope)
  end)

  it("refreshes a 3 s token and never sends it inside its margin", function ()
    sb:config{ token_lifetime = 3 }
    local fb = base()
    local h = assert(client{ fhir_base = fb })
    sb:reset_stats()
    local stop = core.now_ms() + 4500
    local n = 0
    while core.now_ms() < stop do
      local res = assert(h:get("Patient/" .. PATIENT, READ))
      assert.equal(200, res.status)
      n = n + 1
      os.execute("sleep 0.05")
    end
    local s = sb:stats()
    assert.is_true(n > 20)
    assert.is_true(s.token_requests >= 2, "expected a refresh")
    assert.equal(0, s.expired_uses)
    assert.is_true(s.min_remaining_ms >= core.margin_ms(3000) - 50,
                   "token used " .. s.min_remaining_ms .. " ms before expiry")
  end)

  it("invalidates on a 401 and retries exactly once", function ()
    local h = assert(client())
    assert(h:token(READ))
    sb:revoke_all()
    local d = delta(function ()
      local res = assert(h:get("Patient/" .. PATIENT, READ))
      assert.equal(200, res.status)
      assert.is_true(res.retried)
    end)
    assert.equal(1, d.retries_401)
    assert.equal(1, d.token_requests)
    assert.equal(2, d.sb_fhir_requests)
  end)

  it("returns the second 401 as a result, without looping", function ()
    local h = assert(client())
    sb:fault{ target = "fhir", status = 401, times = 2,
              body = '{"resourceType":"OperationOutcome","issue":[]}' }
    local d = delta(function ()
      local res = assert(h:get("Patient/" .. PATIENT, READ))
      assert.equal(401, res.status)
    end)
    assert.equal(1, d.retries_401)
    assert.equal(2, d.sb_fhir_requests)
  end)

  it("is bounded: old idle entries are evicted", function ()
    local h = assert(client())
    local types = { "Patient", "Practitioner", "MedicationRequest",
                    "AllergyIntolerance", "Coverage", "Encounter" }
    core.set_cache_limit(4)
    for i = 1, #types do
      assert(h:token("system/" .. types[i] .. ".read"))
    end
    local s = core.stats()
    core.set_cache_limit(256)
    assert.is_true(s.cache_entries <= 4)
    assert.is_true(s.cache_evictions >= 2)
  end)
end)

describe("threads and states (ecw-host)", function ()
  local function env (fb, extra)
    local e = {
      ECW_T_BASE = fb, ECW_T_CLIENT = "core-client", ECW_T_KEY = rsa.path,
      ECW_T_KID = "rsa-1", ECW_T_CA = sb.ca_file, ECW_T_PATIENT = PATIENT,
      ECW_T_SCOPES = READ,
    }
    for k, v in pairs(extra or {}) do e[k] = v end
    return e
  end

  it("64 callers on 64 threads, each with its own state, make 1 token request", function ()
    local fb = base()
    sb:reset_stats()
    local ok, sum, out = host.run{ script = "spec/host/get_patient.lua",
                                   threads = 64, calls = 64, barrier = true,
                                   env = env(fb) }
    assert.is_true(ok, out)
    assert.equal(64, sum.ok)
    local ps = practice_stats(fb)
    assert.equal(1, ps.token_requests)
    assert.equal(64, ps.fhir_requests)
  end)

  it("the cache survives lua_close: 100 sequential states, 1 token, reused connections", function ()
    local fb = base()
    sb:reset_stats()
    local ok, sum, out = host.run{ script = "spec/host/get_patient.lua",
                                   threads = 1, calls = 100,
                                   env = env(fb, { ECW_T_EXPECT_WARM = "1" }) }
    assert.is_true(ok, out)
    assert.equal(100, sum.ok)
    local ps = practice_stats(fb)
    assert.equal(1, ps.token_requests)
    assert.equal(100, ps.fhir_requests)
    -- one keep-alive connection carries discovery, token and every read
    assert.is_true(ps.connections <= 2, ps.connections .. " connections")
  end)

  it("runs detached threads (luarun style) and shuts curl down after", function ()
    local ok, sum, out = host.run{ script = "spec/host/get_patient.lua",
                                   threads = 8, calls = 32, detached = true,
                                   env = env(base()) }
    assert.is_true(ok, out)
    assert.equal(32, sum.ok)
  end)
end)

describe("TLS and transport", function ()
  it("fails with a tls error against the wrong CA", function ()
    local h = assert(client{ ca_file = sb.wrong_ca_file })
    local _, err = h:token(READ)
    assert.equal("tls", err.code)
    assert.matches("TLS", err.message)
  end)

  it("refuses plain http except to loopback", function ()
    local h, err = client{ fhir_base = "http://fhir.example.com/fhir/r4/X" }
    assert.is_nil(h)
    assert.equal("config", err.code)
    assert.matches("https", err.message)
    assert.truthy(client{ fhir_base = "http://127.0.0.1:1/fhir/r4/X" })
  end)

  it("never sends the token to another origin", function ()
    local h = assert(client())
    local d = delta(function ()
      local res, err = h:get("https://127.0.0.2:" .. sb.port .. "/fhir/r4/X/Patient/1", READ)
      assert.is_nil(res)
      assert.equal("origin", err.code)
    end)
    assert.equal(0, d.http_requests)
  end)

  it("never sends the token outside the base on the same origin", function ()
    local fb = base()
    local h = assert(client{ fhir_base = fb })
    local d = delta(function ()
      for _, u in ipairs{ sb.base_url .. "/fhir/r4/OTHER/Patient/" .. PATIENT,
                          sb.token_url, fb .. "x/Patient/1",
                          fb .. "/../OTHER/Patient/1", fb .. "/%2e%2e/y" } do
        local res, err = h:get(u, READ)
        assert.is_nil(res, u)
        assert.equal("origin", err.code)
      end
      assert.equal(200, assert(h:get(fb .. "/Patient/" .. PATIENT, READ)).status)
    end)
    assert.equal(1, d.sb_fhir_requests)
  end)

  it("refuses paths that climb out of the base or carry raw bytes", function ()
    local h = assert(client())
    for _, p in ipairs{ "Patient/../../x", "../metadata", "Patient/a b",
                        "Patient/%2e%2e/%2E%2e/x", "Patient/.%2e/y", "./Patient",
                        "Patient/x\r\nX-Evil: 1" } do
      local res, err = h:get(p, READ)
      assert.is_nil(res, p)
      assert.equal("config", err.code)
    end
  end)

  it("returns HTTP errors as results, with headers", function ()
    local res = assert(assert(client()):get("Patient/does-not-exist", READ))
    assert.equal(404, res.status)
    assert.matches("fhir%+json", res.headers["content-type"])
    assert.matches("OperationOutcome", res.body)
  end)
end)

describe("token endpoint faults", function ()
  it("down: a network error, retryable", function ()
    local h = assert(client{ token_url = "https://127.0.0.1:1/token" })
    local _, err = h:token(READ)
    assert.equal("network", err.code)
    assert.is_true(err.retryable)
  end)

  it("slow: a timeout within the deadline", function ()
    sb:fault{ target = "token", delay_ms = 5000, times = 1 }
    local h = assert(client())
    local t0 = core.now_ms()
    local _, err = h:token(READ, { timeout_ms = 400 })
    local took = core.now_ms() - t0
    assert.equal("timeout", err.code)
    assert.is_true(took < 3000, "took " .. took .. " ms")   -- not the 5 s stall
  end)

  it("a failure wakes every waiter with the error", function ()
    -- not retryable, so the leader makes exactly one request
    sb:fault{ target = "token", status = 401, times = 1, content_type = "application/json",
              body = '{"error":"invalid_client","error_description":"unknown key"}' }
    local fb = base()
    sb:reset_stats()
    local ok, sum = host.run{ script = "spec/host/get_patient.lua",
                              threads = 16, calls = 16, barrier = true,
                              env = { ECW_T_BASE = fb, ECW_T_CLIENT = "core-client",
                                      ECW_T_KEY = rsa.path, ECW_T_KID = "rsa-1",
                                      ECW_T_CA = sb.ca_file, ECW_T_PATIENT = PATIENT,
                                      ECW_T_SCOPES = READ } }
    assert.is_false(ok)
    assert.equal(16, sum.failed)
    assert.equal(1, practice_stats(fb).token_requests)
  end)

  it("a 500 is retried with a fresh assertion (new jti)", function ()
    -- after: the sandbox verifies (and remembers) the first assertion's jti
    -- before answering 500, so a reused jti would be refused as a replay
    sb:fault{ target = "token", status = 500, times = 1, after = true,
              body = '{"error":"server_error"}', content_type = "application/json" }
    sb:reset_stats()
    local d = delta(function ()
      assert(assert(client()):token(READ))
    end)
    assert.equal(2, d.token_requests)
    assert.equal(1, d.retries)
    local a = sb:stats().assertions
    assert.equal(2, #a)
    assert.are_not.equal(a[1].claims.jti, a[2].claims.jti)
  end)

  local bad = {
    { "not JSON", "<html>oops</html>", "bad_response" },
    { "no access_token", '{"token_type":"Bearer","expires_in":300}', "bad_response" },
    { "negative expires_in", '{"access_token":"abc","token_type":"Bearer","expires_in":-5}', "bad_response" },
    { "wrong token_type", '{"access_token":"abc","token_type":"MAC","expires_in":300}', "bad_response" },
    { "header injection", '{"access_token":"abc\\r\\nX: y","token_type":"Bearer"}', "bad_response" },
    { "huge body", '{"access_token":"' .. string.rep("a", 200000) .. '"}', "bad_response" },
    { "deep nesting", string.rep("[", 5000), "bad_response" },
  }
  for _, case in ipairs(bad) do
    it(case[1] .. ": " .. case[3], function ()
      sb:fault{ target = "token", status = 200, body = case[2], times = 1,
                content_type = "application/json" }
      local info, err = assert(client()):token(READ)
      assert.is_nil(info)
      assert.equal(case[3], err.code)
    end)
  end

  it("a missing expires_in means 300 s", function ()
    sb:fault{ target = "token", status = 200, times = 1, content_type = "application/json",
              body = '{"access_token":"abc","token_type":"bearer","scope":"system/Patient.read"}' }
    local info = assert(assert(client()):token(READ))
    assert.is_true(info.expires_in >= 298 and info.expires_in <= 300)
  end)

  local oauth = {
    { 400, "invalid_grant", "invalid_grant" },
    { 400, "invalid_scope", "invalid_grant" },
    { 401, "invalid_client", "invalid_client" },
    { 400, "unauthorized_client", "oauth_error" },
  }
  for _, case in ipairs(oauth) do
    it("OAuth " .. case[2] .. " reaches Lua as " .. case[3], function ()
      sb:fault{ target = "token", status = case[1], times = 1,
                content_type = "application/json",
                body = '{"error":"' .. case[2] .. '","error_description":"because"}' }
      local _, err = assert(client()):token(READ)
      assert.equal(case[3], err.code)
      assert.equal(case[1], err.status)
      assert.equal(case[2], err.oauth_error)
      assert.equal("because", err.oauth_error_description)
    end)
  end

  it("a real invalid_scope from the server", function ()
    local _, err = assert(client()):token("system/Forbidden.read")
    assert.equal("invalid_grant", err.code)
    assert.equal("invalid_scope", err.oauth_error)
  end)
end)

describe("configuration errors", function ()
  local function write (path, text)
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
    return path
  end

  it("a missing key file", function ()
    local h, err = client{ private_key = sb.dir .. "/nope.pem" }
    assert.is_nil(h)
    assert.equal("config", err.code)
    assert.matches("no such file", err.message)
  end)

  it("an unreadable key path", function ()
    local _, err = client{ private_key = sb.dir }
    assert.equal("config", err.code)
    assert.matches("not a regular file", err.message)
  end)

  it("not a private key", function ()
    local _, err = client{ private_key = write(sb.dir .. "/pub.pem", rsa.public_pem) }
    assert.equal("config", err.code)
    assert.matches("no usable PEM private key", err.message)
    _, err = client{ private_key = write(sb.dir .. "/junk.pem", "hello\n") }
    assert.equal("config", err.code)
  end)

  it("the wrong kind of key", function ()
    local small = sandbox.keygen(sb.dir, "RSA1024")
    local _, err = client{ private_key = small.path }
    assert.matches("at least 2048", err.message)
    local p256 = sandbox.keygen(sb.dir, "ES256")
    _, err = client{ private_key = p256.path }
    assert.matches("P%-384", err.message)
    _, err = client{ private_key = ec.path, alg = "RS384" }
    assert.matches("does not match", err.message)
  end)

  it("accepts traditional PEM as well as PKCS#8", function ()
    local trad = sandbox.keygen(sb.dir, "RS384", { traditional = true })
    local f = assert(io.open(trad.path))
    local pem = f:read("a")
    f:close()
    assert.matches("BEGIN RSA " .. "PRIVATE KEY", pem)   -- traditional PEM (split: no key-shaped literal in the tree)
    assert.truthy(client{ private_key = trad.path })
  end)

  it("raises on programmer errors, naming the option", function ()
    assert.has_error(function () core.client() end)
    assert.has_error(function () core.client{ fhir_base = 1 } end,
                     "option 'fhir_base' must be a string (required)")
    assert.has_error(function ()
      core.client{ fhir_base = "https://x", client_id = "c", private_key = rsa.path,
                   kid = "k", timeout_ms = -1 }
    end, "option 'timeout_ms' must be an integer between 1 and 600000")
    local h = assert(client())
    assert.has_error(function () h:get("Patient/1", "") end)
    assert.has_error(function () h:get(nil, READ) end)
  end)

  it("closes idempotently and refuses use after close", function ()
    local h = assert(client())
    h:close()
    h:close()
    assert.has_error(function () h:token(READ) end)
    assert.matches("closed", tostring(h))
  end)
end)

describe("keys", function ()
  it("generates a 0600 key whose JWK kid is its RFC 7638 thumbprint", function ()
    local path = sb.dir .. "/gen-rs.pem"
    local jwk = assert(core.keygen{ path = path })
    assert.equal("RSA", jwk.kty)
    assert.equal("RS384", jwk.alg)
    assert.equal("AQAB", jwk.e)
    local p = io.popen("stat -c %a " .. path)
    assert.equal("600", p:read("l"))
    p:close()
    -- independent thumbprint: sha256 over the canonical JSON, by openssl
    local canon = '{"e":"' .. jwk.e .. '","kty":"RSA","n":"' .. jwk.n .. '"}'
    local cmd = "printf '%s' '" .. canon .. "' | openssl dgst -sha256 -binary | base64 -w0"
    p = io.popen(cmd)
    local b64 = p:read("a")
    p:close()
    local kid = b64:gsub("%+", "-"):gsub("/", "_"):gsub("=", "")
    assert.equal(kid, jwk.kid)
    assert.same(jwk, core.jwk(path))
    local again, err = core.keygen{ path = path }
    assert.is_nil(again)
    assert.matches("exists", err.message)
  end)

  it("a generated ES384 key signs assertions the sandbox accepts", function ()
    local path = sb.dir .. "/gen-ec.pem"
    local jwk = assert(core.keygen{ path = path, alg = "ES384" })
    assert.equal("P-384", jwk.crv)
    local p = io.popen("openssl pkey -in " .. path .. " -pubout")
    local pub = p:read("a")
    p:close()
    sb:register{ client_id = "core-client", kid = jwk.kid, alg = "ES384", public_key_pem = pub }
    assert(assert(client{ private_key = path, kid = jwk.kid }):token(READ))
  end)
end)
