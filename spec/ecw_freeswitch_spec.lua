-- examples/freeswitch/receptionist.lua, run against the sandbox with a
-- stand-in for FreeSWITCH's session and freeswitch objects (only the
-- telephony side is faked; every lookup is a real HTTPS request).
package.path = "./lua/?.lua;./?.lua;" .. package.path
package.cpath = (_VERSION == "Lua 5.3" and "build/5.3/?.so;" or "build/5.4/?.so;") .. package.cpath

local sandbox = require "spec.support.sandbox"
local data = require "sandbox.data"
local core = require "ecw.core"

local SCRIPT = "examples/freeswitch/receptionist.lua"
local CLIENT_ID = "ecw-freeswitch-spec"

describe("examples/freeswitch/receptionist.lua", function()
  local sb, dir, globals
  local practice_n = 0

  setup(function()
    sb = sandbox.start { tls = true }
    dir = sandbox.tmpdir("ecw-fs-spec")
    local key = sandbox.keygen(dir, "RS384")
    local kid = assert(core.jwk(key.path)).kid
    sb:register { client_id = CLIENT_ID, kid = kid, key = key }
    globals = { ecw_client_id = CLIENT_ID, ecw_private_key = key.path, ecw_kid = kid }
  end)

  teardown(function()
    if sb then sb:stop() end
    if dir then os.execute("rm -rf '" .. dir .. "'") end
    _G.session, _G.freeswitch = nil, nil
  end)

  after_each(function()
    sb:clear_faults()
  end)

  -- Plays one call; digits are what the caller keys in, in order.
  local function call(caller_id, digits, extra_globals)
    practice_n = practice_n + 1
    local g = {}
    for k, v in pairs(globals) do g[k] = v end
    g.ecw_fhir_base = sb:fhir_base_for(string.format("FS%02d", practice_n))
    g.ecw_ca_file = sb.ca_file      -- in production: the system CA store
    for k, v in pairs(extra_globals or {}) do g[k] = v ~= false and v or nil end
    local rec = { spoken = {}, logs = {}, prompts = {}, events = {} }
    local http0 = core.stats().http_requests
    -- luacheck: push ignore 212 (the stand-in methods ignore self)
    local session = {}
    function session:getVariable(k)
      if k == "caller_id_number" then return caller_id end
      return nil
    end
    function session:ready() return not rec.hungup and not rec.transfer end
    function session:answer()
      rec.answered = true
      rec.http_before_answer = core.stats().http_requests - http0
    end
    function session:speak(text) rec.spoken[#rec.spoken + 1] = text end
    function session:playAndGetDigits(_, _, _, _, _, prompt)
      rec.prompts[#rec.prompts + 1] = prompt
      return table.remove(digits, 1) or ""
    end
    function session:transfer(dest) rec.transfer = dest end
    function session:hangup() rec.hungup = true end
    -- luacheck: pop
    local freeswitch = {
      consoleLog = function(level, msg) rec.logs[#rec.logs + 1] = level .. " " .. msg end,
      getGlobalVariable = function(k) return g[k] end,
      Event = function(_, subclass)
        local e = { subclass = subclass, headers = {} }
        function e:addHeader(k, v) self.headers[k] = v end
        function e:fire() rec.events[#rec.events + 1] = self end
        return e
      end,
    }
    _G.session, _G.freeswitch = session, freeswitch
    local ok, err = pcall(dofile, SCRIPT)
    _G.session, _G.freeswitch = nil, nil
    assert(ok, err)
    return rec
  end

  local function word(s)
    return "%f[%w]" .. s:gsub("%p", "%%%0") .. "%f[%W]"
  end

  local function assert_logs_clean(rec, ...)
    local text = table.concat(rec.logs)
    for _, s in ipairs(data.phi) do
      assert.is_nil(text:find(word(s)), "PHI in log: " .. s)
    end
    for _, s in ipairs({ ... }) do
      assert.is_nil(text:find(s, 1, true), "call data in log: " .. s)
    end
  end

  local function spoken(rec)
    return table.concat(rec.spoken, " | ")
  end

  it("tells apart two patients on one line and files a refill", function()
    local rec = call("+15550100199", { "03011970", "2", "1" })
    assert.is_true(rec.answered)
    assert.is_true(rec.http_before_answer > 0, "lookup must happen before answer")
    assert.matches("more than one patient", rec.prompts[1], 1, true)
    assert.matches("Hello Jane.", spoken(rec), 1, true)
    assert.matches("For Lisinopril 10 mg tablet, press 1.", rec.prompts[3], 1, true)
    assert.matches("refill request for Lisinopril 10 mg tablet", spoken(rec), 1, true)
    assert.equal(1, #rec.events)
    assert.equal("ecw::refill_request", rec.events[1].subclass)
    assert.equal(data.fixtures.jane, rec.events[1].headers["Patient-ID"])
    assert.equal("mr-1", rec.events[1].headers["MedicationRequest-ID"])
    assert.is_true(rec.hungup)
    assert.is_nil(rec.transfer)
    assert_logs_clean(rec, "5550100199", "1970", data.fixtures.jane, "mr-1", "Lisinopril")
  end)

  it("names the doctor of a caller found by caller ID alone", function()
    local rec = call("sip:+15550100123@pbx.example.com", { "1" })
    assert.matches("Hello Ursula.", spoken(rec), 1, true)
    assert.matches("Your primary care provider is Dr. Robert Sample.", spoken(rec), 1, true)
    assert.is_true(rec.hungup)
    assert_logs_clean(rec, "5550100123", data.fixtures.unique_phone_patient)
  end)

  it("transfers unknown and withheld callers", function()
    for _, caller_id in ipairs({ "+15550109999", "anonymous" }) do
      local rec = call(caller_id, {})
      assert.equal("1000", rec.transfer)
      assert.matches("not_found", table.concat(rec.logs), 1, true)
      assert_logs_clean(rec, "5550109999")
    end
  end)

  it("transfers when the date of birth does not match", function()
    local rec = call("5550100199", { "12311999" })
    assert.equal("1000", rec.transfer)
    assert.matches("not_found", table.concat(rec.logs), 1, true)
    assert_logs_clean(rec, "1999")
  end)

  it("transfers when the EHR is down, logging only the code", function()
    sb:fault { target = "fhir", status = 503, times = 10 }   -- outlasts the retries
    local rec = call("+15550100123", {})
    assert.equal("1000", rec.transfer)
    assert.matches("unavailable", table.concat(rec.logs), 1, true)
    assert_logs_clean(rec, "5550100123")
  end)

  it("transfers when not configured", function()
    local rec = call("+15550100123", {}, { ecw_kid = false })
    assert.equal("1000", rec.transfer)
    assert.matches("missing setting ecw_kid", table.concat(rec.logs), 1, true)
  end)
end)
