-- Patient lookups against the sandbox EHR: caller-ID formats, cardinality,
-- name/birth date, identifiers, ids, paging, null handling, injection, and
-- argument errors.
package.path = "./lua/?.lua;./?.lua;" .. package.path
package.cpath = (_VERSION == "Lua 5.3" and "build/5.3/?.so;" or "build/5.4/?.so;") .. package.cpath

local sandbox = require "spec.support.sandbox"
local data = require "sandbox.data"
local core = require "ecw.core"
local ecw = require "ecw"
local cjson = require "cjson"

local CLIENT_ID = "ecw-lookup-spec"

describe("ecw patient lookups", function()
  local sb, dir, key, kid
  local practice_n = 0

  -- A fresh practice code per test isolates token caches and lets the
  -- sandbox count requests per test.
  local function configure(extra)
    practice_n = practice_n + 1
    local practice = string.format("LOOK%02d", practice_n)
    local opts = {
      fhir_base = sb:fhir_base_for(practice), client_id = CLIENT_ID,
      private_key = key.path, kid = kid, ca_file = sb.ca_file,
    }
    for k, v in pairs(extra or {}) do
      opts[k] = v
    end
    return assert(ecw.configure(opts)), practice
  end

  local function fhir_requests(practice)
    local b = sb:stats().by_practice[practice]
    return b and b.fhir_requests or 0
  end

  -- Messages go to logs: none may carry what the caller passed or PHI.
  local function word(s)
    return "%f[%w]" .. s:gsub("%p", "%%%0") .. "%f[%W]"
  end
  local function assert_no_phi(err, ...)
    for _, s in ipairs(data.phi) do
      assert.is_nil(err.message:find(word(s)), "PHI in message: " .. err.message)
    end
    for _, s in ipairs({ ... }) do
      assert.is_nil(err.message:find(s, 1, true), "input in message: " .. err.message)
    end
  end

  setup(function()
    sb = sandbox.start { tls = true }
    dir = sandbox.tmpdir("ecw-lookup-spec")
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
    sb:config { next_link_origin = sandbox.null, grant_scope = sandbox.null, deny_scope = sandbox.null }
  end)

  describe("by caller ID", function()
    local formats = {
      "+15550100123", "15550100123", "5550100123", "sip:+15550100123@pbx.example.com",
      "sip:5550100123@10.1.2.3:5060;user=phone", "tel:+1-555-010-0123", "+1 (555) 010-0123",
      "(555) 010-0123", "555-010-0123", "555.010.0123", "1 555 010 0123",
    }
    for _, f in ipairs(formats) do
      it("finds the patient from " .. f, function()
        configure()
        local p, err = ecw.patient { phone = f }
        assert.is_nil(err)
        assert.equal(data.fixtures.unique_phone_patient, p.id)
        assert.equal("Ursula Unique", p.name)
        assert.equal("+15550100123", p.phone)
      end)
    end

    it("stops at the first phone form that matches", function()
      local _, practice = configure()
      assert.truthy(ecw.patient { phone = "5550100123" })
      assert.equal(1, fhir_requests(practice))
    end)

    it("tries every phone form with phone_search = \"all\", deduplicating", function()
      local _, practice = configure { phone_search = "all" }
      local list = assert(ecw.patients { phone = "5550100199" })
      assert.equal(2, #list)                   -- each form found both
      assert.equal(4, fhir_requests(practice))
      list = assert(ecw.patients({ phone = "5550100199" }, { phone_search = "first" }))
      assert.equal(2, #list)
      assert.equal(5, fhir_requests(practice))
      assert.has_error(function() ecw.patients({ phone = "5550100199" }, { phone_search = "any" }) end)
    end)

    it("is ambiguous for two patients on one number, in either stored format", function()
      configure()
      for _, f in ipairs({ data.fixtures.shared_phone, data.fixtures.shared_phone_alt, "+15550100199" }) do
        local p, err = ecw.patient { phone = f }
        assert.is_nil(p)
        assert.equal("ambiguous", err.code)
        assert.equal(2, err.count)
        assert.is_false(err.retryable)
        assert_no_phi(err, f)
      end
      local list = assert(ecw.patients { phone = "+15550100199" })
      local ids = { list[1].id, list[2].id }
      table.sort(ids)
      assert.same({ data.fixtures.jane, data.fixtures.john }, ids)
    end)

    it("is narrowed by the birth date", function()
      configure()
      local p = assert(ecw.patient { phone = "+1 (555) 010-0199", birthdate = "1970-03-01" })
      assert.equal(data.fixtures.jane, p.id)
      assert.equal("Jane Doe", p.name)
      assert.equal("1970-03-01", p.birthdate)
      assert.equal("female", p.gender)
      assert.equal("MRN-0001001", p.mrn)
      p = assert(ecw.patient { phone = "5550100199", birthdate = "1968-11-12" })
      assert.equal(data.fixtures.john, p.id)
    end)

    it("is not_found for a wrong birth date or an unknown number", function()
      local _, practice = configure()
      local p, err = ecw.patient { phone = "5550100199", birthdate = "1999-09-09" }
      assert.is_nil(p)
      assert.equal("not_found", err.code)
      assert_no_phi(err, "1999-09-09", "5550100199")
      -- Every form is tried before giving up.
      local before = fhir_requests(practice)
      p, err = ecw.patient { phone = "+15550109999" }
      assert.is_nil(p)
      assert.equal("not_found", err.code)
      assert.equal(before + 4, fhir_requests(practice))
      assert.same({}, assert(ecw.patients { phone = "+15550109999" }))
    end)

    it("confirms every server match against the caller's number", function()
      configure()
      -- The first answer (a loose server) claims a patient with another
      -- number; the other forms reach the real search and find nobody.
      sb:fault { target = "fhir", status = 200, times = 1, content_type = "application/fhir+json",
        body = cjson.encode { resourceType = "Bundle", type = "searchset", entry = { {
          resource = { resourceType = "Patient", id = "p-1003",
                       telecom = { { system = "phone", value = "555-010-0123" } } } } } } }
      local p, err = ecw.patient { phone = "+15550109999" }
      assert.is_nil(p)
      assert.equal("not_found", err.code)
    end)
  end)

  describe("by name, identifier and id", function()
    it("finds by family, given and birth date", function()
      configure()
      local p = assert(ecw.patient { family = "Doe", given = "Jane", birthdate = "1970-03-01" })
      assert.equal(data.fixtures.jane, p.id)
      local p2, err = ecw.patient { family = "Doe" }
      assert.is_nil(p2)
      assert.equal("ambiguous", err.code)
      assert.equal(2, err.count)
    end)

    it("finds by name and picks the official name for speech", function()
      configure()
      local p = assert(ecw.patient { name = "Smith", birthdate = "1955-12-31" })
      assert.equal(data.fixtures.multi_name_patient, p.id)
      assert.equal("Robert Smith", p.name)
      assert.same({ "Robert", "James" }, p.given_names)
      assert.is_nil(p.mrn)                     -- only a non-MR identifier
      assert.equal("MEMBER-77", p.identifiers[1].value)
      assert.is_nil(p.phone)
    end)

    it("finds by identifier with and without a system", function()
      configure()
      local p = assert(ecw.patient { identifier = data.MRN_SYSTEM .. "|MRN-0001001" })
      assert.equal(data.fixtures.jane, p.id)
      p = assert(ecw.patient { identifier = "MRN-0001002" })
      assert.equal(data.fixtures.john, p.id)
      local none, err = ecw.patient { identifier = "urn:other|MRN-0001001" }
      assert.is_nil(none)
      assert.equal("not_found", err.code)
      assert_no_phi(err, "MRN-0001001")
    end)

    it("finds by id, and not_found for an unknown id", function()
      configure()
      local p = assert(ecw.patient { id = data.fixtures.jane })
      assert.equal("Jane Doe", p.name)
      local none, err = ecw.patient { id = "p-9999" }
      assert.is_nil(none)
      assert.equal("not_found", err.code)
      assert_no_phi(err, "p-9999")
      assert.same({}, assert(ecw.patients { id = "p-9999" }))
      local r, rerr = ecw.read("Patient", "p-9999")
      assert.is_nil(r)
      assert.equal("not_found", rerr.code)
      assert.equal(404, rerr.status)
      assert.matches("not found", rerr.outcome)
      assert_no_phi(rerr, "p-9999")
    end)
  end)

  describe("paging", function()
    it("follows next links over 60 results", function()
      local _, practice = configure()
      local list, meta = assert(ecw.patients { family = data.fixtures.paging_family })
      assert.equal(data.fixtures.paging_count, #list)
      assert.equal(3, meta.pages)
      assert.equal(60, meta.total)
      assert.is_nil(meta.truncated)
      assert.equal(3, fhir_requests(practice))
      local seen = {}
      for _, p in ipairs(list) do
        assert.is_nil(seen[p.id])
        seen[p.id] = true
      end
      local resources = assert(ecw.search("Patient", { family = "Paging", _count = 50 }))
      assert.equal(60, #resources)
      assert.equal("Patient", resources[1].resourceType)
      assert.equal(5, fhir_requests(practice))
    end)

    it("stops at max_pages", function()
      configure { max_pages = 2 }
      local list, meta = assert(ecw.search("Patient", { family = "Paging" }))
      assert.equal(40, #list)
      assert.equal("max_pages", meta.truncated)
      list, meta = assert(ecw.search("Patient", { family = "Paging" }, { max_pages = 1 }))
      assert.equal(20, #list)
      assert.equal("max_pages", meta.truncated)
      local _, err = ecw.patient { family = "Paging" }
      assert.equal("ambiguous", err.code)
      assert.equal(40, err.count)
    end)

    it("does not follow a next link to another origin", function()
      local _, practice = configure()
      sb:config { next_link_origin = "https://127.0.0.2:1" }
      local before = ecw.stats().next_links_refused
      local list, meta = assert(ecw.search("Patient", { family = "Paging" }))
      assert.equal(20, #list)
      assert.equal("origin", meta.truncated)
      assert.equal(1, fhir_requests(practice))
      assert.equal(before + 1, ecw.stats().next_links_refused)
    end)
  end)

  describe("decoded data", function()
    it("never contains cjson.null", function()
      configure()
      local p = assert(ecw.patient { id = data.fixtures.null_gender_patient })
      assert.is_nil(p.gender)
      assert.is_nil(p.resource.gender)
      assert.is_nil(p.resource.maritalStatus)
      assert.equal(2, #p.resource.telecom)
      assert.is_nil(p.resource.telecom[2].value)
      assert.equal("+15550100150", p.phone)
      local function scan(t)
        for k, v in pairs(t) do
          assert.is_not.equal(cjson.null, v, tostring(k))
          if type(v) == "table" then scan(v) end
        end
      end
      scan(p)
      local found = assert(ecw.patients { phone = "555-010-0150" })
      assert.equal(1, #found)
      scan(found)
    end)

    it("drops nulls inside arrays", function()
      configure()
      sb:fault { target = "fhir", status = 200, times = 1, content_type = "application/fhir+json",
        body = [[{"resourceType":"Patient","id":"p-1","gender":null,
                  "name":[null,{"use":"official","family":"Doe","given":[null,"Jane"]}],
                  "telecom":[null,{"system":"phone","value":"5550100199"}]}]] }
      local p = assert(ecw.patient { id = "p-1" })
      assert.equal("Jane Doe", p.name)
      assert.equal(1, #p.resource.name)
      assert.same({ "Jane" }, p.resource.name[1].given)
      assert.equal(1, #p.resource.telecom)
    end)
  end)

  describe("query injection", function()
    it("sends values encoded: no extra parameter reaches the server", function()
      configure()
      for _, v in ipairs({ "Doe&_id=p-1001#", "Doe&family=Doe", "Doe#", "Doe\r\nX-Injected: 1",
                           "Doe/../Practitioner", "Doe?_id=p-1001", "Doe%26_id%3Dp-1001",
                           "Doe\"'", "Doé" }) do
        local list = ecw.patients { family = v }
        assert.same({}, list, v)
      end
      -- Phone: the encoded "+" is not a space, every form stays one value.
      local list = assert(ecw.search("Patient", { phone = "+15550100123" }))
      assert.equal(1, #list)
      list = assert(ecw.search("Patient", { identifier = data.MRN_SYSTEM .. "|MRN-0001001",
                                            family = "x&identifier=MRN-0001002" }))
      assert.same({}, list)
    end)

    it("raises for ids that would change the path", function()
      configure()
      for _, id in ipairs({ "p-1001/../x", "p-1001?_id=x", "p-1001#", "..", "p 1", "" }) do
        assert.has_error(function() ecw.read("Patient", id) end)
        assert.has_error(function() ecw.patient { id = id } end)
      end
    end)
  end)

  describe("argument errors", function()
    local function raises(pattern, fn)
      local ok, msg = pcall(fn)
      assert.is_false(ok)
      assert.matches(pattern, msg, 1, true)
    end

    it("names the argument", function()
      configure()
      raises("ecw.patient: 'phone' must be a string", function() ecw.patient { phone = 5550100199 } end)
      raises("ecw.patient: no search criteria", function() ecw.patient {} end)
      raises("ecw.patients: unknown criterion 'telephone'", function() ecw.patients { telephone = "x" } end)
      raises("ecw.patient: bad argument #1 'criteria'", function() ecw.patient("5550100199") end)
      raises("ecw.patient: 'birthdate' must be a date as YYYY-MM-DD",
        function() ecw.patient { phone = "5550100199", birthdate = "03/01/1970" } end)
      raises("ecw.patient: 'family' must not be empty", function() ecw.patient { family = "" } end)
      raises("ecw.patient: unknown option 'timeout'", function() ecw.patient({ id = "p-1" }, { timeout = 5 }) end)
      raises("ecw.patient: option 'timeout_ms' must be a positive integer",
        function() ecw.patient({ id = "p-1" }, { timeout_ms = -1 }) end)
      raises("ecw.read: bad argument #1 'type' (expected a FHIR resource type)",
        function() ecw.read("patient/../x", "p-1") end)
      raises("ecw.read: bad argument #1 'type'", function() ecw.read(nil, "p-1") end)
      raises("ecw.read: bad argument #2 'id'", function() ecw.read("Patient", "a/b") end)
      raises("ecw.search: bad argument #2 'params' (bad search parameter name",
        function() ecw.search("Patient", { ["a&b"] = "x" }) end)
      raises("ecw.search: bad argument #2 'params'", function() ecw.search("Patient", "family=Doe") end)
      raises("ecw.medications: bad argument #1 'patient'", function() ecw.medications(42) end)
      raises("ecw.practitioner: bad argument #1 'patient'", function() ecw.practitioner { name = "x" } end)
      raises("ecw.encounters: option 'count' must be a positive integer",
        function() ecw.encounters("p-1001", { count = 0 }) end)
      raises("ecw.configure: 'fhir_base' is required", function() ecw.configure { client_id = "x" } end)
      raises("ecw.configure: unknown option 'fhirbase'", function() ecw.configure { fhirbase = "x" } end)
      raises("ecw.configure: 'timeout_ms' must be a positive integer",
        function() ecw.configure { timeout_ms = "5" } end)
      raises("ecw.configure: 'scopes' must name at least one scope", function() ecw.configure { scopes = {} } end)
      raises("ecw.configure: 'scope_style' must be", function()
        ecw.configure { fhir_base = "https://x", client_id = "x", private_key = "x", kid = "x", scope_style = "v3" }
      end)
      raises("ecw.patient: call it as client:patient(...)", function()
        local c = ecw.client()
        c.patient { id = "p-1" }
      end)
    end)

    it("points at the caller's line", function()
      configure()
      local ok, msg = pcall(function()
        ecw.patient { phone = 1 }   -- this line
      end)
      assert.is_false(ok)
      assert.matches("ecw_lookup_spec.lua:%d+: ecw.patient", msg)
      ok, msg = pcall(function()
        ecw.medications(42)
      end)
      assert.is_false(ok)
      assert.matches("ecw_lookup_spec.lua:%d+: ecw.medications", msg)
      ok, msg = pcall(function()
        ecw.configure { fhirbase = 1 }
      end)
      assert.is_false(ok)
      assert.matches("ecw_lookup_spec.lua:%d+: ecw.configure", msg)
    end)
  end)
end)
