-- Unit tests of the Lua layer that need no server: phone normalisation,
-- query encoding, origins, scope coverage, null stripping, shaping, speech
-- and error values.  Refused calls are checked here too: they must not
-- reach the network at all, so a client pointing at a closed port is fine.
package.path = "./lua/?.lua;./?.lua;" .. package.path
package.cpath = (_VERSION == "Lua 5.3" and "build/5.3/?.so;" or "build/5.4/?.so;") .. package.cpath

local core = require "ecw.core"
local ecw = require "ecw"
local phone = require "ecw.phone"
local query = require "ecw.query"
local scopes = require "ecw.scopes"
local fhir = require "ecw.fhir"
local patient = require "ecw.patient"
local errors = require "ecw.errors"
local cjson = require "cjson"

describe("ecw.normalize_phone", function()
  local cases = {
    { "+15550100199", "+15550100199" },
    { "15550100199", "+15550100199" },
    { "5550100199", "+15550100199" },
    { "sip:+15550100199@pbx.example.com", "+15550100199" },
    { "sip:5550100199@10.0.0.1:5060;user=phone", "+15550100199" },
    { "sips:%2B15550100199@pbx.example.com", "+15550100199" },
    { "tel:+1-555-010-0199", "+15550100199" },
    { "tel:+1-555-010-0199;ext=12", "+15550100199" },
    { "+1 (555) 010-0199", "+15550100199" },
    { "(555) 010-0199", "+15550100199" },
    { "555.010.0199", "+15550100199" },
    { "555-010-0199", "+15550100199" },
    { " 1 555 010 0199 ", "+15550100199" },
    { "\"Jane\" <sip:+15550100199@host>", "+15550100199" },
    { "+447700900123", "+447700900123" },
    { "+44 7700 900123", "+447700900123" },
    { "+33 1 23 45 67 89", "+33123456789" },
  }
  for _, c in ipairs(cases) do
    it("normalizes " .. c[1], function()
      assert.equal(c[2], ecw.normalize_phone(c[1]))
    end)
  end

  local bad = {
    "", "anonymous", "Anonymous", "unknown", "0000", "12345", "0123456789", "1234567890",
    "+1 555 010 019", "1-800-FLOWERS", "sip:alice@example.com", "mailto:x@y",
    "+15550100199+1", "555010019912345678", "+0123456789", "+1", "+",
  }
  for _, s in ipairs(bad) do
    it("refuses " .. string.format("%q", s), function()
      assert.is_nil(ecw.normalize_phone(s))
    end)
  end

  it("refuses non-strings", function()
    assert.is_nil(ecw.normalize_phone(nil))
    assert.is_nil(ecw.normalize_phone(5550100199))
    assert.is_nil(ecw.normalize_phone({}))
  end)

  it("lists the search forms, canonical first", function()
    assert.same({ "+15550100199", "5550100199", "(555) 010-0199", "555-010-0199" },
      phone.search_forms("+15550100199"))
    assert.same({ "+447700900123", "447700900123" }, phone.search_forms("+447700900123"))
  end)

  it("matches stored numbers by their national digits", function()
    assert.is_true(phone.matches("(555) 010-0199", "+15550100199"))
    assert.is_true(phone.matches("+1 555 010 0199", "+15550100199"))
    assert.is_false(phone.matches("555-010-0123", "+15550100199"))
    assert.is_false(phone.matches(nil, "+15550100199"))
    assert.is_true(phone.matches("555-010-0199 ext. 12", "+15550100199"))
    assert.is_true(phone.matches("(555) 010-0199 x12", "+15550100199"))
    assert.is_true(phone.matches("07700 900123", "+447700900123") == false)
    assert.is_true(phone.matches("+44 7700 900123", "+447700900123"))
  end)
end)

