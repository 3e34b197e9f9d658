-- Tokens, scopes and failures against the sandbox: 401 retry, local scope
-- refusal, OperationOutcome text, HTTP status mapping, timeouts, bad
-- bodies, OAuth errors, and the one-deadline-per-call rule.
package.path = "./lua/?.lua;./?.lua;" .. package.path
package.cpath = (_VERSION == "Lua 5.3" and "build/5.3/?.so;" or "build/5.4/?.so;") .. package.cpath

local sandbox = require "spec.support.sandbox"
local data = require "sandbox.data"
local core = require "ecw.core"
local ecw = require "ecw"
local cjson = require "cjson"

local CLIENT_ID = "ecw-errors-spec"

local function outcome_body(text, diagnostics)
  return cjson.encode { resourceType = "OperationOutcome", issue = {
    { severity = "error", code = "processing", details = { text = text } },
    { severity = "error", code = "processing", diagnostics = diagnostics },
  } }
end

describe("ecw failures", function()
  local sb, dir, key, kid
  local practice_n = 0

  local function configure(extra)
    practice_n = practice_n + 1
    local practice = string.format("ERR%02d", practice_n)
    local opts = {
      fhir_base = sb:fhir_base_for(practice), client_id = CLIENT_ID,
      private_key = key.path, kid = kid, ca_file = sb.ca_file,
    }
    for k, v in pairs(extra or {}) do
      opts[k] = v
    end
    return assert(ecw.configure(opts)), practice
  end

  local function totals()
    local s = sb:stats()
    return { token = s.token_requests, fhir = s.fhir_requests, discovery = s.discovery_requests }
  end

  setup(function()
    sb = sandbox.start { tls = true }
    dir = sandbox.tmpdir("ecw-errors-spec")
    key = sandbox.keygen(dir, "RS384")
    kid = assert(core.jwk(key.path)).kid
    sb:register { client_id = CLIENT_ID, kid = kid, key = key }
  end)

  teardown(function()
    if sb then sb:stop() end
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  after_each(function()
    sb:clear_faults()
    sb:config { grant_scope = sandbox.null, deny_scope = sandbox.null, token_lifetime = sandbox.null }
  end)

  it("retries a revoked token exactly once", function()
    configure()
    assert(ecw.patient { id = data.fixtures.jane })       -- token cached
    sb:revoke_all()
    local before, sbefore = core.stats(), sb:stats()
    local p = assert(ecw.patient { id = data.fixtures.jane })
    assert.equal("Jane Doe", p.name)
    local after, safter = core.stats(), sb:stats()
    assert.equal(before.retries_401 + 1, after.retries_401)
    assert.equal(sbefore.token_requests + 1, safter.token_requests)
    assert.equal(sbefore.fhir_requests + 2, safter.fhir_requests)
  end)

  it("maps a 401 that survives the retry to auth", function()
    configure()
    sb:fault { target = "fhir", status = 401, times = 2, content_type = "application/fhir+json",
      body = outcome_body("access token rejected") }
    local p, err = ecw.read("Patient", data.fixtures.jane)
    assert.is_nil(p)
    assert.equal("auth", err.code)
    assert.equal(401, err.status)
    assert.equal("access token rejected", err.outcome)
    assert.is_false(err.retryable)
  end)

  it("refuses an out-of-scope call with zero HTTP requests", function()
    configure { scopes = { "system/Patient.read" } }
    assert(ecw.patient { id = data.fixtures.jane })
    local before, sbefore = core.stats(), totals()
    local pr, err = ecw.practitioner(data.fixtures.jane)
    assert.is_nil(pr)
    assert.equal("scope", err.code)
    assert.is_false(err.retryable)
    local meds
    meds, err = ecw.medications(data.fixtures.jane)
    assert.is_nil(meds)
    assert.equal("scope", err.code)
    local after = core.stats()
    assert.equal(before.http_requests, after.http_requests)
    assert.equal(before.token_requests, after.token_requests)
    assert.equal(before.connections_opened, after.connections_opened)
    assert.same(sbefore, totals())
  end)

  it("lets a registered system/*.read cover every type", function()
    configure { scopes = "system/*.read" }
    local pr = assert(ecw.practitioner(data.fixtures.jane))
    assert.equal("Dr. Alice Example", pr.name)
  end)

  it("asks v2 scopes when configured so", function()
    configure { scope_style = "v2" }
    sb:config { deny_scope = "system/Patient.read" }
    assert(ecw.patient { id = data.fixtures.jane })
    -- The v1 client asks system/Patient.read, which the server now denies.
    configure()
    local p, err = ecw.patient { id = data.fixtures.jane }
    assert.is_nil(p)
    assert.equal("auth", err.code)
    assert.equal("invalid_scope", err.oauth_error)
    assert.is_string(err.oauth_error_description)
  end)

  it("puts the OperationOutcome of a 403 in err.outcome", function()
    configure()
    sb:config { grant_scope = "system/Patient.read" }   -- whatever is asked
    local pr, err = ecw.read("Practitioner", data.fixtures.practitioner)
    assert.is_nil(pr)
    assert.equal("auth", err.code)
    assert.equal(403, err.status)
    assert.equal("insufficient scope for Practitioner read", err.outcome)
    assert.is_nil(err.message:find("insufficient", 1, true))
  end)

  it("joins several outcome issues", function()
    configure()
    -- times = 10: the core retries a 500 with backoff before giving up
    sb:fault { target = "fhir", status = 500, times = 10, content_type = "application/fhir+json",
      body = outcome_body("database offline", "ref 42") }
    local r, err = ecw.read("Patient", data.fixtures.jane)
    assert.is_nil(r)
    assert.equal("http", err.code)
    assert.equal(500, err.status)
    assert.is_true(err.retryable)
    assert.equal("database offline; ref 42", err.outcome)
    assert.equal(err.message, tostring(err))
    assert.equal("call failed: " .. err.message, "call failed: " .. err)
  end)

  it("maps 429 and 503 to retryable codes", function()
    configure()
    sb:fault { target = "fhir", status = 503, times = 10 }
    local _, err = ecw.patient { phone = "5550100123" }
    assert.equal("unavailable", err.code)
    assert.is_true(err.retryable)
    sb:clear_faults()
    sb:fault { target = "fhir", status = 400, times = 1, content_type = "application/fhir+json",
      body = outcome_body("bad search") }
    _, err = ecw.search("Patient", { family = "Doe" })
    assert.equal("http", err.code)
    assert.equal("bad search", err.outcome)
    assert.is_false(err.retryable)
    -- last: a 429 blocks this practice locally until the minute boundary
    sb:fault { target = "fhir", status = 429, times = 1 }
    _, err = ecw.search("Patient", { family = "Doe" })
    assert.equal("rate_limited", err.code)
    assert.equal(429, err.status)
    assert.is_true(err.retryable)
  end)

  it("maps token endpoint failures", function()
    configure()
    sb:fault { target = "token", status = 503, times = 10, body = "down", content_type = "text/plain" }
    local _, err = ecw.patient { id = data.fixtures.jane }
    assert.equal("unavailable", err.code)
    assert.is_true(err.retryable)
    sb:clear_faults()
    configure { client_id = "not-registered" }
    _, err = ecw.patient { id = data.fixtures.jane }
    assert.equal("auth", err.code)
    assert.equal("invalid_client", err.oauth_error)
  end)

  it("calls non-JSON, OperationOutcome and wrong-type answers bad_response", function()
    configure()
    sb:fault { target = "fhir", status = 200, times = 1, body = "<html>oops</html>", content_type = "text/html" }
    local _, err = ecw.read("Patient", data.fixtures.jane)
    assert.equal("bad_response", err.code)
    sb:fault { target = "fhir", status = 200, times = 1, content_type = "application/fhir+json",
      body = outcome_body("practice not activated") }
    _, err = ecw.patient { family = "Doe" }
    assert.equal("bad_response", err.code)
    assert.equal("practice not activated", err.outcome)
    sb:fault { target = "fhir", status = 200, times = 1, content_type = "application/fhir+json",
      body = '{"resourceType":"Practitioner","id":"x"}' }
    _, err = ecw.read("Patient", data.fixtures.jane)
    assert.equal("bad_response", err.code)
  end)

  it("gives one deadline per call", function()
    configure()
    assert(ecw.patient { id = data.fixtures.jane })       -- warm token + connection
    sb:fault { target = "fhir", delay_ms = 1500, times = 1 }
    local t0 = core.now_ms()
    local p, err = ecw.patient({ id = data.fixtures.jane }, { timeout_ms = 300 })
    local took = core.now_ms() - t0
    assert.is_nil(p)
    assert.equal("timeout", err.code)
    assert.is_true(took < 1000, "took " .. took .. " ms")
  end)

  it("shares the deadline across phone forms", function()
    configure()
    assert(ecw.patient { id = data.fixtures.jane })
    -- Each of the four forms is slow; together they exceed the budget.
    sb:fault { target = "fhir", delay_ms = 150, times = 4 }
    local t0 = core.now_ms()
    local p, err = ecw.patient({ phone = "+15550109999" }, { timeout_ms = 350 })
    local took = core.now_ms() - t0
    assert.is_nil(p)
    assert.equal("timeout", err.code)
    assert.is_true(took < 600, "took " .. took .. " ms")
  end)

  it("reports network failures", function()
    local c = assert(ecw.configure { name = "dead", fhir_base = "https://127.0.0.1:1/fhir/r4/DEAD",
      client_id = CLIENT_ID, private_key = key.path, kid = kid, ca_file = sb.ca_file,
      token_url = "https://127.0.0.1:1/oauth/token" })
    local p, err = c:patient { id = "p-1" }
    assert.is_nil(p)
    assert.equal("network", err.code)
    assert.is_true(err.retryable)
  end)

  it("reports TLS failures", function()
    local c = assert(ecw.configure { name = "wrongca", fhir_base = sb:fhir_base_for("ERRTLS"),
      client_id = CLIENT_ID, private_key = key.path, kid = kid, ca_file = sb.wrong_ca_file })
    local p, err = c:patient { id = data.fixtures.jane }
    assert.is_nil(p)
    assert.equal("tls", err.code)
  end)

  it("counts Lua-side events in ecw.stats", function()
    configure()
    local before = ecw.stats()
    assert(ecw.patients { family = "Paging" })
    local after = ecw.stats()
    assert.equal(before.calls + 1, after.calls)
    assert.equal(before.pages_followed + 2, after.pages_followed)
    assert.is_number(after.token_requests)
    assert.is_number(after.http_requests)
  end)

  it("warms the token cache", function()
    configure()
    local s0 = sb:stats().token_requests
    assert.is_true(ecw.warm { "Patient", "Practitioner" })
    assert.equal(s0 + 2, sb:stats().token_requests)
    local h0 = core.stats().token_cache_hits
    assert(ecw.practitioner(data.fixtures.jane))
    assert.equal(s0 + 2, sb:stats().token_requests)
    assert.is_true(core.stats().token_cache_hits >= h0 + 2)
  end)
end)
