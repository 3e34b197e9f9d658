-- Fault injection (issue 6): every fault the sandbox can play gives the
-- right code within the call's deadline, and the first call after the
-- fault clears succeeds: nothing sticks.  Also the per-practice request
-- budget, 429 blocks and the circuit breaker.
package.path = "./lua/?.lua;./?.lua;" .. package.path
package.cpath = (_VERSION == "Lua 5.3" and "build/5.3/?.so;" or "build/5.4/?.so;") .. package.cpath

local sandbox = require "spec.support.sandbox"
local data = require "sandbox.data"
local core = require "ecw.core"
local ecw = require "ecw"

local CLIENT_ID = "ecw-faults-spec"
local JANE = data.fixtures.jane
local TIMEOUT = 800
local SLACK = 300        -- scheduling slack on a loaded CI machine, not speed

describe("fault injection", function()
  local sb, dir, key, kid
  local n = 0

  local function configure(extra)
    n = n + 1
    local opts = {
      fhir_base = sb:fhir_base_for(string.format("FLT%02d", n)), client_id = CLIENT_ID,
      private_key = key.path, kid = kid, ca_file = sb.ca_file, timeout_ms = TIMEOUT,
      name = "flt" .. n,
    }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return assert(ecw.configure(opts))
  end

  -- Runs f, checks its error code and that it came back within the deadline.
  local function fails_with(code, f)
    local t0 = core.now_ms()
    local v, err = f()
    local took = core.now_ms() - t0
    assert.is_nil(v)
    assert.is_table(err)
    assert.equal(code, err.code, "got " .. tostring(err.code) .. ": " .. tostring(err))
    assert.is_true(took <= TIMEOUT + SLACK, "answered after " .. took .. " ms")
    return err
  end

  local function recovers(c)
    sb:clear_faults()
    local p, err = c:patient { id = JANE }
    assert.is_nil(err)
    assert.equal(JANE, p.id)
  end

  setup(function()
    sb = sandbox.start { tls = true }
    dir = sandbox.tmpdir("ecw-faults-spec")
    key = sandbox.keygen(dir, "RS384")
    kid = assert(core.jwk(key.path)).kid
    sb:register { client_id = CLIENT_ID, kid = kid, key = key }
  end)

  teardown(function()
    if sb then sb:stop() end
    os.execute("rm -rf '" .. dir .. "'")
  end)

  before_each(function()
    sb:clear_faults()
    sb:config { token_lifetime = 300, clock_offset = sandbox.null }
  end)

  describe("token endpoint", function()
    it("down (connection closed): network", function()
      local c = configure()
      sb:fault { target = "token", close = true }
      fails_with("network", function() return c:patient { id = JANE } end)
      recovers(c)
    end)

    it("unreachable port: network", function()
      local c = configure { token_url = "https://127.0.0.1:1/oauth2/token" }
      local err = fails_with("network", function() return c:patient { id = JANE } end)
      assert.is_true(err.retryable)
    end)

    it("500: unavailable, retryable", function()
      local c = configure()
      sb:fault { target = "token", status = 500, content_type = "application/json",
                 body = '{"error":"server_error"}' }
      local err = fails_with("unavailable", function() return c:patient { id = JANE } end)
      assert.is_true(err.retryable)
      recovers(c)
    end)

    it("400 invalid_client: auth, not retried", function()
      local c = configure()
      sb:fault { target = "token", status = 400, content_type = "application/json",
                 body = '{"error":"invalid_client","error_description":"jwks_not_whitelisted"}' }
      local before = core.stats().token_requests
      local err = fails_with("auth", function() return c:patient { id = JANE } end)
      assert.equal("invalid_client", err.oauth_error)
      assert.equal("jwks_not_whitelisted", err.oauth_error_description)
      assert.equal(before + 1, core.stats().token_requests)
      recovers(c)
    end)

    it("slow: timeout within the deadline", function()
      local c = configure()
      sb:fault { target = "token", delay_ms = 3000 }
      fails_with("timeout", function() return c:patient { id = JANE } end)
      recovers(c)
    end)

    it("429 with Retry-After: rate_limited, fails fast, then recovers", function()
      local c = configure()
      sb:fault { target = "token", status = 429, times = 1, headers = { ["Retry-After"] = "1" } }
      fails_with("rate_limited", function() return c:patient { id = JANE } end)
      local sent = sb:stats().token_requests
      local err = fails_with("rate_limited", function() return c:patient { id = JANE } end)
      assert.is_true(err.retryable)
      assert.equal(sent, sb:stats().token_requests)      -- refused locally
      os.execute("sleep 1.2")
      recovers(c)
    end)

    it("clock skew that makes the server reject exp: auth", function()
      local c = configure()
      sb:config { clock_offset = 600 }
      local err = fails_with("auth", function() return c:patient { id = JANE } end)
      assert.equal("invalid_client", err.oauth_error)
      sb:config { clock_offset = sandbox.null }
      recovers(c)
    end)
  end)

  describe("FHIR server", function()
    it("401 twice: auth, after exactly one retry with a new token", function()
      local c = configure()
      assert(c:patient { id = JANE })
      local before = core.stats()
      sb:fault { target = "fhir", status = 401 }
      fails_with("auth", function() return c:patient { id = JANE } end)
      local after = core.stats()
      assert.equal(1, after.retries_401 - before.retries_401)
      assert.equal(1, after.token_requests - before.token_requests)
      recovers(c)
    end)

    it("403: auth, with the OperationOutcome text", function()
      local c = configure()
      sb:fault { target = "fhir", status = 403, content_type = "application/fhir+json",
                 body = '{"resourceType":"OperationOutcome","issue":[{"severity":"error",' ..
                        '"code":"forbidden","diagnostics":"app not activated"}]}' }
      local err = fails_with("auth", function() return c:patient { id = JANE } end)
      assert.equal("app not activated", err.outcome)
      recovers(c)
    end)

    it("503: unavailable after retries", function()
      local c = configure()
      sb:fault { target = "fhir", status = 503 }
      local before = core.stats().retries
      local err = fails_with("unavailable", function() return c:patient { id = JANE } end)
      assert.is_true(err.retryable)
      assert.is_true(core.stats().retries > before)
      recovers(c)
    end)

    it("slow: timeout within the deadline", function()
      local c = configure()
      assert(c:patient { id = JANE })
      sb:fault { target = "fhir", delay_ms = 3000 }
      fails_with("timeout", function() return c:patient { id = JANE } end)
      recovers(c)
    end)

    it("connection reset in the middle of a body: network", function()
      local c = configure()
      assert(c:patient { id = JANE })
      sb:fault { target = "fhir", truncate = true, content_type = "application/fhir+json",
                 body = string.rep('{"resourceType":"Patient"}', 200) }
      fails_with("network", function() return c:patient { id = JANE } end)
      recovers(c)
    end)
  end)

  describe("transport", function()
    it("DNS failure: network", function()
      local c = configure { fhir_base = "https://ehr.example.invalid/fhir/r4/X" }
      fails_with("network", function() return c:patient { id = JANE } end)
    end)

    it("a certificate from the wrong CA: tls", function()
      local c = configure { ca_file = sb.wrong_ca_file }
      local err = fails_with("tls", function() return c:patient { id = JANE } end)
      assert.is_false(err.retryable)
    end)
  end)

  describe("request budget", function()
    it("fails fast past the practice's budget, token calls included", function()
      local c = configure { rate_limit = 4 }
      -- discovery + token + 2 reads = 4 requests
      assert(c:patient { id = JANE })
      assert(c:patient { id = JANE })
      local seen = sb:stats().fhir_requests
      local err = fails_with("rate_limited", function() return c:patient { id = JANE } end)
      assert.is_true(err.retryable)
      assert.equal(seen, sb:stats().fhir_requests)
      assert.is_true(core.stats().rate_limit_rejections > 0)
    end)

    it("is shared by every client and state of the practice", function()
      local c1 = configure { rate_limit = 3 }
      local c2 = assert(ecw.configure { fhir_base = c1:info().fhir_base, client_id = CLIENT_ID,
        private_key = key.path, kid = kid, ca_file = sb.ca_file, rate_limit = 3, name = "other" })
      assert(c1:patient { id = JANE })            -- discovery, token, read
      fails_with("rate_limited", function() return c2:patient { id = JANE } end)
    end)

    it("vendor ecw budgets 250/min by default; 0 turns it off", function()
      local c = configure { rate_limit = 0 }
      for _ = 1, 10 do assert(c:patient { id = JANE }) end
    end)
  end)

  describe("circuit breaker", function()
    it("opens after N failures, fails fast, then lets a probe through", function()
      local c = configure { breaker_threshold = 3, breaker_cooldown_ms = 1000 }
      assert(c:patient { id = JANE })
      sb:fault { target = "fhir", status = 503 }
      fails_with("unavailable", function() return c:patient { id = JANE } end)
      local seen = sb:stats().fhir_requests
      local t0 = core.now_ms()
      local err = fails_with("unavailable", function() return c:patient { id = JANE } end)
      assert.is_true(core.now_ms() - t0 < 100, "an open breaker answers at once")
      assert.matches("fail fast", err.message)
      assert.equal(seen, sb:stats().fhir_requests)
      sb:clear_faults()
      os.execute("sleep 1.1")
      recovers(c)
      assert(c:patient { id = JANE })
    end)
  end)

  describe("429 without Retry-After (eCW)", function()
    it("blocks until the next minute boundary, then recovers", function()
      local ct = configure()
      local cf = configure()
      assert(cf:patient { id = JANE })
      sb:fault { target = "token", status = 429, times = 1 }
      sb:fault { target = "fhir", status = 429, times = 1 }
      fails_with("rate_limited", function() return ct:patient { id = JANE } end)
      fails_with("rate_limited", function() return cf:patient { id = JANE } end)
      local token_seen, fhir_seen = sb:stats().token_requests, sb:stats().fhir_requests
      fails_with("rate_limited", function() return ct:patient { id = JANE } end)
      fails_with("rate_limited", function() return cf:patient { id = JANE } end)
      assert.equal(token_seen, sb:stats().token_requests)
      assert.equal(fhir_seen, sb:stats().fhir_requests)
      -- wait for the wall-clock minute to turn over
      local wait = 60 - os.time() % 60 + 0.3
      os.execute(string.format("sleep %.1f", wait))
      recovers(ct)
      recovers(cf)
    end)
  end)
end)
