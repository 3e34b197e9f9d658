-- Logging (issue 6, item 6): ecw.set_logger / set_log_level / log_level,
-- the FreeSWITCH default, the ECW_LOG_FILE debugging aid, what a line
-- says and what it never says, and the private key file's permissions.
package.path = "./lua/?.lua;./?.lua;" .. package.path
package.cpath = (_VERSION == "Lua 5.3" and "build/5.3/?.so;" or "build/5.4/?.so;") .. package.cpath

local sandbox = require "spec.support.sandbox"
local data = require "sandbox.data"
local core = require "ecw.core"
local ecw = require "ecw"
local log = require "ecw.log"
local cjson = require "cjson"

local CLIENT_ID = "ecw-logging-spec-client"
local LUA = "lua" .. _VERSION:match("%d+%.%d+")

local function word(s)
  return "%f[%w]" .. s:gsub("%p", "%%%0") .. "%f[%W]"
end

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1", "r"))
  local out = p:read("a")
  local ok = p:close()
  return ok, out
end

-- Mode bits of a file, for when the core has no file_mode yet.
local function stat_mode(path)
  local ok, out = sh("stat -c %a '" .. path .. "'")
  local oct = ok and out:match("^(%d+)")
  return oct and tonumber(oct, 8) or nil
end

