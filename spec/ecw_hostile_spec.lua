-- Hostile and broken FHIR answers (issue 6, item 3): every one gives a
-- clean `nil, err` with code bad_response (or the code its HTTP status
-- calls for), never a raise from inside ecw, never PHI from the body in a
-- message or a log line, and never memory beyond what the size cap allows.
-- The answers are injected with the sandbox's fault switch.
package.path = "./lua/?.lua;./?.lua;" .. package.path
package.cpath = (_VERSION == "Lua 5.3" and "build/5.3/?.so;" or "build/5.4/?.so;") .. package.cpath

local sandbox = require "spec.support.sandbox"
local data = require "sandbox.data"
local core = require "ecw.core"
local ecw = require "ecw"
local cjson = require "cjson"

local CLIENT_ID = "ecw-hostile-spec"
local FHIR_JSON = "application/fhir+json"

-- Words planted in hostile bodies: none may come out in a message or a log.
local PLANTED = { "Hostilia", "Venomsworth", "555-013-9999", "1911-11-11", "MRN-HOSTILE-1" }

local function patient_json(fields)
  local r = { resourceType = "Patient", id = "p-h1",
              name = { { use = "official", family = "Venomsworth", given = { "Hostilia" } } },
              birthDate = "1911-11-11",
              telecom = { { system = "phone", value = "555-013-9999" } },
              identifier = { { value = "MRN-HOSTILE-1" } } }
  for k, v in pairs(fields or {}) do
    if v == cjson.null then v = nil end
    r[k] = v
  end
  return r
end

local function bundle_of(resources, extra)
  local b = { resourceType = "Bundle", type = "searchset", entry = {} }
  for i, r in ipairs(resources) do
    b.entry[i] = { resource = r, search = { mode = "match" } }
  end
  for k, v in pairs(extra or {}) do
    b[k] = v
  end
  return cjson.encode(b)
end

