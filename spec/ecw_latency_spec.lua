-- Voice latency (issue 5): refresh ahead off the call path, warm-up,
-- deadlines that hold while the token endpoint hangs, and lookups started
-- on worker threads (start / wait / cancel), including states closed with
-- lookups still in flight.  Nothing here asserts how fast anything is;
-- bounds on elapsed time are only "well before the stall we injected".
package.path = "./lua/?.lua;./?.lua;" .. package.path
package.cpath = (_VERSION == "Lua 5.3" and "build/5.3/?.so;" or "build/5.4/?.so;") .. package.cpath

local sandbox = require "spec.support.sandbox"
local host = require "spec.support.host"
local core = require "ecw.core"
local ecw = require "ecw"

local CLIENT_ID = "ecw-latency-spec"
local JANE_PHONE = "+15550100199"
local URSULA_PHONE = "5550100123"

describe("voice latency", function()
  local sb, dir, key, kid
  local n = 0

  local function configure(extra)
    n = n + 1
    local practice = string.format("LAT%02d", n)
    local opts = {
      fhir_base = sb:fhir_base_for(practice), client_id = CLIENT_ID,
      private_key = key.path, kid = kid, ca_file = sb.ca_file,
      name = practice,
    }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return assert(ecw.configure(opts)), practice, opts
  end

  local function delta(f)
    local a, sa = core.stats(), sb:stats()
    f()
    local b, sbb = core.stats(), sb:stats()
    local d = {}
    for k, v in pairs(b) do d[k] = v - (a[k] or 0) end
    d.sb_token_requests = sbb.token_requests - sa.token_requests
    d.sb_connections = sbb.connections - sa.connections
    return d
  end

  setup(function()
    sb = sandbox.start { tls = true }
    dir = sandbox.tmpdir("ecw-latency-spec")
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
    sb:config { token_lifetime = 300 }
  end)

  it("refreshes in the background while callers keep going", function()
    sb:config { token_lifetime = 3 }
    local c = configure()
    local waits, lookups = 0, 0
    local d = delta(function()
      local stop = core.now_ms() + 5500
      while core.now_ms() < stop do
        local p = assert(c:patient { phone = URSULA_PHONE })
        assert.equal("p-1003", p.id)
        lookups = lookups + 1
        os.execute("sleep 0.05")
      end
    end)
    waits = d.token_waits + d.token_blocking_fetches - 1   -- the cold start
    assert.is_true(lookups > 30)
    assert.equal(1, d.token_blocking_fetches)              -- only the first
    assert.equal(0, waits)
    assert.is_true(d.token_refreshes_ahead >= 2, "refreshes: " .. d.token_refreshes_ahead)
    assert.equal(d.token_requests, d.sb_token_requests)
    local s = sb:stats()
    assert.equal(0, s.expired_uses)
  end)

  it("honours the deadline while the token endpoint hangs", function()
    local c = configure()
    sb:fault { target = "token", delay_ms = 4000, times = 1 }
    local t0 = core.now_ms()
    local p, err = c:patient({ phone = JANE_PHONE }, { timeout_ms = 300 })
    local took = core.now_ms() - t0
    assert.is_nil(p)
    assert.equal("timeout", err.code)
    assert.is_true(err.retryable)
    assert.is_true(took < 2000, "took " .. took .. " ms")
  end)

  it("warms tokens and the connection before the first call", function()
    local c = configure()
    local warm = delta(function()
      assert(c:warm { "Patient", "MedicationRequest" })
    end)
    assert.equal(2, warm.sb_token_requests)
    local first = delta(function()
      local p = assert(c:patient { phone = URSULA_PHONE })
      assert(c:medications(p))
    end)
    assert.equal(0, first.token_requests)
    assert.equal(0, first.connections_opened)
    assert.equal(2, first.token_cache_hits)
  end)

  it("warms explicit scope sets", function()
    local c = configure()
    local d = delta(function()
      assert(c:warm { scopes = { "system/Patient.read", { "system/Coverage.read" } } })
    end)
    assert.equal(2, d.token_requests)
    assert.has_error(function() c:warm { scopes = "x" } end)
  end)

  it("start then wait gives what the blocking call gives", function()
    local c = configure()
    local blocking = assert(c:patient { phone = URSULA_PHONE })
    local req = assert(c:start("patient", { phone = URSULA_PHONE }))
    local p, err = req:wait(3000)
    assert.is_nil(err)
    assert.same(blocking, p)
    assert.equal("done", req:status())
    -- ambiguity comes back as the same error
    req = assert(c:start("patient", { phone = JANE_PHONE }))
    local none, e2 = req:wait(3000)
    assert.is_nil(none)
    assert.equal("ambiguous", e2.code)
    assert.equal(2, e2.count)
    assert.equal(e2.message, tostring(e2))
  end)

  it("wait can run out before the lookup, and be called again", function()
    local c = configure()
    assert(c:warm { "Patient" })
    sb:fault { target = "fhir", delay_ms = 400, times = 1 }
    local req = assert(c:start("patient", { phone = URSULA_PHONE }))
    local p, err = req:wait(10)
    assert.is_nil(p)
    assert.equal("timeout", err.code)
    p = assert(req:wait(5000))
    assert.equal("p-1003", p.id)
  end)

  it("cancel stops a lookup in flight", function()
    local c = configure()
    assert(c:warm { "Patient" })
    sb:fault { target = "fhir", delay_ms = 3000, times = 1 }
    local req = assert(c:start("patient", { phone = URSULA_PHONE }))
    os.execute("sleep 0.2")
    local t0 = core.now_ms()
    req:cancel()
    local p, err = req:wait(5000)
    assert.is_nil(p)
    assert.equal("cancelled", err.code)
    assert.is_true(core.now_ms() - t0 < 2500)
  end)

  it("raises on bad arguments in the script, not on the worker", function()
    local c = configure()
    assert.has_error(function() c:start("nope") end)
    assert.has_error(function() c:start("patient", { telephone = "1" }) end)
    assert.has_error(function() c:start("patient", { phone = 5 }) end)
  end)

  it("an abandoned request is collected safely", function()
    local c = configure()
    for _ = 1, 20 do
      assert(c:start("patient", { phone = URSULA_PHONE }))
    end
    collectgarbage()
    collectgarbage()
    local req = assert(c:start("patient", { phone = URSULA_PHONE }))
    assert.equal("p-1003", assert(req:wait(5000)).id)
  end)

  it("fails fast when the worker queue is full", function()
    local c = configure()
    assert(c:warm { "Patient" })
    core.set_workers(1, 2)
    sb:fault { target = "fhir", delay_ms = 500, times = 40 }
    local reqs, refused = {}, nil
    for _ = 1, 40 do
      local r, err = c:start("patient", { phone = URSULA_PHONE })
      if r then reqs[#reqs + 1] = r else refused = err end
    end
    core.set_workers(4, 128)
    assert.truthy(refused)
    assert.equal("unavailable", refused.code)
    assert.is_true(refused.retryable)
    for _, r in ipairs(reqs) do r:cancel() end
    for _, r in ipairs(reqs) do r:wait(5000) end
    sb:clear_faults()
  end)

  it("closing states with lookups in flight is safe (ecw-host)", function()
    local _, _, opts = configure()
    sb:fault { target = "fhir", delay_ms = 200, times = 20 }
    local ok, sum, out = host.run {
      script = "spec/host/start_and_leave.lua", threads = 8, calls = 40,
      env = { ECW_T_BASE = opts.fhir_base, ECW_T_CLIENT = CLIENT_ID,
              ECW_T_KEY = key.path, ECW_T_KID = kid, ECW_T_CA = sb.ca_file,
              ECW_T_PHONE = URSULA_PHONE },
    }
    assert.is_true(ok, out)
    assert.equal(40, sum.ok)
  end)
end)