describe("ecw logging", function()
  local sb, dir, key, kid
  local practice_n = 0
  local lines

  local function capture(level)
    lines = {}
    ecw.set_logger(function(lvl, msg)
      lines[#lines + 1] = lvl .. " " .. msg
    end, level or "debug")
  end

  local function text()
    return table.concat(lines, "\n")
  end

  local function configure(extra)
    practice_n = practice_n + 1
    local practice = string.format("LOGPRACTICE%02d", practice_n)
    local opts = {
      fhir_base = sb:fhir_base_for(practice), client_id = CLIENT_ID,
      private_key = key.path, kid = kid, ca_file = sb.ca_file,
    }
    for k, v in pairs(extra or {}) do
      opts[k] = v
    end
    return assert(ecw.configure(opts)), practice
  end

  setup(function()
    sb = sandbox.start { tls = true }
    dir = sandbox.tmpdir("ecw-logging-spec")
    key = sandbox.keygen(dir, "RS384")
    kid = assert(core.jwk(key.path)).kid
    sb:register { client_id = CLIENT_ID, kid = kid, key = key }
  end)

  teardown(function()
    ecw.set_logger(nil, "warn")
    if sb then sb:stop() end
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  after_each(function()
    ecw.set_logger(nil, "warn")
    rawset(_G, "freeswitch", nil)
    sb:clear_faults()
    sb:config { grant_scope = sandbox.null, next_link_origin = sandbox.null }
  end)

  describe("the API", function()
    it("passes (level, message) at or above the threshold", function()
      configure()
      capture("info")
      assert(ecw.patient { id = data.fixtures.jane })
      assert.equal(1, #lines)
      assert.matches("^info call ", lines[1])
      capture("warn")
      assert(ecw.patient { id = data.fixtures.jane })
      assert.same({}, lines)
      capture("debug")
      assert(ecw.patient { id = data.fixtures.jane })
      assert.matches("^debug request ", lines[1])
      assert.matches("^info call ", lines[#lines])
    end)

    it("sets the level alone, by function or configure option", function()
      capture("debug")
      assert.equal("debug", ecw.set_log_level("error"))
      configure()
      assert(ecw.patient { id = data.fixtures.jane })
      assert.same({}, lines)
      configure { log_level = "info" }
      assert(ecw.patient { id = data.fixtures.jane })
      assert.equal(1, #lines)
      assert.equal("info", ecw.set_log_level("warn"))
    end)

    it("returns the previous logger and level", function()
      local function f() end
      local prev_fn, prev_level = ecw.set_logger(f, "info")
      assert.is_nil(prev_fn)
      assert.equal("warn", prev_level)
      prev_fn, prev_level = ecw.set_logger(nil)
      assert.equal(f, prev_fn)
      assert.equal("info", prev_level)
    end)

    it("raises for bad arguments", function()
      assert.has_error(function() ecw.set_logger("print") end)
      assert.has_error(function() ecw.set_logger(print, "verbose") end)
      assert.has_error(function() ecw.set_log_level("trace") end)
      assert.has_error(function() ecw.set_log_level() end)
      local ok, msg = pcall(function()
        ecw.configure { fhir_base = "https://x", client_id = "x", private_key = "x", kid = "x",
                        log_level = "loud" }
      end)
      assert.is_false(ok)
      assert.matches("ecw_logging_spec.lua:%d+: ecw.configure: 'log_level' must be", msg)
    end)

    it("keeps argument errors at the caller's line through the logging wrapper", function()
      local c = configure()
      capture("debug")
      for _, f in ipairs({
        function() c.info() end,
        function() c.close() end,
        function() c:start("nope") end,
        function() ecw.start("patient", { foo = 1 }) end,
        function() ecw.start("read", "Patient", function() end) end,
        function() c:warm(5) end,
        function() ecw.patient { phone = 1 } end,
        function() c:medications(42) end,
        function() ecw.set_logger("print") end,
      }) do
        local ok, msg = pcall(f)
        assert.is_false(ok)
        assert.matches("ecw_logging_spec%.lua:%d+: ecw%.", msg)
      end
    end)

    it("survives a logger that raises", function()
      configure()
      ecw.set_logger(function() error("broken logger") end, "debug")
      local p = assert(ecw.patient { id = data.fixtures.jane })
      assert.equal(data.fixtures.jane, p.id)
      local _, err = ecw.read("Patient", "p-9999")
      assert.equal("not_found", err.code)
    end)

    it("is silenced by set_logger(false), even under FreeSWITCH", function()
      configure()
      local console = {}
      rawset(_G, "freeswitch", { consoleLog = function(l, m) console[#console + 1] = l .. m end })
      ecw.set_logger(false, "debug")
      ecw.read("Patient", "p-9999")
      assert.same({}, console)
    end)
  end)

  describe("under FreeSWITCH", function()
    it("goes to freeswitch.consoleLog at warn and above by default", function()
      configure()
      local console = {}
      rawset(_G, "freeswitch", { consoleLog = function(level, msg)
        console[#console + 1] = { level, msg }
      end })
      assert(ecw.patient { id = data.fixtures.jane })   -- info: not shown
      assert.same({}, console)
      sb:fault { target = "fhir", status = 200, times = 1, body = "<html>", content_type = "text/html" }
      ecw.read("Patient", data.fixtures.jane)
      assert.equal(1, #console)
      assert.equal("WARNING", console[1][1])
      assert.matches("^ecw: call .*code=bad_response", console[1][2])
      assert.equal("\n", console[1][2]:sub(-1))
      ecw.set_log_level("debug")
      assert(ecw.patient { id = data.fixtures.jane })
      assert.equal("DEBUG", console[2][1])
      assert.equal("INFO", console[#console][1])
    end)

    it("is silent without FreeSWITCH and without a logger", function()
      configure()
      rawset(_G, "freeswitch", { })                      -- no consoleLog
      ecw.set_log_level("debug")
      assert(ecw.patient { id = data.fixtures.jane })
      rawset(_G, "freeswitch", nil)
      assert(ecw.patient { id = data.fixtures.jane })
      if not os.getenv("ECW_LOG_FILE") then               -- the PHI scan run sets it
        assert.is_false(log.enabled("error"))
      end
    end)
  end)

  describe("what a line says", function()
    it("summarises each call: method, code, time, requests, pages, phone forms, tokens", function()
      configure()
      capture("info")
      local _, err = ecw.patient { phone = "5550100199" }
      assert.equal("ambiguous", err.code)
      assert.equal(1, #lines)
      local l = lines[1]
      assert.matches("^info call ", l)
      for _, f in ipairs({ "method=ecw.patient", "code=ambiguous", "count=2", "requests=1", "pages=1",
                           "phone_forms=1", "token_requests=1", "http_requests=3" }) do
        assert.matches(f, l, 1, true)
      end
      assert.matches(" ms=%d+", l)
      capture("info")
      local list = assert(ecw.patients { family = "Paging" })
      assert.equal(60, #list)
      assert.matches("code=ok", lines[1], 1, true)
      assert.matches("pages=3", lines[1], 1, true)
      assert.matches("results=60", lines[1], 1, true)
      assert.matches("token_cache_hits=3", lines[1], 1, true)
      assert.is_nil(lines[1]:find("token_requests", 1, true))
      capture("info")
      ecw.patient { phone = "+15550109999" }
      assert.matches("code=not_found", lines[1], 1, true)
      assert.matches("phone_forms=4", lines[1], 1, true)
    end)

    it("logs failures at warn or error with the status, never the outcome text", function()
      configure()
      capture("debug")
      sb:fault { target = "fhir", status = 400, times = 1, content_type = "application/fhir+json",
        body = cjson.encode { resourceType = "OperationOutcome", issue = { {
          severity = "error", code = "invalid", diagnostics = "no such family Doe (born 1970-03-01)" } } } }
      local _, err = ecw.search("Patient", { family = "Doe" })
      assert.equal("http", err.code)
      local l = lines[#lines]
      assert.matches("^warn call ", l)
      assert.matches("status=400", l, 1, true)
      assert.matches("outcome=true", l, 1, true)
      assert.is_nil(text():find("Doe", 1, true))
      assert.is_nil(text():find("1970", 1, true))
      capture("debug")
      configure { client_id = "not-registered" }
      _, err = ecw.patient { id = data.fixtures.jane }
      assert.equal("auth", err.code)
      assert.matches("^error call .*code=auth", lines[#lines])
      assert.matches("cause=invalid_client", lines[#lines], 1, true)
      assert.is_nil(text():find("not-registered", 1, true))
    end)

    it("reports refused scopes and next links", function()
      capture("debug")
      configure { scopes = { "system/Patient.read" } }
      local _, err = ecw.read("Practitioner", data.fixtures.practitioner)
      assert.equal("scope", err.code)
      assert.matches("warn scope_refused method=ecw.read scope=system/Practitioner.read type=Practitioner",
        text(), 1, true)
      capture("debug")
      configure()
      sb:config { next_link_origin = "https://127.0.0.2:1" }
      local _, meta = assert(ecw.search("Patient", { family = "Paging" }))
      assert.equal("origin", meta.truncated)
      assert.matches("warn next_link_refused reason=origin type=Patient", text(), 1, true)
      assert.matches("truncated=true", text(), 1, true)
      assert.is_nil(text():find("127.0.0.2", 1, true))
    end)

    it("reports configuration with the host only", function()
      capture("debug")
      local _, practice = configure { scopes = "system/Patient.read system/Coverage.read" }
      local l = lines[#lines]
      assert.matches("^debug configure ", l)
      assert.matches("host=127.0.0.1:" .. sb.port, l, 1, true)
      assert.matches("scopes=2", l, 1, true)
      for _, secret in ipairs({ practice, CLIENT_ID, kid, key.path, "fhir/r4", "system/" }) do
        assert.is_nil(l:find(secret, 1, true), secret)
      end
    end)

    it("keeps token counts out of per-request lines and tokens out of everything", function()
      configure()
      capture("debug")
      assert(ecw.warm { "Patient", "Practitioner" })
      local p = assert(ecw.patient { phone = "5550100123" })
      assert(ecw.practitioner(p))
      assert(ecw.medications(p))
      assert(ecw.allergies(p))
      assert(ecw.coverage(p))
      assert(ecw.encounters(p))
      local _ = ecw.start("patient", { id = data.fixtures.jane }):wait(5000)
      local all = text()
      for _, t in ipairs(sb:stats().issued_tokens) do
        assert.is_nil(all:find(t, 1, true), "an access token is in the log")
      end
      assert.is_nil(all:find("eyJ", 1, true))
      assert.is_nil(all:find("BEGIN", 1, true))
      assert.matches("debug async_done code=ok method=ecw.patient", all, 1, true)
    end)

    it("never carries PHI, inputs, ids or query strings, at debug", function()
      capture("debug")
      configure { phone_search = "all" }
      local inputs = {}
      local function run(fn, ...)
        for _, v in ipairs({ ... }) do inputs[#inputs + 1] = v end
        local ok, e = pcall(fn)
        assert(ok, e)
      end
      run(function() ecw.patient { phone = "+1 (555) 010-0199" } end, "555", "0199")
      run(function() ecw.patient { phone = "5550100199", birthdate = "1970-03-01" } end, "1970")
      run(function() ecw.patients { family = "Doe", given = "Jane" } end, "Doe", "Jane")
      run(function() ecw.patient { identifier = data.MRN_SYSTEM .. "|MRN-0001001" } end, "MRN", "urn:")
      run(function() ecw.patient { name = "Smith", birthdate = "1955-12-31" } end, "Smith", "1955")
      run(function() ecw.patient { id = data.fixtures.null_gender_patient } end, "p-1004")
      run(function()
        local p = ecw.patient { id = data.fixtures.jane }
        ecw.practitioner(p)
        ecw.medications(p, { status = "all" })
        ecw.say.summary(p, { allergies = ecw.allergies(p) })
      end, "p-1001", "pr-1001", "Lisinopril", "Example")
      run(function() ecw.read("Patient", "p-9999") end, "p-9999")
      run(function() ecw.search("Patient", { family = "Paging", _count = 50 }) end, "Paging", "_count")
      sb:fault { target = "fhir", status = 200, times = 1, content_type = "application/fhir+json",
        body = cjson.encode { resourceType = "OperationOutcome", issue = { { diagnostics = "Jane Doe 555-010-0199" } } } }
      run(function() ecw.patient { family = "Doe" } end)
      local all = text()
      assert.is_true(#lines > 20)
      for _, s in ipairs(data.phi) do
        assert.is_nil(all:find(word(s)), "PHI in the log: " .. s)
      end
      for _, s in ipairs(inputs) do
        assert.is_nil(all:find(s, 1, true), "call data in the log: " .. s)
      end
      for _, s in ipairs({ "?", "&", "=Patient/", "://", "Bearer", "family", "birthdate" }) do
        assert.is_nil(all:find(s, 1, true), s .. " in the log")
      end
      -- Every line has the documented shape.
      for _, l in ipairs(lines) do
        assert.matches("^%a+ [%w_]+[%w_ =%.:/%-%+%[%]]*$", l)
      end
    end)
  end)

  describe("the formatter", function()
    it("lets strings through only for the library's own keys and words", function()
      assert.equal("call code=ok method=ecw.patient n=3",
        log.format("call", { method = "ecw.patient", code = "ok", n = 3 }))
      assert.equal("call code=? family=? name=? x=?",
        log.format("call", { family = "Doe", name = "Jane", code = "not ok", x = {} }))
      assert.equal("event", log.format("bad event\n", nil))
      assert.equal("e type=?", log.format("e", { type = "Patient?family=Doe" }))
      assert.equal("e host=? ms=1.5", log.format("e", { host = ("h"):rep(200), ms = 1.5 }))
      assert.equal("e", log.format("e", { ["a b"] = 1, [1] = "x" }))
    end)
  end)

  describe("ECW_LOG_FILE", function()
    local function run_with_env(env, practice)
      local script = dir .. "/envlog.lua"
      local f = assert(io.open(script, "wb"))
      f:write(string.format([[
package.path = "./lua/?.lua;" .. package.path
package.cpath = "build/%s/?.so;" .. package.cpath
local ecw = require "ecw"
assert(ecw.configure { fhir_base = %q, client_id = %q, private_key = %q, kid = %q, ca_file = %q })
assert(ecw.patient { phone = "5550100123" })
local _, err = ecw.read("Patient", "p-9999")
assert(err.code == "not_found")
local p, e = ecw.start("patient", { id = "p-1001" }):wait(5000)
assert(p, e)
]], _VERSION:match("%d+%.%d+"), sb:fhir_base_for(practice), CLIENT_ID, key.path, kid, sb.ca_file))
      f:close()
      return sh(env .. " " .. LUA .. " " .. script)
    end

    it("appends every line at ECW_LOG_LEVEL, from every Lua state", function()
      local path = dir .. "/ecw-debug.log"
      local ok, out = run_with_env("ECW_LOG_FILE='" .. path .. "' ECW_LOG_LEVEL=debug", "LOGENV01")
      assert(ok, out)
      local f = assert(io.open(path, "rb"))
      local content = f:read("a")
      f:close()
      local n = 0
      for l in content:gmatch("[^\n]+") do
        n = n + 1
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ %a+ ecw: [%w_]+", l)
      end
      assert(n >= 6, content)
      assert.matches("debug ecw: configure ", content, 1, true)
      assert.matches("info ecw: call code=ok .*method=ecw.patient", content)
      assert.matches("info ecw: call code=not_found .*method=ecw.read", content)
      -- The started lookup ran in a worker thread's Lua state: its lines
      -- arrive too, and its outcome is reported where it was awaited.
      local _, calls = content:gsub("ecw: call code=ok[^\n]*method=ecw%.patient", "")
      assert.equal(2, calls)
      assert.matches("async_done code=ok method=ecw.patient", content, 1, true)
      assert.is_nil(content:find("LOGENV01", 1, true))
      assert.is_nil(content:find("p-1001", 1, true))
      assert.is_nil(content:find("5550100123", 1, true))
    end)

    it("filters by ECW_LOG_LEVEL", function()
      local path = dir .. "/ecw-warn.log"
      local ok, out = run_with_env("ECW_LOG_FILE='" .. path .. "' ECW_LOG_LEVEL=warn", "LOGENV02")
      assert(ok, out)
      local f = io.open(path, "rb")
      local content = f and f:read("a") or ""
      if f then f:close() end
      assert.equal("", content)
    end)
  end)

  describe("the private key file", function()
    local saved

    before_each(function()
      saved = core.file_mode
      if not saved then
        core.file_mode = stat_mode     -- until the core has its own
      end
    end)

    after_each(function()
      core.file_mode = saved
    end)

    local function key_with_mode(mode)
      local k = sandbox.keygen(dir, "ES384")
      assert(os.execute("chmod " .. mode .. " '" .. k.path .. "'"))
      local k_kid = assert(core.jwk(k.path)).kid
      sb:register { client_id = CLIENT_ID, kid = k_kid, key = k }
      return k, k_kid
    end

    it("is refused when other users can read or write it", function()
      for _, mode in ipairs({ "644", "604", "602", "666", "601" }) do
        local k, k_kid = key_with_mode(mode)
        capture("debug")
        local c, err = ecw.configure { name = "insecure", fhir_base = sb:fhir_base_for("LOGKEY"),
          client_id = CLIENT_ID, private_key = k.path, kid = k_kid, ca_file = sb.ca_file }
        assert.is_nil(c)
        assert.equal("config", err.code)
        assert.matches("accessible to other users (mode 0" .. mode .. ")", err.message, 1, true)
        assert.matches("allow_insecure_key", err.message, 1, true)
        assert.is_nil(err.message:find(k.path, 1, true))
        assert.matches("error key_file_refused mode=0" .. mode .. " reason=others", text(), 1, true)
      end
    end)

    it("works with allow_insecure_key, loudly", function()
      local k, k_kid = key_with_mode("644")
      capture("debug")
      local c = assert(ecw.configure { name = "insecure", fhir_base = sb:fhir_base_for("LOGKEY"),
        client_id = CLIENT_ID, private_key = k.path, kid = k_kid, ca_file = sb.ca_file,
        allow_insecure_key = true })
      assert.matches("error key_file_insecure allowed=true mode=0644 reason=others", text(), 1, true)
      assert(c:patient { id = data.fixtures.jane })
    end)

    it("warns when the group can read it, and works", function()
      for _, mode in ipairs({ "640", "660", "620" }) do
        local k, k_kid = key_with_mode(mode)
        capture("debug")
        local c = assert(ecw.configure { name = "group", fhir_base = sb:fhir_base_for("LOGKEY"),
          client_id = CLIENT_ID, private_key = k.path, kid = k_kid, ca_file = sb.ca_file })
        assert.matches("warn key_file_insecure mode=0" .. mode .. " reason=group", text(), 1, true)
        assert(c:patient { id = data.fixtures.jane })
      end
    end)

    it("says nothing about a 0600 or 0400 key", function()
      for _, mode in ipairs({ "600", "400" }) do
        local k, k_kid = key_with_mode(mode)
        capture("debug")
        assert(ecw.configure { name = "fine", fhir_base = sb:fhir_base_for("LOGKEY"),
          client_id = CLIENT_ID, private_key = k.path, kid = k_kid, ca_file = sb.ca_file })
        assert.is_nil(text():find("key_file", 1, true))
      end
    end)

    it("leaves a missing file to the core's config error", function()
      local c, err = ecw.configure { name = "missing", fhir_base = sb:fhir_base_for("LOGKEY"),
        client_id = CLIENT_ID, private_key = dir .. "/nope.pem", kid = "k", ca_file = sb.ca_file }
      assert.is_nil(c)
      assert.equal("config", err.code)
    end)
  end)
end)