describe("ecw.query", function()
  it("percent-encodes everything but unreserved characters", function()
    assert.equal("Doe%26_id%3Dx%23", query.encode("Doe&_id=x#"))
    assert.equal("a%20b%0D%0Ac", query.encode("a b\r\nc"))
    assert.equal("%2B15550100199", query.encode("+15550100199"))
    assert.equal("..%2F..%2Fx", query.encode("../../x"))
    assert.equal("%C3%A9%22%27%25%3F%2F", query.encode("é\"'%?/"))
    assert.equal("AZaz09-._~", query.encode("AZaz09-._~"))
  end)

  it("validates ids against the FHIR grammar", function()
    assert.is_true(query.valid_id("p-1001"))
    assert.is_true(query.valid_id("A.b-9"))
    assert.is_true(query.valid_id(string.rep("a", 64)))
    for _, bad in ipairs({ "", ".", "..", "a/b", "a b", "a?b", "a#b", "a%2Fb", "é",
                           string.rep("a", 65), 12, false }) do
      assert.is_false(query.valid_id(bad), tostring(bad))
    end
  end)

  it("builds search targets with sorted, encoded parameters", function()
    local list = assert(query.pairs_of({ family = "Doe & Co", given = { "A", "B" }, _count = 50 }))
    assert.equal("Patient?_count=50&family=Doe%20%26%20Co&given=A&given=B",
      query.search_target("Patient", list))
    assert.is_nil(query.pairs_of({ ["a b"] = "x" }))
    assert.is_nil(query.pairs_of({ x = {} }))
    assert.is_nil(query.pairs_of({ x = function() end }))
  end)

  it("compares origins with explicit default ports", function()
    assert.equal("https://h.example:443", query.origin("https://H.Example/fhir/r4/X"))
    assert.equal("https://h.example:443", query.origin("HTTPS://h.example:443/x?y"))
    assert.equal("http://h:80", query.origin("http://user:pw@h/"))
    assert.equal("https://127.0.0.1:8443", query.origin("https://127.0.0.1:8443"))
    assert.equal("https://[::1]:443", query.origin("https://[::1]/fhir"))
    assert.is_nil(query.origin("/fhir/r4/X/Patient?page=2"))
    assert.is_nil(query.origin("ftp://h/x"))
    assert.is_nil(query.origin("https://h:abc/x"))
  end)
end)

describe("ecw.scopes", function()
  local function covered(registered, needed)
    local set = scopes.registered(assert(scopes.list(registered)))
    return scopes.uncovered(set, { needed }) == nil
  end

  it("asks v1 or v2 scopes", function()
    assert.equal("system/Patient.read", scopes.for_type("Patient", "v1"))
    assert.equal("system/Patient.rs", scopes.for_type("Patient", "v2"))
  end)

  it("decides coverage precisely", function()
    assert.is_true(covered("system/Patient.read", "system/Patient.read"))
    assert.is_true(covered("system/*.read", "system/Practitioner.read"))
    assert.is_true(covered("system/*.read", "system/Patient.rs"))
    assert.is_true(covered("system/Patient.rs", "system/Patient.read"))
    assert.is_true(covered("system/Patient.cruds", "system/Patient.read"))
    assert.is_true(covered("system/Patient.*", "system/Patient.rs"))
    assert.is_true(covered("system/*.*", "system/Coverage.read"))
    assert.is_false(covered("system/Patient.read", "system/Practitioner.read"))
    assert.is_false(covered("system/Patient.r", "system/Patient.read"))
    assert.is_false(covered("system/Patient.s", "system/Patient.rs"))
    assert.is_false(covered("system/Patient.write", "system/Patient.read"))
    assert.is_false(covered("patient/Patient.read", "system/Patient.read"))
    assert.is_false(covered("user/*.read", "system/Patient.read"))
    assert.is_false(covered("system/Observation.rs?category=laboratory", "system/Observation.rs"))
    assert.is_true(covered("system/Observation.rs?category=laboratory",
      "system/Observation.rs?category=laboratory"))
    assert.is_false(covered("system/Patient.sr", "system/Patient.read"))  -- out of order: not v2
    assert.is_true(covered("launch openid system/Patient.read", "openid"))
    assert.is_false(covered("system/Patient.read", "openid"))
  end)

  it("validates scope lists", function()
    assert.same({ "a", "b" }, scopes.list("b a  b"))
    assert.same({ "a", "b" }, scopes.list({ "b", "a" }))
    assert.is_nil(scopes.list(""))
    assert.is_nil(scopes.list({}))
    assert.is_nil(scopes.list({ "a b" }))
    assert.is_nil(scopes.list(42))
  end)
end)

