-- Tests of the sandbox EHR itself, over real HTTP(S) with the curl CLI.
-- Run from the repository root:  busted --lua=lua5.4 spec/sandbox_spec.lua
package.path = "./?.lua;./?/init.lua;" .. package.path

local sandbox = require "spec.support.sandbox"
local curl = require "spec.support.curl"
local jwt = require "spec.support.jwt"
local data = require "sandbox.data"
local cjson = require "cjson"
local socket = require "socket"

local JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
local CLIENT = "spec-client"

local function contains(list, value)
  for _, v in ipairs(list or {}) do
    if v == value then
      return true
    end
  end
  return false
end

local function ids_of(bundle)
  local ids = {}
  for _, e in ipairs(bundle.entry or {}) do
    ids[#ids + 1] = e.resource.id
  end
  table.sort(ids)
  return ids
end

describe("sandbox EHR", function()
  local sb, keydir, rsa, ec

  -- Signs a standard assertion; `o` overrides pieces (see spec/support/jwt).
  local function assertion(o)
    o = o or {}
    return jwt.assertion {
      key = o.key or rsa, kid = o.kid or "rsa-1", alg = o.alg,
      client_id = o.client_id or CLIENT, aud = o.aud or sb.token_url,
      exp_in = o.exp_in, jti = o.jti, header = o.header, claims = o.claims, der = o.der,
    }
  end

  local function token_request(jws, scope, form)
    return curl.request {
      url = sb.token_url, method = "POST", cacert = sb.ca_file,
      form = form or {
        { "grant_type", "client_credentials" },
        { "client_assertion_type", JWT_BEARER },
        { "client_assertion", jws },
        { "scope", scope or "system/Patient.read" },
      },
    }
  end

  local function get_token(scope, o)
    local r = token_request(assertion(o), scope)
    assert.are.equal(200, r.status, r.body)
    return r:json().access_token
  end

  local function fhir(practice, path, token)
    return curl.request {
      url = sb:fhir_base_for(practice) .. "/" .. path, cacert = sb.ca_file,
      headers = token and { Authorization = "Bearer " .. token } or nil,
    }
  end

  setup(function()
    keydir = sandbox.tmpdir("ecw-spec-keys")
    rsa = sandbox.keygen(keydir, "RS384")
    ec = sandbox.keygen(keydir, "ES384")
    sb = sandbox.start { tls = true, verbose = true }
    sb:register {
      { client_id = CLIENT, kid = "rsa-1", key = rsa },
      { client_id = CLIENT, kid = "ec-1", key = ec },
    }
  end)

  teardown(function()
    if sb then sb:stop() end
    os.execute("rm -rf " .. curl.quote(keydir))
  end)

  before_each(function()
    sb:clear_faults()
    sb:config {
      token_lifetime = sandbox.null, grant_scope = sandbox.null, token_type = sandbox.null,
      relative_token_endpoint = sandbox.null, omit_token_endpoint = sandbox.null,
      deny_scope = sandbox.null, next_link_origin = sandbox.null,
    }
  end)

  describe("startup", function()
    it("publishes sandbox.json with working URLs and CA files", function()
      assert.is_true(sb:running())
      assert.matches("^https://127%.0%.0%.1:%d+$", sb.base_url)
      assert.are.equal(sb.base_url .. "/fhir/r4/SANDBOX", sb.fhir_base)
      assert.are.equal(sb.base_url .. "/oauth/oauth2/token", sb.token_url)
      assert.matches("^http://127%.0%.0%.1:%d+$", sb.admin_url)
      assert.is_truthy(io.open(sb.ca_file))
      local r = curl.request { url = sb.fhir_base .. "/metadata", cacert = sb.ca_file }
      assert.are.equal(200, r.status)
    end)

    it("fails certificate verification against wrong-ca.pem", function()
      local r = curl.request { url = sb.fhir_base .. "/metadata", cacert = sb.wrong_ca_file }
      assert.are.equal(60, r.exit_code) -- CURLE_PEER_FAILED_VERIFICATION
    end)
  end)

  describe("discovery", function()
    local function discover(practice)
      return curl.request {
        url = sb:fhir_base_for(practice) .. "/.well-known/smart-configuration",
        cacert = sb.ca_file,
      }
    end

    it("serves an eCW-shaped smart-configuration and counts it per practice", function()
      local r = discover("DISC1")
      assert.are.equal(200, r.status)
      local doc = r:json()
      assert.are.equal(sb.token_url, doc.token_endpoint)
      assert.is_string(doc.issuer)
      assert.is_true(contains(doc.grant_types_supported, "client_credentials"))
      assert.is_true(contains(doc.token_endpoint_auth_methods_supported, "private_key_jwt"))
      for _, cap in ipairs({ "client-confidential-asymmetric", "permission-v1", "permission-v2" }) do
        assert.is_true(contains(doc.capabilities, cap), cap)
      end
      assert.is_true(contains(doc.scopes_supported, "system/Patient.rs"))
      assert.is_nil(doc.token_endpoint_auth_signing_alg_values_supported)
      assert.are.equal(1, sb:stats().by_practice.DISC1.discovery_requests)
    end)

    it("can publish a relative token endpoint or omit it", function()
      sb:config { relative_token_endpoint = true }
      assert.are.equal("/oauth/oauth2/token", discover("DISC2"):json().token_endpoint)
      sb:config { relative_token_endpoint = sandbox.null, omit_token_endpoint = true }
      assert.is_nil(discover("DISC2"):json().token_endpoint)
    end)
  end)

  describe("token endpoint", function()
    it("issues a token for an RS384 assertion signed by the openssl CLI", function()
      local now = os.time()
      local input = jwt.b64url(cjson.encode { alg = "RS384", typ = "JWT", kid = "rsa-1" }) .. "." ..
        jwt.b64url(cjson.encode {
          iss = CLIENT, sub = CLIENT, aud = sb.token_url,
          exp = now + 240, iat = now, jti = jwt.random_jti(),
        })
      local infile = keydir .. "/signing-input"
      local f = assert(io.open(infile, "wb"))
      f:write(input)
      f:close()
      local p = assert(io.popen("openssl dgst -sha384 -sign " .. curl.quote(rsa.path) ..
        " -binary " .. curl.quote(infile)))
      local sig = p:read("*a")
      p:close()
      assert.are.equal(256, #sig)

      local r = token_request(input .. "." .. jwt.b64url(sig), "system/Patient.read system/MedicationRequest.rs")
      assert.are.equal(200, r.status, r.body)
      assert.are.equal("no-store", r.headers["cache-control"])
      local body = r:json()
      assert.are.equal("Bearer", body.token_type)
      assert.are.equal(300, body.expires_in)
      assert.are.equal("system/Patient.read system/MedicationRequest.rs", body.scope)
      assert.matches("^[%w_-]+$", body.access_token)
      assert.is_true(#body.access_token >= 43)
      assert.is_true(contains(sb:stats().issued_tokens, body.access_token))
    end)

    it("issues a token for an ES384 assertion with a raw R||S signature", function()
      local r = token_request(assertion { key = ec, kid = "ec-1" })
      assert.are.equal(200, r.status, r.body)
      local last = sb:stats().last_assertion
      assert.are.equal("ES384", last.header.alg)
      assert.are.equal(CLIENT, last.claims.iss)
      assert.is_true(last.ok)
    end)

    local rejections = {
      { "a DER-encoded ES384 signature", function() return assertion { key = ec, kid = "ec-1", der = true } end, "96 bytes" },
      { "a tampered payload", function()
          local h, _, s = assertion():match("^([^.]+)%.([^.]+)%.([^.]+)$")
          local p = jwt.b64url(cjson.encode { iss = CLIENT, sub = CLIENT, aud = sb.token_url,
            exp = os.time() + 60, jti = jwt.random_jti() })
          return h .. "." .. p .. "." .. s
        end, "invalid signature" },
      { "a wrong aud", function() return assertion { aud = sb.base_url .. "/oauth/token" } end, "aud" },
      { "an expired assertion", function() return assertion { exp_in = -5 } end, "expired" },
      { "exp more than 5 minutes ahead", function() return assertion { exp_in = 310 } end, "5 minutes" },
      { "a non-integer exp", function() return assertion { claims = { exp = os.time() + 60.5 } } end, "exp" },
      { "a missing jti", function() return assertion { claims = { jti = false } } end, "jti" },
      { "typ other than JWT", function() return assertion { header = { typ = "at+jwt" } } end, "typ" },
      { "an unknown kid", function() return assertion { kid = "nope" } end, "kid" },
      { "an alg that does not match the kid", function() return assertion { key = ec, kid = "rsa-1", alg = "ES384" } end, "alg" },
      { "iss different from sub", function() return assertion { claims = { sub = "someone-else" } } end, "iss and sub" },
      { "an unregistered client", function() return assertion { client_id = "stranger" } end, "unknown client" },
      { "HS256", function() return assertion { header = { alg = "HS256" } } end, "alg" },
      { "garbage", function() return "not.a.jwt" end, "malformed" },
    }
    for _, case in ipairs(rejections) do
      it("rejects " .. case[1] .. " with 401 invalid_client", function()
        local r = token_request(case[2]())
        assert.are.equal(401, r.status, r.body)
        local body = r:json()
        assert.are.equal("invalid_client", body.error)
        assert.is_truthy(body.error_description:find(case[3], 1, true), body.error_description)
      end)
    end

    it("accepts exp exactly 5 minutes ahead", function()
      assert.are.equal(200, token_request(assertion { exp_in = 300 }).status)
    end)

    it("rejects a replayed jti", function()
      local jws = assertion()
      assert.are.equal(200, token_request(jws).status)
      local r = token_request(jws)
      assert.are.equal(401, r.status)
      assert.are.equal("jti replayed", r:json().error_description)
    end)

    it("answers invalid_scope for unknown and denied scopes", function()
      local r = token_request(assertion(), "system/Patient.read system/Forbidden.read")
      assert.are.equal(400, r.status)
      assert.are.equal("invalid_scope", r:json().error)
      sb:config { deny_scope = "system/Patient.rs" }
      r = token_request(assertion(), "system/Patient.rs")
      assert.are.equal("invalid_scope", r:json().error)
    end)

    it("answers invalid_request / unsupported_grant_type for bad requests", function()
      local base = {
        { "client_assertion_type", JWT_BEARER }, { "client_assertion", assertion() },
        { "scope", "system/Patient.read" },
      }
      local r = token_request(nil, nil, base)
      assert.are.equal(400, r.status)
      assert.are.same({ "invalid_request", "missing grant_type" },
        { r:json().error, r:json().error_description })
      local with_grant = { { "grant_type", "password" }, table.unpack(base) }
      assert.are.equal("unsupported_grant_type", token_request(nil, nil, with_grant):json().error)
      local no_scope = { { "grant_type", "client_credentials" }, base[1], base[2] }
      assert.are.equal("invalid_request", token_request(nil, nil, no_scope):json().error)
      assert.are.equal(405, curl.request { url = sb.token_url, cacert = sb.ca_file }.status)
    end)

    it("honours grant_scope and token_type overrides", function()
      sb:config { grant_scope = "system/Patient.read", token_type = "bearer" }
      local body = token_request(assertion(), "system/Patient.read system/Coverage.read"):json()
      assert.are.equal("system/Patient.read", body.scope)
      assert.are.equal("bearer", body.token_type)
      assert.are.equal(403, fhir("GRANT", "Coverage?patient=p-1001", body.access_token).status)
    end)

    it("counts requests per client and keeps the decoded assertions", function()
      sb:register { client_id = "counted-client", kid = "k", key = rsa }
      sb:reset_stats()
      token_request(assertion { client_id = "counted-client", kid = "k" })
      token_request(assertion { client_id = "counted-client", kid = "k", exp_in = 600 })
      local s = sb:stats()
      local c = s.by_client["counted-client"]
      assert.are.same({ 2, 1, 1 }, { c.token_requests, c.token_ok, c.token_failed })
      assert.are.equal(2, #s.assertions)
      assert.are.equal(240, s.assertions[1].claims.exp - s.assertions[1].claims.iat)
      assert.are.equal(false, s.last_assertion.ok)
    end)
  end)

  describe("FHIR API", function()
    local token

    before_each(function()
      token = token or get_token("system/*.read")
    end)

    it("answers 401 with WWW-Authenticate without a valid token", function()
      local r = fhir("AUTH", "Patient/p-1001")
      assert.are.equal(401, r.status)
      assert.are.equal('Bearer realm="sandbox", error="invalid_token"', r.headers["www-authenticate"])
      local oo = r:json()
      assert.are.equal("OperationOutcome", oo.resourceType)
      assert.are.same({ "error", "login" }, { oo.issue[1].severity, oo.issue[1].code })
      assert.are.equal(401, fhir("AUTH", "Patient/p-1001", "made-up-token").status)
    end)

    it("rejects expired tokens and records expired uses", function()
      sb:config { token_lifetime = 0.3 }
      local short = get_token("system/Patient.read")
      assert.are.equal(200, fhir("EXPIRY", "Patient/p-1001", short).status)
      socket.sleep(0.4)
      local r = fhir("EXPIRY", "Patient/p-1001", short)
      assert.are.equal(401, r.status)
      assert.are.equal("expired", r:json().issue[1].code)
      local p = sb:stats().by_practice.EXPIRY
      assert.are.equal(1, p.expired_uses)
      assert.is_true(p.min_remaining_ms >= 0 and p.min_remaining_ms < 300, tostring(p.min_remaining_ms))
      assert.are.equal(2, p.fhir_requests)
    end)

    it("reads resources as application/fhir+json, JSON nulls included", function()
      local r = fhir("READ", "Patient/" .. data.fixtures.jane, token)
      assert.are.equal(200, r.status)
      assert.matches("^application/fhir%+json", r.headers["content-type"])
      local p = r:json()
      assert.are.equal("Doe", p.name[1].family)
      assert.are.equal("Practitioner/pr-1001", p.generalPractitioner[1].reference)
      assert.are.equal(cjson.null, fhir("READ", "Patient/" .. data.fixtures.null_gender_patient, token):json().gender)
      assert.are.equal(200, fhir("READ", "Practitioner/pr-1001", token).status)
    end)

    it("answers 404 OperationOutcome for unknown ids and types", function()
      local r = fhir("NF", "Patient/does-not-exist", token)
      assert.are.equal(404, r.status)
      assert.are.equal("OperationOutcome", r:json().resourceType)
      assert.are.equal(404, fhir("NF", "Spaceship/1", token).status)
    end)

    it("enforces scopes per type and interaction (403)", function()
      local v1 = get_token("system/Patient.read")
      local r = fhir("SCOPE", "MedicationRequest?patient=p-1001", v1)
      assert.are.equal(403, r.status)
      assert.are.equal("insufficient scope for MedicationRequest search", r:json().issue[1].details.text)
      local search_only = get_token("system/Patient.s")
      assert.are.equal(200, fhir("SCOPE", "Patient?family=Doe", search_only).status)
      r = fhir("SCOPE", "Patient/p-1001", search_only)
      assert.are.equal(403, r.status)
      assert.are.equal("insufficient scope for Patient read", r:json().issue[1].details.text)
      local read_only = get_token("system/Patient.r")
      assert.are.equal(403, fhir("SCOPE", "Patient?family=Doe", read_only).status)
      assert.are.equal(200, fhir("SCOPE", "Coverage/cov-1", get_token("system/*.rs")).status)
    end)

    it("finds both family members by phone in any format", function()
      for _, phone in ipairs({ "+15550100199", "5550100199", "(555) 010-0199", "+1 555 010 0199" }) do
        local b = fhir("PHONE", "Patient?phone=" .. phone:gsub("[^%w]", function(c)
          return string.format("%%%02X", c:byte())
        end), token):json()
        assert.are.same({ "p-1001", "p-1002" }, ids_of(b), phone)
      end
      assert.are.same({ "p-1003" }, ids_of(fhir("PHONE", "Patient?phone=555-010-0123", token):json()))
      assert.are.equal(0, fhir("PHONE", "Patient?phone=5550109999", token):json().total)
    end)

    it("supports identifier, name, birthdate and gender searches", function()
      local mrn = data.MRN_SYSTEM .. "%7CMRN-0001003"
      assert.are.same({ "p-1003" }, ids_of(fhir("SRCH", "Patient?identifier=" .. mrn, token):json()))
      assert.are.same({ "p-1003" }, ids_of(fhir("SRCH", "Patient?identifier=MRN-0001003", token):json()))
      assert.are.same({ "p-1001", "p-1002" }, ids_of(fhir("SRCH", "Patient?name=do", token):json()))
      assert.are.same({ "p-1001" }, ids_of(fhir("SRCH", "Patient?family=Doe&given=JA", token):json()))
      assert.are.same({ "p-1002" }, ids_of(fhir("SRCH", "Patient?family=Doe&birthdate=1968-11-12", token):json()))
      assert.are.same({ "p-1005" }, ids_of(fhir("SRCH", "Patient?name=bob", token):json()))
      assert.are.same({ "p-1001" },
        ids_of(fhir("SRCH", "Patient?family=doe&gender=female&unknown=ignored", token):json()))
    end)

    it("searches clinical resources by patient and status", function()
      local b = fhir("MEDS", "MedicationRequest?patient=p-1001&status=active", token):json()
      assert.are.same({ "mr-1" }, ids_of(b))
      assert.are.equal("Lisinopril 10 mg tablet", b.entry[1].resource.medicationCodeableConcept.text)
      assert.are.same({ "mr-1", "mr-2" }, ids_of(fhir("MEDS", "MedicationRequest?patient=Patient/p-1001", token):json()))
      assert.are.same({ "ai-1" }, ids_of(fhir("MEDS", "AllergyIntolerance?patient=p-1001", token):json()))
      assert.are.same({ "cov-1" }, ids_of(fhir("MEDS", "Coverage?patient=p-1001", token):json()))
      assert.are.same({ "enc-1", "enc-2" }, ids_of(fhir("MEDS", "Encounter?patient=p-1001", token):json()))
    end)

    it("pages with absolute next links", function()
      local url = sb:fhir_base_for("PAGES") .. "/Patient?family=Paging"
      local seen, pages = {}, 0
      while url do
        assert.are.equal(1, url:find(sb:fhir_base_for("PAGES") .. "/Patient?", 1, true), url)
        local r = curl.request { url = url, cacert = sb.ca_file, headers = { Authorization = "Bearer " .. token } }
        local b = r:json()
        assert.are.equal(60, b.total)
        pages = pages + 1
        assert.are.equal(20, #b.entry)
        for _, e in ipairs(b.entry) do
          assert.are.equal(sb:fhir_base_for("PAGES") .. "/Patient/" .. e.resource.id, e.fullUrl)
          seen[e.resource.id] = true
        end
        url = nil
        for _, l in ipairs(b.link) do
          if l.relation == "next" then url = l.url end
        end
      end
      local n = 0
      for _ in pairs(seen) do n = n + 1 end
      assert.are.same({ 3, 60 }, { pages, n })

      local b = fhir("PAGES", "Patient?family=Paging&_count=500", token):json()
      assert.are.equal(50, #b.entry)
      b = fhir("PAGES", "Patient?family=Paging&_count=50&page=2", token):json()
      assert.are.equal(10, #b.entry)
      assert.are.equal(1, #b.link) -- self only on the last page
    end)

    it("can point next links at a foreign origin", function()
      sb:config { next_link_origin = "https://evil.example:1" }
      local b = fhir("EVIL", "Patient?family=Paging", token):json()
      local next_url
      for _, l in ipairs(b.link) do
        if l.relation == "next" then next_url = l.url end
      end
      assert.are.equal("https://evil.example:1/fhir/r4/EVIL/Patient?family=Paging&page=2", next_url)
    end)

    it("tracks the smallest remaining token lifetime", function()
      sb:reset_stats()
      assert.are.equal(200, fhir("REMAIN", "Patient/p-1001", token).status)
      local s = sb:stats()
      assert.is_true(s.min_remaining_ms > 0 and s.min_remaining_ms <= 300000)
      assert.are.equal(1, s.token_uses[token])
    end)

    it("forgets every token on revoke_all", function()
      local t = get_token("system/Patient.read")
      assert.are.equal(200, fhir("REVOKE", "Patient/p-1001", t).status)
      sb:revoke_all()
      token = nil
      assert.are.equal(401, fhir("REVOKE", "Patient/p-1001", t).status)
    end)
  end)

  describe("faults", function()
    it("apply in registration order, then normal service resumes", function()
      sb:fault { target = "token", status = 503, times = 1, headers = { ["Retry-After"] = "1" },
                 body = '{"error":"temporarily_unavailable"}' }
      sb:fault { target = "token", status = 500, times = 1, body = "<html>oops</html>", content_type = "text/html" }
      local r1 = token_request(assertion())
      assert.are.same({ 503, "1" }, { r1.status, r1.headers["retry-after"] })
      local r2 = token_request(assertion())
      assert.are.same({ 500, "text/html" }, { r2.status, r2.headers["content-type"] })
      assert.are.equal(200, token_request(assertion()).status)
    end)

    it("can close the connection without a response, or delay it", function()
      local t = get_token("system/Patient.read")
      sb:fault { target = "fhir", close = true, times = 1 }
      local r = fhir("FAULT", "Patient/p-1001", t)
      assert.are.equal(52, r.exit_code) -- CURLE_GOT_NOTHING
      sb:fault { target = "discovery", delay_ms = 300, times = 1 }
      local started = socket.gettime()
      r = curl.request { url = sb:fhir_base_for("FAULT") .. "/.well-known/smart-configuration", cacert = sb.ca_file }
      assert.are.equal(200, r.status)
      assert.is_true(socket.gettime() - started >= 0.3)
      assert.are.equal(200, fhir("FAULT", "Patient/p-1001", t).status)
      assert.are.equal(2, sb:stats().by_practice.FAULT.faults_applied)
    end)
  end)

  describe("HTTP layer", function()
    local token

    setup(function()
      token = get_token("system/*.read")
    end)

    it("reuses one keep-alive connection for several requests", function()
      local url = sb:fhir_base_for("KEEP") .. "/Patient/p-1001"
      local codes, exit_code = curl.multi({ url, url, url, url, url },
        { cacert = sb.ca_file, headers = { Authorization = "Bearer " .. token } })
      assert.are.equal(0, exit_code)
      assert.are.same({ 200, 200, 200, 200, 200 }, codes)
      assert.are.equal(1, sb:stats().by_practice.KEEP.connections)
    end)

    it("handles Expect: 100-continue", function()
      local r = curl.request {
        url = sb.token_url, method = "POST", cacert = sb.ca_file,
        headers = { Expect = "100-continue" },
        form = {
          { "grant_type", "client_credentials" }, { "client_assertion_type", JWT_BEARER },
          { "client_assertion", assertion() }, { "scope", "system/Patient.read" },
          { "padding", string.rep("x", 4096) },
        },
      }
      assert.are.equal(200, r.status, r.body)
      assert.are.equal(2, r.blocks) -- "100 Continue" then the response
    end)

    it("survives 64 concurrent keep-alive clients", function()
      local url = sb:fhir_base_for("LOAD") .. "/Patient?family=Doe"
      local args = {}
      for _ = 1, 10 do
        args[#args + 1] = "-o /dev/null -w '%{http_code}\\n' " .. curl.quote(url)
      end
      local one = "curl -sS --max-time 20 --cacert " .. curl.quote(sb.ca_file) ..
        " -H " .. curl.quote("Authorization: Bearer " .. token) .. " " .. table.concat(args, " ")
      local p = assert(io.popen("for i in $(seq 64); do " .. one .. " & done; wait"))
      local out = p:read("*a")
      p:close()
      local ok, total = 0, 0
      for code in out:gmatch("%d+") do
        total = total + 1
        if code == "200" then ok = ok + 1 end
      end
      assert.are.same({ 640, 640 }, { total, ok })
      local load = sb:stats().by_practice.LOAD
      assert.are.same({ 640, 64 }, { load.fhir_requests, load.connections })
      assert.is_true(sb:running())
    end)

    it("logs method, path and status only", function()
      assert.are.equal(200, fhir("LOG", "Patient?family=Doe&birthdate=1970-03-01", token).status)
      local log = sb:log()
      assert.is_truthy(log:find("GET /fhir/r4/LOG/Patient 200", 1, true))
      assert.is_falsy(log:find("birthdate", 1, true))
      assert.is_falsy(log:find(token, 1, true))
      for _, t in ipairs(sb:stats().issued_tokens) do
        assert.is_falsy(log:find(t, 1, true))
      end
    end)
  end)
end)

describe("sandbox EHR over plain HTTP", function()
  local sb, keydir, key

  setup(function()
    keydir = sandbox.tmpdir("ecw-spec-keys")
    key = sandbox.keygen(keydir, "ES384", { traditional = true })
    sb = sandbox.start { tls = false, clients = {
      { client_id = "file-client", kid = "k1", alg = "ES384", public_key_pem = key.public_pem },
    } }
  end)

  teardown(function()
    sb:stop()
    os.execute("rm -rf " .. curl.quote(keydir))
  end)

  it("loads --clients and runs a token flow", function()
    local f = assert(io.open(key.path))
    assert.matches("BEGIN EC " .. "PRIVATE KEY", f:read("*a"))
    f:close()
    local r = curl.request {
      url = sb.token_url, method = "POST",
      form = {
        { "grant_type", "client_credentials" }, { "client_assertion_type", JWT_BEARER },
        { "client_assertion", jwt.assertion { key = key, kid = "k1", client_id = "file-client", aud = sb.token_url } },
        { "scope", "system/Patient.rs" },
      },
    }
    assert.are.equal(200, r.status, r.body)
    local p = curl.request {
      url = sb.fhir_base .. "/Patient/p-1003",
      headers = { Authorization = "Bearer " .. r:json().access_token },
    }
    assert.are.equal("Unique", p:json().name[1].family)
  end)

  -- Sends raw bytes and returns everything the server answers before
  -- closing (or 2 s of silence). hang_up: close right after sending.
  local function raw(bytes, hang_up)
    local c = assert(socket.tcp())
    c:settimeout(2)
    assert(c:connect("127.0.0.1", sb.port))
    c:send(bytes)
    if hang_up then
      c:close()
      return ""
    end
    local out = {}
    while true do
      local chunk, err, partial = c:receive(4096)
      out[#out + 1] = chunk or partial
      if not chunk then
        break
      end
    end
    c:close()
    return table.concat(out)
  end

  it("publishes http:// URLs and no CA", function()
    assert.matches("^http://", sb.base_url)
    assert.is_nil(sb.ca_file)
    assert.are.equal(200, curl.request { url = sb.fhir_base .. "/metadata" }.status)
  end)

  it("answers garbage with 400 and keeps serving", function()
    assert.matches("^HTTP/1%.1 400 ", raw("HELLO\r\n\r\n"))
    assert.matches("^HTTP/1%.1 400 ", raw("GET / HTTP/1.1\r\n\r\n")) -- no Host
    assert.matches("^HTTP/1%.1 505 ", raw("GET / HTTP/2.0\r\n\r\n"))
    assert.matches("^HTTP/1%.1 431 ", raw("GET / HTTP/1.1\r\nHost: x\r\nX: " .. string.rep("a", 20000) .. "\r\n\r\n"))
    assert.matches("^HTTP/1%.1 413 ",
      raw("POST /oauth/oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n"))
    raw("POST /oauth/oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc", true) -- truncated
    assert.are.equal(200, curl.request { url = sb.fhir_base .. "/metadata" }.status)
  end)

  it("serves pipelined requests in order and honours Connection: close", function()
    local req = "GET /fhir/r4/PIPE/metadata HTTP/1.1\r\nHost: x\r\n\r\n"
    local out = raw(req .. req .. "GET /fhir/r4/PIPE/metadata HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    local n = select(2, out:gsub("HTTP/1%.1 200 OK", ""))
    assert.are.equal(3, n)
    assert.is_truthy(out:find("Connection: close", 1, true))
  end)

  it("decodes chunked request bodies", function()
    local body = "grant_type=password"
    local chunked = string.format("%x\r\n%s\r\n0\r\n\r\n", #body, body)
    local out = raw("POST /oauth/oauth2/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" ..
      "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n" .. chunked)
    assert.is_truthy(out:find("unsupported_grant_type", 1, true), out)
  end)
end)

describe("sandbox process lifecycle", function()
  local function alive(pid)
    local f = io.open("/proc/" .. pid .. "/stat")
    if not f then return false end
    local stat = f:read("*a")
    f:close()
    return stat:match(".*%) (%S)") ~= "Z"
  end

  it("stop() kills and reaps the server", function()
    local sb = sandbox.start { tls = false }
    local pid = sb.pid
    assert.is_true(alive(pid))
    sb:stop()
    assert.is_false(alive(pid))
    assert.is_nil(io.open(sb.dir .. "/sandbox.json"))
  end)

  it("the server exits by itself when the process that started it dies", function()
    local p = assert(io.popen("lua5.4 -e " .. curl.quote(
      "package.path = './?.lua;' .. package.path " ..
      "local sb = require('spec.support.sandbox').start { tls = false, keep_dir = true } " ..
      "print(sb.pid) print(sb.dir) io.stdout:flush() os.exit(0)")))
    local pid = tonumber(p:read("*l"))
    local dir = p:read("*l")
    p:close()
    assert.is_number(pid)
    local deadline = socket.gettime() + 5
    while alive(pid) and socket.gettime() < deadline do
      socket.sleep(0.1)
    end
    assert.is_false(alive(pid))
    os.execute("rm -rf " .. curl.quote(dir))
  end)
end)

describe("sandbox jwt_verify", function()
  local jwt_verify = require "sandbox.jwt_verify"
  local pkey = require "openssl.pkey"
  local digest = require "openssl.digest"

  it("converts R||S to exactly OpenSSL's DER, leading zeros included", function()
    local key = pkey.new { type = "EC", curve = "secp384r1" }
    local short_ints = 0
    for i = 1, 400 do
      local der = key:sign(digest.new("sha384"):update("msg " .. i))
      local raw = jwt.der_to_raw(der, 48)
      assert.are.equal(96, #raw)
      assert.are.equal(der, jwt_verify.raw_ecdsa_to_der(raw))
      if raw:byte(1) == 0 or raw:byte(49) == 0 or raw:byte(1) >= 0x80 then
        short_ints = short_ints + 1
      end
    end
    assert.is_true(short_ints > 0) -- the interesting encodings did occur
  end)

  it("decodes base64url strictly", function()
    assert.are.equal("hi?", jwt_verify.base64url_decode("aGk_"))
    assert.is_nil(jwt_verify.base64url_decode("aGk/"))  -- standard alphabet
    assert.is_nil(jwt_verify.base64url_decode("aGk="))  -- padding
    assert.is_nil(jwt_verify.base64url_decode("aGl"))   -- non-canonical trailing bits
    assert.is_nil(jwt_verify.base64url_decode("a"))     -- impossible length
  end)
end)
