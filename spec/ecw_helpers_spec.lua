-- Receptionist helpers and speech against the sandbox: practitioner,
-- medications, allergies, coverage, encounters, say.*, and named clients.
package.path = "./lua/?.lua;./?.lua;" .. package.path
package.cpath = (_VERSION == "Lua 5.3" and "build/5.3/?.so;" or "build/5.4/?.so;") .. package.cpath

local sandbox = require "spec.support.sandbox"
local data = require "sandbox.data"
local core = require "ecw.core"
local ecw = require "ecw"

local CLIENT_ID = "ecw-helpers-spec"

describe("ecw receptionist helpers", function()
  local sb, dir, key, kid, jane

  setup(function()
    sb = sandbox.start { tls = true }
    dir = sandbox.tmpdir("ecw-helpers-spec")
    key = sandbox.keygen(dir, "ES384")
    kid = assert(core.jwk(key.path)).kid
    sb:register { client_id = CLIENT_ID, kid = kid, key = key }
    assert(ecw.configure {
      fhir_base = sb:fhir_base_for("HELP01"), client_id = CLIENT_ID,
      private_key = key.path, kid = kid, ca_file = sb.ca_file,
    })
    jane = assert(ecw.patient { phone = data.fixtures.shared_phone, birthdate = "1970-03-01" })
  end)

  teardown(function()
    if sb then sb:stop() end
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  describe("practitioner", function()
    it("follows generalPractitioner", function()
      local pr = assert(ecw.practitioner(jane))
      assert.equal(data.fixtures.practitioner, pr.id)
      assert.equal("Dr. Alice Example", pr.name)
      assert.equal("Example", pr.family)
      assert.equal("Alice", pr.given)
      assert.equal("Dr.", pr.prefix)
      assert.equal("Practitioner", pr.resource.resourceType)
    end)

    it("accepts an id or a raw resource", function()
      local s0 = sb:stats().fhir_requests
      local pr = assert(ecw.practitioner(data.fixtures.unique_phone_patient))
      assert.equal("Dr. Robert Sample", pr.name)
      assert.equal(s0 + 2, sb:stats().fhir_requests)       -- Patient, then Practitioner
      pr = assert(ecw.practitioner(jane.resource))
      assert.equal("Dr. Alice Example", pr.name)
      assert.equal(s0 + 3, sb:stats().fhir_requests)
    end)

    it("is not_found when none is on file", function()
      local pr, err = ecw.practitioner(data.fixtures.null_gender_patient)
      assert.is_nil(pr)
      assert.equal("not_found", err.code)
    end)

    it("never follows a reference to another server", function()
      local p = { id = "p-x", resource = { resourceType = "Patient", id = "p-x",
        generalPractitioner = { { reference = "https://evil.example/fhir/Practitioner/pr-1001" } } } }
      local s0 = sb:stats().fhir_requests
      local pr, err = ecw.practitioner(p)
      assert.is_nil(pr)
      assert.equal("not_found", err.code)
      assert.equal(s0, sb:stats().fhir_requests)
      -- An absolute reference under our own base is fine.
      p.resource.generalPractitioner[1].reference =
        sb:fhir_base_for("HELP01") .. "/Practitioner/" .. data.fixtures.practitioner
      assert.equal("Dr. Alice Example", assert(ecw.practitioner(p)).name)
    end)
  end)

  describe("medications", function()
    it("lists active prescriptions", function()
      local meds = assert(ecw.medications(jane))
      assert.equal(1, #meds)
      local m = meds[1]
      assert.equal("mr-1", m.id)
      assert.equal("Lisinopril 10 mg tablet", m.name)
      assert.equal("Take 1 tablet by mouth once daily", m.dosage)
      assert.equal("2024-02-01", m.authored)
      assert.equal("active", m.status)
      assert.equal("MedicationRequest", m.resource.resourceType)
    end)

    it("lists every status on request, newest first", function()
      local meds = assert(ecw.medications(jane, { status = "all" }))
      assert.equal(2, #meds)
      assert.equal("mr-1", meds[1].id)
      assert.equal("mr-2", meds[2].id)
      assert.equal("stopped", meds[2].status)
      assert.same({}, assert(ecw.medications(data.fixtures.multi_name_patient)))
    end)

    it("uses the coding display when there is no text", function()
      local r = { resourceType = "MedicationRequest", id = "m",
        medicationCodeableConcept = { coding = { { code = "1", display = "Aspirin 81 mg" } } } }
      assert.equal("Aspirin 81 mg", require("ecw.records").medication(r).name)
    end)
  end)

  describe("allergies, coverage, encounters", function()
    it("lists allergies", function()
      local list = assert(ecw.allergies(jane))
      assert.equal(1, #list)
      assert.equal("Penicillin", list[1].name)
      assert.equal("Hives", list[1].reaction)
      assert.equal("active", list[1].status)
      assert.same({}, assert(ecw.allergies(data.fixtures.john)))
    end)

    it("lists coverage", function()
      local list = assert(ecw.coverage(jane))
      assert.equal(1, #list)
      assert.equal("Example Health Plan (TEST)", list[1].name)
      assert.equal("Example Health Plan (TEST)", list[1].payor)
      assert.equal("SUB-0001001", list[1].subscriber_id)
      assert.equal("active", list[1].status)
      assert.equal("2024-01-01", list[1].start)
    end)

    it("lists encounters, most recent first", function()
      local list = assert(ecw.encounters(jane))
      assert.equal(2, #list)
      assert.equal("enc-2", list[1].id)
      assert.equal("2024-06-02T14:00:00Z", list[1].date)
      assert.equal("enc-1", list[2].id)
      assert.equal("ambulatory", list[1].name)
      assert.equal("finished", list[1].status)
      list = assert(ecw.encounters(jane, { count = 1 }))
      assert.equal(1, #list)
      assert.equal("enc-2", list[1].id)
    end)
  end)

  describe("speech", function()
    it("says the patient", function()
      assert.equal("Jane Doe", ecw.say.name(jane))
      assert.equal("March 1st, 1970", ecw.say.birthdate(jane))
      assert.equal("Jane Doe, born March 1st, 1970.", ecw.say.summary(jane))
    end)

    it("summarises what the helpers returned", function()
      local s = ecw.say.summary(jane, {
        practitioner = assert(ecw.practitioner(jane)),
        medications = assert(ecw.medications(jane)),
        allergies = assert(ecw.allergies(jane)),
        coverage = assert(ecw.coverage(jane)),
        encounters = assert(ecw.encounters(jane)),
      })
      assert.equal("Jane Doe, born March 1st, 1970. Primary care provider: Dr. Alice Example. " ..
        "Active medications: Lisinopril 10 mg tablet. Allergies: Penicillin. " ..
        "Insurance: Example Health Plan (TEST). Last visit: June 2nd, 2024.", s)
    end)
  end)

  describe("named clients", function()
    it("keeps tenants apart", function()
      local other = assert(ecw.configure {
        name = "clinic-b", fhir_base = sb:fhir_base_for("HELP02"), client_id = CLIENT_ID,
        private_key = key.path, kid = kid, ca_file = sb.ca_file, scope_style = "v2",
      })
      assert.equal(other, ecw.client("clinic-b"))
      assert.is_not.equal(other, ecw.client())
      local before = sb:stats().by_practice.HELP02
      local p = assert(ecw.client("clinic-b"):patient { phone = "555-010-0123" })
      assert.equal(data.fixtures.unique_phone_patient, p.id)
      assert.equal("Dr. Robert Sample", assert(other:practitioner(p)).name)
      assert.equal("Ursula Unique", other.say.name(p))
      local after = sb:stats().by_practice.HELP02
      assert.equal((before and before.fhir_requests or 0) + 2, after.fhir_requests)
      local info = other:info()
      assert.equal("clinic-b", info.name)
      assert.equal("v2", info.scope_style)
      assert.equal("ES384", info.alg)
    end)
  end)
end)