-- gzip bytes of s, made by the gzip command.
local function gzip(s)
  local tmp = os.tmpname()
  local f = assert(io.open(tmp, "wb"))
  f:write(s)
  f:close()
  local p = assert(io.popen("gzip -c -9 < '" .. tmp .. "'", "r"))
  local out = p:read("a")
  p:close()
  os.remove(tmp)
  assert(#out > 18 and out:sub(1, 2) == "\31\139", "gzip failed")
  return out
end

describe("hostile FHIR answers", function()
  local sb, dir, key, kid
  local practice_n = 0
  local lines = {}

  local function configure(extra)
    practice_n = practice_n + 1
    local opts = {
      fhir_base = sb:fhir_base_for(string.format("HOST%02d", practice_n)), client_id = CLIENT_ID,
      private_key = key.path, kid = kid, ca_file = sb.ca_file,
    }
    for k, v in pairs(extra or {}) do
      opts[k] = v
    end
    return assert(ecw.configure(opts))
  end

  local function answer(body, content_type, extra)
    local f = { target = "fhir", status = 200, times = 1, body = body,
                content_type = content_type or FHIR_JSON }
    for k, v in pairs(extra or {}) do
      f[k] = v
    end
    sb:fault(f)
  end

  local function word(s)
    return "%f[%w]" .. s:gsub("%p", "%%%0") .. "%f[%W]"
  end

  local function assert_clean(text)
    for _, s in ipairs(PLANTED) do
      assert.is_nil(text:find(s, 1, true), "planted PHI in: " .. text)
    end
    for _, s in ipairs(data.phi) do
      assert.is_nil(text:find(word(s)), "PHI in: " .. text)
    end
  end

  -- A failed call: nil, an ecw error with `code`, and nothing planted in
  -- its message.  Runs fn under pcall: a raise fails the test with its text.
  local function fails(code, fn)
    local ok, value, err = pcall(fn)
    assert(ok, "raised: " .. tostring(value))
    assert.is_nil(value)
    assert.is_table(err)
    assert.equal(code, err.code, "got " .. tostring(err.code) .. ": " .. tostring(err.message))
    assert.is_string(err.message)
    assert_clean(err.message)
    return err
  end

  local function succeeds(fn)
    local ok, value, meta = pcall(fn)
    assert(ok, "raised: " .. tostring(value))
    assert(value ~= nil, "failed: " .. tostring(meta))
    return value, meta
  end

  setup(function()
    sb = sandbox.start { tls = true }
    dir = sandbox.tmpdir("ecw-hostile-spec")
    key = sandbox.keygen(dir, "RS384")
    kid = assert(core.jwk(key.path)).kid
    sb:register { client_id = CLIENT_ID, kid = kid, key = key }
    ecw.set_logger(function(_, msg) lines[#lines + 1] = msg end, "debug")
  end)

  teardown(function()
    ecw.set_logger(nil, "warn")
    if sb then sb:stop() end
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  after_each(function()
    sb:clear_faults()
    assert_clean(table.concat(lines, "\n"))
  end)

  describe("not JSON", function()
    it("is bad_response for HTML pages, text and empty bodies", function()
      configure()
      for _, case in ipairs({
        { "<html><body>Jane Doe is not here</body></html>", "text/html" },
        { "<html><body>error</body></html>", FHIR_JSON },
        { "Internal error for Venomsworth", "text/plain" },
        { "", FHIR_JSON },
        { "   ", FHIR_JSON },
        { "\0\0\0", FHIR_JSON },
      }) do
        answer(case[1], case[2])
        fails("bad_response", function() return ecw.read("Patient", "p-h1") end)
        answer(case[1], case[2])
        fails("bad_response", function() return ecw.patients { family = "Doe" } end)
      end
    end)

    it("is bad_response for JSON that is not an object", function()
      configure()
      for _, body in ipairs({ "null", "[]", "[{\"resourceType\":\"Patient\"}]", "\"Patient\"", "42", "true" }) do
        answer(body)
        fails("bad_response", function() return ecw.read("Patient", "p-h1") end)
      end
    end)

    it("is bad_response for truncated JSON", function()
      configure()
      local full = bundle_of({ patient_json() })
      for _, n in ipairs({ 1, 10, #full // 2, #full - 1 }) do
        answer(full:sub(1, n))
        fails("bad_response", function() return ecw.patients { family = "Venomsworth" } end)
      end
      answer(cjson.encode(patient_json()):sub(1, -2))
      fails("bad_response", function() return ecw.patient { id = "p-h1" } end)
    end)

    it("gives the status's code for HTML error pages", function()
      configure()
      sb:fault { target = "fhir", status = 404, times = 1, content_type = "text/html",
        body = "<html><h1>Not Found</h1>Venomsworth</html>" }
      local err = fails("not_found", function() return ecw.read("Patient", "p-h1") end)
      assert.is_nil(err.outcome)
      sb:fault { target = "fhir", status = 400, times = 1, content_type = "text/html",
        body = "<html><h1>Bad Request</h1></html>" }
      err = fails("http", function() return ecw.search("Patient", { family = "Doe" }) end)
      assert.equal(400, err.status)
      assert.is_nil(err.outcome)
    end)
  end)

  describe("OperationOutcome with status 200", function()
    it("is bad_response, with the outcome text kept out of the message", function()
      configure()
      local oo = cjson.encode { resourceType = "OperationOutcome", issue = {
        { severity = "error", code = "processing", diagnostics = "no match for Venomsworth 1911-11-11" } } }
      answer(oo)
      local err = fails("bad_response", function() return ecw.patient { family = "Venomsworth" } end)
      assert.equal("no match for Venomsworth 1911-11-11", err.outcome)
      answer(oo)
      fails("bad_response", function() return ecw.read("Patient", "p-h1") end)
      answer(oo)
      fails("bad_response", function() return ecw.medications("p-h1") end)
    end)

    it("copes with malformed issues", function()
      configure()
      for _, issue in ipairs({ "text", 42, { 1, 2 }, { { details = "x" } }, { { details = { text = 5 } } },
                               { { diagnostics = { "a" } } }, cjson.null }) do
        answer(cjson.encode { resourceType = "OperationOutcome", issue = issue })
        local err = fails("bad_response", function() return ecw.patients { family = "Doe" } end)
        assert.is_nil(err.outcome)
      end
    end)

    it("does not take an error status's OperationOutcome apart unsafely", function()
      configure()
      sb:fault { target = "fhir", status = 400, times = 1, body = '{"resourceType":"OperationOutcome","issue":"x"}',
        content_type = FHIR_JSON }
      local err = fails("http", function() return ecw.patients { family = "Doe" } end)
      assert.is_nil(err.outcome)
      sb:fault { target = "fhir", status = 404, times = 1, body = '{"resourceType":"OperationOutcome","issue":[[[[]]]]}',
        content_type = FHIR_JSON }
      fails("not_found", function() return ecw.read("Patient", "p-h1") end)
    end)
  end)

  describe("a Bundle with fields missing or of the wrong type", function()
    local bundles = {
      { resourceType = "Bundle" },
      { resourceType = "Bundle", entry = "x" },
      { resourceType = "Bundle", entry = 42 },
      { resourceType = "Bundle", entry = { resource = { resourceType = "Patient", id = "p-h1" } } },
      { resourceType = "Bundle", entry = { 1, "a", true, { 1 }, { resource = "x" }, { resource = { 1, 2 } },
                                           { resource = { resourceType = 5 } },
                                           { resource = { resourceType = { "Patient" } } },
                                           { search = "x" } } },
      { resourceType = "Bundle", link = "x", total = "many" },
      { resourceType = "Bundle", link = { 1, "next", { relation = "next" }, { relation = "next", url = 5 },
                                          { relation = { "next" }, url = "x" } } },
      { resourceType = "Bundle", link = { { relation = "next", url = "" } }, total = -1 },
      { resourceType = "Bundle", link = { { relation = "next", url = "not a url" } } },
      { resourceType = "Bundle", link = { { relation = "next", url = "javascript:alert(1)" } } },
      { resourceType = "Bundle", total = 1.5, entry = cjson.null, link = cjson.null },
    }

    it("finds nobody and never raises", function()
      configure()
      for i, b in ipairs(bundles) do
        answer(cjson.encode(b))
        local list = succeeds(function() return ecw.patients { family = "Doe" } end)
        assert.same({}, list, "bundle " .. i)
        answer(cjson.encode(b))
        fails("not_found", function() return ecw.patient { family = "Doe" } end)
        answer(cjson.encode(b))
        local rs = succeeds(function() return ecw.search("Patient", { family = "Doe" }) end)
        assert.same({}, rs, "bundle " .. i)
      end
    end)

    it("is bad_response for a resourceType that is not Bundle", function()
      configure()
      for _, rt in ipairs({ cjson.null, 5, "Patient", "Bundle ", { "Bundle" }, ("x"):rep(1000) }) do
        answer(cjson.encode { resourceType = rt, entry = {} })
        local err = fails("bad_response", function() return ecw.search("Patient", { family = "Doe" }) end)
        assert.is_nil(err.message:find("xxxxx", 1, true))
      end
      -- The server's text never reaches the message, only a type name.
      answer(cjson.encode { resourceType = "Venomsworth Hostilia", entry = {} })
      fails("bad_response", function() return ecw.search("Patient", { family = "Doe" }) end)
    end)

    it("shapes Patients whose fields have the wrong types", function()
      configure()
      local weird = {
        patient_json { name = "Venomsworth" },
        patient_json { id = "p-h2", name = { "Venomsworth", 5, { given = "Hostilia", family = { "x" } } } },
        patient_json { id = "p-h3", name = { { given = { 1, { "x" }, "Hostilia" }, text = 7, use = { "official" } } } },
        patient_json { id = "p-h4", birthDate = 19111111, gender = { "female" }, telecom = "555-013-9999" },
        patient_json { id = "p-h5", telecom = { 1, { system = "phone", value = 5550139999 },
                                                { system = "phone", value = { "x" }, period = "x" },
                                                { system = "phone", value = "555-013-9999", period = { ["end"] = 5 } } } },
        patient_json { id = "p-h6", identifier = "MRN-HOSTILE-1" },
        patient_json { id = "p-h7", identifier = { 1, { value = 5 }, { type = "MR", value = "x" },
                                                   { type = { coding = "x" }, value = "y" },
                                                   { type = { coding = { 1, { code = 5 } } }, value = "z" } } },
        patient_json { id = "p-h8", name = {}, telecom = {}, identifier = {}, active = "yes",
                       generalPractitioner = "Practitioner/x", extension = { { url = 5 } } },
      }
      answer(bundle_of(weird))
      local list = succeeds(function() return ecw.patients { family = "Venomsworth" } end)
      assert.equal(#weird, #list)
      for _, p in ipairs(list) do
        assert.is_string(p.id)
        for _, k in ipairs({ "name", "family", "given", "birthdate", "gender", "phone", "mrn" }) do
          assert(p[k] == nil or type(p[k]) == "string", k .. " is a " .. type(p[k]))
        end
        assert.is_table(p.given_names)
        assert.is_table(p.identifiers)
        -- And speech copes with them.
        local ok, e = pcall(ecw.say.summary, p)
        assert(ok, e)
      end
      assert.is_nil(list[4].birthdate)
      assert.is_nil(list[4].gender)
      assert.is_nil(list[4].phone)
      assert.equal("+15550139999", list[5].phone)
    end)

    it("is bad_response when a matching Patient has no valid id", function()
      configure()
      for _, id in ipairs({ cjson.null, 5, { "p-1" }, "", "../p-1", ("a"):rep(65), "p 1" }) do
        answer(bundle_of({ patient_json { id = id } }))
        fails("bad_response", function() return ecw.patients { family = "Venomsworth" } end)
        answer(bundle_of({ patient_json { id = id }, patient_json { id = "p-h2" } }))
        fails("bad_response", function() return ecw.patient { family = "Venomsworth" } end)
        answer(bundle_of({ patient_json { id = id } }))
        fails("bad_response", function() return ecw.patient { phone = "5550139999" } end)
      end
      -- ecw.search returns resources as the server sent them.
      answer(bundle_of({ patient_json { id = 5 } }))
      local rs = succeeds(function() return ecw.search("Patient", { family = "x" }) end)
      assert.equal(1, #rs)
    end)

    it("is bad_response when a read answers another resource", function()
      configure()
      answer(cjson.encode(patient_json { id = "p-1002" }))
      fails("bad_response", function() return ecw.read("Patient", "p-h1") end)
      answer(cjson.encode(patient_json { id = cjson.null }))
      fails("bad_response", function() return ecw.patient { id = "p-h1" } end)
      answer(cjson.encode(patient_json { id = 1 }))
      fails("bad_response", function() return ecw.read("Patient", "1") end)
      answer(bundle_of({ patient_json() }))
      fails("bad_response", function() return ecw.read("Patient", "p-h1") end)
    end)

    it("does not follow a practitioner reference of the wrong shape", function()
      configure()
      for _, gp in ipairs({ "Practitioner/pr-1", { 1 }, { { reference = 5 } }, { { reference = { "x" } } },
                            { { reference = "Practitioner/../Patient/p-1001" } },
                            { { reference = "Practitioner/pr-1%2F..%2Fmetadata" } },
                            { { reference = "https://127.0.0.2/fhir/Practitioner/pr-1" } } }) do
        local before = core.stats().http_requests
        local err = fails("not_found", function()
          return ecw.practitioner(patient_json { generalPractitioner = gp })
        end)
        assert.matches("practitioner", err.message)
        assert.equal(before, core.stats().http_requests)
      end
    end)

    it("shapes clinical records whose fields have the wrong types", function()
      configure()
      answer(bundle_of({
        { resourceType = "MedicationRequest", id = "m1", status = "active", dosageInstruction = "x",
          medicationCodeableConcept = 5, authoredOn = { "2020" } },
        { resourceType = "MedicationRequest", id = { "m2" }, status = "active",
          dosageInstruction = { 1, { text = 5 } }, medicationReference = "x", authoredOn = 2020 },
        { resourceType = "MedicationRequest", id = "m3", status = { "active" } },
      }))
      local meds = succeeds(function() return ecw.medications("p-1001") end)
      assert.equal(2, #meds)
      answer(bundle_of({
        { resourceType = "AllergyIntolerance", id = "a1", reaction = "x", clinicalStatus = "active",
          code = { coding = "x" }, criticality = 5 },
        { resourceType = "AllergyIntolerance", id = "a2", reaction = { { manifestation = "x" } },
          verificationStatus = { coding = { 1, { code = { "x" } } } } },
      }))
      local allergies = succeeds(function() return ecw.allergies("p-1001") end)
      assert.equal(2, #allergies)
      answer(bundle_of({
        { resourceType = "Coverage", id = "c1", class = "x", payor = { "x" }, period = "2020", status = 5 },
        { resourceType = "Coverage", id = "c2", class = { 1, { type = "plan" }, { type = { coding = { { code = "plan" } } }, name = 5 } },
          payor = { { display = { "x" } } }, period = { start = 2020 }, subscriberId = { "x" } },
      }))
      local cov = succeeds(function() return ecw.coverage("p-1001") end)
      assert.equal(2, #cov)
      answer(bundle_of({
        { resourceType = "Encounter", id = "e1", period = 5, class = "x", participant = { 1 }, type = "x",
          reasonCode = "x" },
        { resourceType = "Encounter", id = "e2", period = { start = { "x" } }, class = { code = 5 },
          participant = { { individual = "x" } }, type = { 1 }, reasonCode = { { coding = 5 } } },
        { resourceType = "Encounter", id = "e3", period = { start = "2020-01-01" } },
      }))
      local enc = succeeds(function() return ecw.encounters("p-1001") end)
      assert.equal(3, #enc)
      assert.equal("e3", enc[1].id)
      for _, list in ipairs({ meds, allergies, cov, enc }) do
        for _, r in ipairs(list) do
          assert(r.id == nil or type(r.id) == "string")
          assert(r.name == nil or type(r.name) == "string")
        end
        local ok, e = pcall(ecw.say.summary, { name = "x" }, { medications = meds, allergies = allergies })
        assert(ok, e)
      end
    end)
  end)

  describe("size and depth", function()
    local function nested(depth)
      return string.rep("[", depth) .. string.rep("]", depth)
    end

    it("refuses deep nesting without recursing", function()
      configure()
      -- The resource is level 1: 63 levels of arrays below it fit.
      local ok_body = '{"resourceType":"Patient","id":"p-h1","extension":' .. nested(63) .. '}'
      answer(ok_body)
      succeeds(function() return ecw.read("Patient", "p-h1") end)
      for _, depth in ipairs({ 64, 100, 5000, 200000 }) do
        answer('{"resourceType":"Patient","id":"p-h1","extension":' .. nested(depth) .. '}')
        fails("bad_response", function() return ecw.read("Patient", "p-h1") end)
      end
      answer('{"resourceType":"Bundle","entry":[' .. string.rep('{"a":', 10000) .. "1" ..
        string.rep("}", 10000) .. "]}")
      fails("bad_response", function() return ecw.patients { family = "Doe" } end)
    end)

    it("refuses numbers Lua cannot hold", function()
      configure()
      for _, n in ipairs({ "1e400", "-1e400" }) do
        answer('{"resourceType":"Bundle","total":' .. n .. ',"entry":[]}')
        fails("bad_response", function() return ecw.patients { family = "Doe" } end)
      end
      for _, n in ipairs({ "NaN", "Infinity", "0x10", "1e", "--1" }) do
        answer('{"resourceType":"Bundle","total":' .. n .. ',"entry":[]}')
        fails("bad_response", function() return ecw.patients { family = "Doe" } end)
      end
      answer('{"resourceType":"Bundle","total":1e-400,"entry":[]}')
      succeeds(function() return ecw.patients { family = "Doe" } end)
    end)

    it("handles huge strings under the cap", function()
      configure()
      local big = ("Venomsworth"):rep(40000)         -- 440 KB
      answer(cjson.encode(patient_json { name = { { family = big, given = { big } } } }))
      local p = succeeds(function() return ecw.patient { id = "p-h1" } end)
      assert.equal(#big, #p.family)
    end)

    it("handles a huge Bundle under the cap, in bounded time and memory", function()
      configure()
      local entries = {}
      for i = 1, 8000 do
        entries[i] = '{"resource":{"resourceType":"Patient","id":"p' .. i .. '"}}'
      end
      local body = '{"resourceType":"Bundle","entry":[' .. table.concat(entries, ",") .. ']}'
      assert(#body < 1024 * 1024)          -- the sandbox's admin body limit
      collectgarbage()
      local kb0 = collectgarbage("count")
      local t0 = core.now_ms()
      answer(body)
      local list = succeeds(function() return ecw.search("Patient", { family = "x" }) end)
      assert.equal(8000, #list)
      assert(core.now_ms() - t0 < 3000, "took " .. (core.now_ms() - t0) .. " ms")
      list = nil                              -- luacheck: ignore 311
      collectgarbage()
      assert(collectgarbage("count") - kb0 < 4096, "memory kept after the call")
    end)

    it("caps the body size", function()
      configure { max_body = 4096 }
      answer(cjson.encode(patient_json { text = { div = ("x"):rep(5000) } }))
      local err = fails("bad_response", function() return ecw.read("Patient", "p-h1") end)
      assert.is_false(err.retryable)
      -- Just under the cap is fine.
      local small = cjson.encode(patient_json { text = { div = ("x"):rep(3000) } })
      assert(#small < 4096)
      answer(small)
      succeeds(function() return ecw.read("Patient", "p-h1") end)
    end)

    it("decodes gzip, and caps the decompressed size", function()
      local gz = gzip(cjson.encode(patient_json()))
      configure { max_body = 65536 }
      answer(gz, FHIR_JSON, { headers = { ["Content-Encoding"] = "gzip" } })
      local p = succeeds(function() return ecw.patient { id = "p-h1" } end)
      assert.equal("Venomsworth", p.family)
      -- 1 MB of JSON compresses to about 1 KB: far below the cap on the
      -- wire, far above it once decompressed.
      local bomb = gzip('{"resourceType":"Patient","id":"p-h1","x":"' .. ("A"):rep(1024 * 1024) .. '"}')
      assert(#bomb < 65536)
      answer(bomb, FHIR_JSON, { headers = { ["Content-Encoding"] = "gzip" } })
      fails("bad_response", function() return ecw.read("Patient", "p-h1") end)
    end)

    it("stops a gzip bomb at the default cap", function()
      configure()                              -- max_body 8 MiB
      local bomb = gzip('{"resourceType":"Bundle","x":"' .. ("A"):rep(64 * 1024 * 1024) .. '"}')
      assert(#bomb < 512 * 1024)
      collectgarbage()
      local kb0 = collectgarbage("count")
      answer(bomb, FHIR_JSON, { headers = { ["Content-Encoding"] = "gzip" } })
      fails("bad_response", function() return ecw.patients { family = "Doe" } end)
      collectgarbage()
      assert(collectgarbage("count") - kb0 < 4096)
    end)

    it("calls a body that is not what its Content-Encoding says bad_response", function()
      configure()
      -- Without `times`: a core that retries the failure gets it again.
      sb:fault { target = "fhir", status = 200, body = cjson.encode(patient_json()),
        content_type = FHIR_JSON, headers = { ["Content-Encoding"] = "gzip" } }
      local ok, value, err = pcall(ecw.read, "Patient", "p-h1")
      assert(ok, value)
      assert.is_nil(value)
      assert_clean(err.message)
      -- curl reports CURLE_BAD_CONTENT_ENCODING; the core maps it.
      assert.equal("bad_response", err.code, "got " .. err.code .. " (" .. err.message .. ")")
    end)
  end)

  describe("content type and encoding of text", function()
    it("refuses a success body that is not labelled JSON", function()
      configure()
      local body = cjson.encode(patient_json())
      for _, ct in ipairs({ "text/html", "text/html; charset=utf-8", "application/fhir+xml", "text/plain",
                            "application/xml", "application/octet-stream", "" }) do
        answer(body, ct)
        fails("bad_response", function() return ecw.read("Patient", "p-h1") end)
      end
      for _, ct in ipairs({ "application/fhir+json", "application/json", "application/json+fhir",
                            "Application/FHIR+JSON; charset=UTF-8", "application/json;charset=utf-8" }) do
        answer(body, ct)
        succeeds(function() return ecw.read("Patient", "p-h1") end)
      end
    end)

    it("passes invalid UTF-8 through, in blocking and started lookups", function()
      configure()
      local bad = "Venoms\255\254worth\192\128\237\160\128"
      local body = cjson.encode(patient_json { name = { { family = bad, given = { "Hos\195" } } } })
      answer(body)
      local p = succeeds(function() return ecw.patient { id = "p-h1" } end)
      assert.equal(bad, p.family)
      assert.equal("Hos\195", p.given)
      answer(body)
      local req = ecw.start("patient", { id = "p-h1" })
      local p2, err = req:wait(5000)
      assert.is_nil(err)
      assert.equal(bad, p2.family)
    end)

    it("skips a UTF-8 byte order mark", function()
      configure()
      answer("\239\187\191" .. cjson.encode(patient_json()))
      succeeds(function() return ecw.read("Patient", "p-h1") end)
    end)

    it("reports started lookups of broken answers as bad_response", function()
      configure()
      answer('{"resourceType":"Bundle","total":1e400}')
      local _, err = ecw.start("patients", { family = "Doe" }):wait(5000)
      assert.equal("bad_response", err.code)
      answer("<html>")
      _, err = ecw.start("read", "Patient", "p-h1"):wait(5000)
      assert.equal("bad_response", err.code)
    end)
  end)

  describe("memory over many hostile answers", function()
    it("stays bounded", function()
      configure { max_body = 262144 }
      local over = cjson.encode(patient_json { text = { div = ("x"):rep(300000) } })
      local under = cjson.encode(patient_json { text = { div = ("x"):rep(200000) } })
      local function round()
        answer(over)
        fails("bad_response", function() return ecw.read("Patient", "p-h1") end)
        answer(under)
        succeeds(function() return ecw.read("Patient", "p-h1") end)
        answer(under:sub(1, -3))
        fails("bad_response", function() return ecw.read("Patient", "p-h1") end)
      end
      round()
      collectgarbage()
      collectgarbage()
      local kb0 = collectgarbage("count")
      for _ = 1, 20 do
        round()
      end
      collectgarbage()
      collectgarbage()
      assert(collectgarbage("count") - kb0 < 1024, "Lua memory grew by " ..
        math.floor(collectgarbage("count") - kb0) .. " KB")
    end)
  end)
end)