describe("ecw.fhir decoding", function()
  it("removes JSON nulls everywhere and closes up arrays", function()
    local v = assert(fhir.decode([[{"resourceType":"Patient","gender":null,
      "name":[null,{"family":"A","given":[null,"B",null,"C"]},null],
      "telecom":[{"system":"email","value":null}],"n":[null],"deep":{"x":{"y":null}}}]]))
    assert.is_nil(v.gender)
    assert.equal(1, #v.name)
    assert.equal("A", v.name[1].family)
    assert.same({ "B", "C" }, v.name[1].given)
    assert.same({ { system = "email" } }, v.telecom)
    assert.same({}, v.n)
    assert.same({ x = {} }, v.deep)
    local function scan(t)
      for k, x in pairs(t) do
        assert.is_not.equal(cjson.null, x, tostring(k))
        if type(x) == "table" then scan(x) end
      end
    end
    scan(v)
  end)

  it("gives integers back for integral numbers", function()
    local v = assert(fhir.decode('{"a":128,"b":6.5,"c":[1,2.0]}'))
    assert.equal("integer", math.type(v.a))
    assert.equal(6.5, v.b)
    assert.equal("128", tostring(v.a))
    assert.equal("integer", math.type(v.c[2]))
  end)

  it("refuses what is not JSON", function()
    assert.is_nil(fhir.decode("<html>"))
    assert.is_nil(fhir.decode(""))
    assert.is_nil(fhir.decode("null"))
    assert.is_nil(fhir.decode("[NaN]"))
  end)

  it("joins OperationOutcome texts", function()
    assert.equal("one; two; three", fhir.outcome_text({
      resourceType = "OperationOutcome",
      issue = { { details = { text = "one" } }, { diagnostics = "two" },
                { details = { text = "three" }, diagnostics = "ignored" }, { code = "x" } },
    }))
    assert.is_nil(fhir.outcome_text({ resourceType = "OperationOutcome", issue = {} }))
  end)

  it("checks the resource type of a success body", function()
    local r, err = fhir.resource('{"resourceType":"OperationOutcome","issue":[{"diagnostics":"nope"}]}',
      "Patient", "ecw.read")
    assert.is_nil(r)
    assert.equal("bad_response", err.code)
    assert.equal("nope", err.outcome)
    r, err = fhir.resource('{"resourceType":"Bundle"}', "Patient", "ecw.read")
    assert.is_nil(r)
    assert.equal("bad_response", err.code)
    r, err = fhir.resource('not json', "Patient", "ecw.read")
    assert.is_nil(r)
    assert.equal("bad_response", err.code)
  end)
end)

describe("patient shaping and speech", function()
  local resource = {
    resourceType = "Patient", id = "p1", birthDate = "1970-03-01", gender = "female",
    name = { { use = "nickname", given = { "JJ" } },
             { use = "official", family = "Doe", given = { "Jane", "Q" } } },
    telecom = { { system = "phone", value = "555-010-0111", use = "work" },
                { system = "email", value = "x@example.com" },
                { system = "phone", value = "(555) 010-0199", use = "mobile" } },
    identifier = { { system = "urn:x", value = "M-1", type = { coding = { { code = "MR" } } } },
                   { system = "urn:y", value = "Z-9" } },
  }

  it("shapes a Patient", function()
    local p = patient.shape(resource)
    assert.equal("p1", p.id)
    assert.equal("Jane Doe", p.name)
    assert.equal("Jane", p.given)
    assert.same({ "Jane", "Q" }, p.given_names)
    assert.equal("Doe", p.family)
    assert.equal("+15550100199", p.phone)      -- mobile preferred
    assert.equal("M-1", p.mrn)
    assert.same({ { system = "urn:x", value = "M-1", type = "MR" }, { system = "urn:y", value = "Z-9" } },
      p.identifiers)
    assert.equal(resource, p.resource)
  end)

  it("copes with a bare resource", function()
    local p = patient.shape({ resourceType = "Patient", id = "x" })
    assert.equal("x", p.id)
    assert.is_nil(p.name)
    assert.is_nil(p.mrn)
    assert.same({}, p.identifiers)
  end)

  it("says names and dates", function()
    assert.equal("Jane Doe", ecw.say.name(resource))
    assert.equal("March 1st, 1970", ecw.say.birthdate(resource))
    for d, s in pairs({ ["2024-01-02"] = "January 2nd, 2024", ["2024-01-03"] = "January 3rd, 2024",
                        ["2024-01-11"] = "January 11th, 2024", ["2024-01-12"] = "January 12th, 2024",
                        ["2024-01-13"] = "January 13th, 2024", ["2024-01-21"] = "January 21st, 2024",
                        ["2024-01-22"] = "January 22nd, 2024", ["2024-12-31"] = "December 31st, 2024",
                        ["2024-06-02T14:00:00Z"] = "June 2nd, 2024", ["1970-03"] = "March 1970",
                        ["1970"] = "1970" }) do
      assert.equal(s, ecw.say.date(d))
    end
    assert.is_nil(ecw.say.date("yesterday"))
    assert.is_nil(ecw.say.date("2024-13-01"))
  end)

  it("builds a summary from what it is given", function()
    local s = ecw.say.summary(patient.shape(resource), {
      practitioner = { name = "Dr. Alice Example" },
      medications = { { name = "Lisinopril 10 mg tablet" }, { name = "Aspirin" } },
      allergies = {},
    })
    assert.equal("Jane Doe, born March 1st, 1970. Primary care provider: Dr. Alice Example. " ..
      "Active medications: Lisinopril 10 mg tablet and Aspirin. No known allergies on file.", s)
  end)
end)

describe("error values", function()
  it("read as their message", function()
    local err = errors.new("not_found", "ecw.patient: no patient matches")
    assert.equal(core.error_mt, getmetatable(err))
    assert.equal("ecw.patient: no patient matches", tostring(err))
    assert.equal("x: ecw.patient: no patient matches", "x: " .. err)
    assert.equal("ecw.patient: no patient matches!", err .. "!")
    assert.is_false(err.retryable)
  end)

  it("map core codes and statuses", function()
    local function map(e) return errors.from_core(e, "ecw.read") end
    assert.equal("auth", map({ code = "invalid_client", message = "m" }).code)
    assert.equal("auth", map({ code = "invalid_grant", message = "m", oauth_error = "invalid_scope" }).code)
    local g = map({ code = "invalid_grant", message = "m", oauth_error = "invalid_scope" })
    assert.equal("invalid_scope", g.oauth_error)
    assert.equal("config", map({ code = "origin", message = "m" }).code)
    local e = map({ code = "http", status = 429, message = "m" })
    assert.equal("rate_limited", e.code)
    assert.is_true(e.retryable)
    assert.equal("unavailable", map({ code = "http", status = 503, message = "m" }).code)
    assert.equal("ecw.read: m", map({ code = "timeout", message = "m" }).message)
    local s = errors.from_status(404, "ecw.read", "Patient", "read", "gone")
    assert.equal("not_found", s.code)
    assert.equal("gone", s.outcome)
    assert.equal("http", errors.from_status(404, "ecw.search", "Patient", "search").code)
    assert.equal("auth", errors.from_status(403, "ecw.read", "Patient", "read").code)
    assert.equal("auth", errors.from_status(401, "ecw.read", "Patient", "read").code)
    assert.equal("unavailable", errors.from_status(502, "ecw.read", "Patient", "read").code)
    local h = errors.from_status(500, "ecw.read", "Patient", "read")
    assert.equal("http", h.code)
    assert.is_true(h.retryable)
  end)
end)

describe("calls refused before any request", function()
  local dir, key, client
  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -m 700 " .. dir))
    key = dir .. "/k.pem"
    local jwk = assert(core.keygen { alg = "ES384", path = key })
    client = assert(ecw.configure {
      name = "units", fhir_base = "https://127.0.0.1:9/fhir/r4/UNITS/", client_id = "u",
      private_key = key, kid = jwk.kid, scopes = { "system/Patient.read", "system/MedicationRequest.rs" },
    })
  end)
  teardown(function()
    os.execute("rm -rf " .. dir)
  end)

  it("refuses out-of-scope calls with zero HTTP requests", function()
    local before = core.stats()
    local r, err = client:read("Practitioner", "pr-1")
    assert.is_nil(r)
    assert.equal("scope", err.code)
    assert.matches("system/Practitioner.read", err.message, 1, true)
    r, err = client:practitioner({ id = "p-1", resource = { resourceType = "Patient", id = "p-1" } })
    assert.is_nil(r)
    assert.equal("scope", err.code)
    r, err = client:read("Patient", "p-1", { scopes = "system/Patient.read system/Group.read" })
    assert.is_nil(r)
    assert.equal("scope", err.code)
    assert.matches("system/Group.read", err.message, 1, true)
    local after = core.stats()
    assert.equal(before.http_requests, after.http_requests)
    assert.equal(before.token_requests, after.token_requests)
    assert.equal(before.connections_opened, after.connections_opened)
  end)

  it("gives not_found for an unusable caller ID without a request", function()
    local before = core.stats().http_requests
    local p, err = client:patient { phone = "anonymous" }
    assert.is_nil(p)
    assert.equal("not_found", err.code)
    assert.same({}, (client:patients { phone = "" .. "unknown" }))
    assert.equal(before, core.stats().http_requests)
  end)

  it("strips the trailing slash of fhir_base", function()
    assert.equal("https://127.0.0.1:9/fhir/r4/UNITS", client:info().fhir_base)
    assert.equal("units", client:info().name)
    assert.equal("v1", client:info().scope_style)
  end)

  it("keeps clients by name", function()
    assert.equal(client, ecw.client("units"))
    local none, err = ecw.client("nobody")
    assert.is_nil(none)
    assert.equal("config", err.code)
  end)

  it("reports a missing key file as a config error", function()
    local c, err = ecw.configure { name = "nokey", fhir_base = "https://127.0.0.1:9/fhir",
      client_id = "u", private_key = dir .. "/missing.pem", kid = "k" }
    assert.is_nil(c)
    assert.equal("config", err.code)
    local c2, err2 = ecw.configure { name = "badurl", fhir_base = "ftp://x/fhir",
      client_id = "u", private_key = key, kid = "k" }
    assert.is_nil(c2)
    assert.equal("config", err2.code)
  end)
end)
