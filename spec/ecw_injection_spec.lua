-- Injection (issue 6, item 5): identifiers, phone numbers and names holding
-- "&", "#", "%", "?", "/", "..", CR/LF, quotes or non-ASCII are encoded so
-- they can never change the path, the query or a header.
--
-- Two kinds of proof:
--   * the bytes on the wire: a capture server (a child lua5.4 process on a
--     loopback port, plain HTTP) records every request head exactly as it
--     arrived; the FHIR base points at it while the token still comes from
--     the sandbox.  Each value must arrive as one percent-encoded query
--     value that decodes back to exactly what the script passed, with the
--     request line and the header set unchanged;
--   * results from the sandbox EHR: a value that would select a patient if
--     it were spliced into the query ("Doe&_id=p-1001", "Doe#", "D%6Fe")
--     finds nobody.  (The sandbox does not expose the query it parsed; see
--     the report for the switch that would allow asserting on it.)
package.path = "./lua/?.lua;./?.lua;" .. package.path
package.cpath = (_VERSION == "Lua 5.3" and "build/5.3/?.so;" or "build/5.4/?.so;") .. package.cpath

local sandbox = require "spec.support.sandbox"
local data = require "sandbox.data"
local core = require "ecw.core"
local ecw = require "ecw"
local cjson = require "cjson"

local CLIENT_ID = "ecw-injection-spec"

-- Values a caller (or a speech recogniser) could hand over.
local HOSTILE = {
  "Doe&_id=p-1001", "Doe&family=Doe", "Doe#", "Doe#&_id=p-1001", "Doe?_id=p-1001",
  "D%6Fe", "Doe%26_id%3Dp-1001", "%", "%%", "%zz", "Doe/../Practitioner", "../../metadata",
  "..", "/", "Doe\r\nX-Injected: 1", "Doe\nX-Injected: 1", "Doe\r", "Doe\0x",
  "Doe\"'`", "O'Brien", "Doe;_id=p-1001", "Doe+Smith", "Doe Smith", "Doe=x", "Doe|x",
  "Zoë", "Ñuñez", "李", "\240\159\152\128", "Doe\255\254", "\\..\\",
  "Doe HTTP/1.1\r\nHost: evil", ("A"):rep(2000),
}

-------------------------------------------------------- the capture server
local CAPTURE = [==[
local socket = require "socket"
local out = arg[1]
local srv = assert(socket.bind("127.0.0.1", 0))
local _, port = srv:getsockname()
io.stdout:write(port, "\n")
io.stdout:flush()
srv:settimeout(60)                  -- exit when idle for a minute
local BODY = '{"resourceType":"Bundle","type":"searchset","total":0,"entry":[]}'
while true do
  local c = srv:accept()
  if not c then break end
  c:settimeout(5)
  -- Byte by byte: luasocket's line mode would drop the CRs we look for.
  local head = {}
  local tail = ""
  while tail ~= "\r\n\r\n" do
    local b = c:receive(1)
    if not b then break end
    head[#head + 1] = b
    tail = (tail .. b):sub(-4)
  end
  head = table.concat(head)
  local f = io.open(out, "ab")
  f:write(#head, "\n", head)
  f:close()
  c:send("HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: " ..
    #BODY .. "\r\nConnection: close\r\n\r\n" .. BODY)
  c:close()
  if head:find("^GET /__quit") then break end
end
]==]

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

describe("injection", function()
  local sb, dir, key, kid
  local cap = {}                        -- pid, port, proc, out
  local practice_n = 0

  local function configure_sandbox(extra)
    practice_n = practice_n + 1
    local practice = string.format("INJ%02d", practice_n)
    local opts = {
      fhir_base = sb:fhir_base_for(practice), client_id = CLIENT_ID,
      private_key = key.path, kid = kid, ca_file = sb.ca_file,
    }
    for k, v in pairs(extra or {}) do
      opts[k] = v
    end
    return assert(ecw.configure(opts)), practice
  end

  -- A client whose FHIR base is the capture server.
  local function configure_capture()
    return assert(ecw.configure {
      name = "capture", fhir_base = "http://127.0.0.1:" .. cap.port .. "/fhir/r4/CAP",
      client_id = CLIENT_ID, private_key = key.path, kid = kid,
      token_url = sb.token_url, ca_file = sb.ca_file,
    })
  end

  -- The request heads the capture server received since the last call.
  local function captured()
    local f = io.open(cap.out, "rb")
    if not f then
      return {}
    end
    local text = f:read("a")
    f:close()
    os.remove(cap.out)
    local heads, pos = {}, 1
    while pos <= #text do
      local len, after = text:match("^(%d+)\n()", pos)
      assert(len, "capture file is garbled")
      heads[#heads + 1] = text:sub(after, after + tonumber(len) - 1)
      pos = after + tonumber(len)
    end
    return heads
  end

  -- Splits a request head into its request line and header names.
  local function parse_head(head)
    assert.equal("\r\n\r\n", head:sub(-4), "head must end with CRLF CRLF")
    local lines = {}
    for line in head:sub(1, -3):gmatch("([^\n]*)\n") do
      lines[#lines + 1] = line
    end
    for i, line in ipairs(lines) do
      assert.equal("\r", line:sub(-1), "a bare LF in line " .. i)
      lines[i] = line:sub(1, -2)
      assert.is_nil(lines[i]:find("[\r%z]"), "CR or NUL inside line " .. i)
    end
    local method, target, version = lines[1]:match("^(%u+) (%S+) (HTTP/1%.1)$")
    assert(method, "odd request line: " .. lines[1])
    local names = {}
    for i = 2, #lines do
      local name = lines[i]:match("^([%w%-]+):")
      assert(name, "odd header line: " .. lines[i])
      names[#names + 1] = name:lower()
    end
    table.sort(names)
    return method, target, table.concat(names, ","), version
  end

  -- The single request of a call: its target, checked to be well formed,
  -- and its header names.
  local function one_request()
    local heads = captured()
    assert.equal(1, #heads, "expected one request")
    local method, target, names = parse_head(heads[1])
    assert.equal("GET", method)
    assert.is_nil(target:find("[^A-Za-z0-9%-%._~%%=&?/]"), "unencoded byte in " .. target)
    assert.is_nil(target:find("#", 1, true))
    local _, marks = target:gsub("%?", "")
    assert(marks <= 1, "several '?' in " .. target)
    return target, names
  end

  -- { {name, value}, ... } from a target's query, percent-decoded.
  local function query_pairs(target)
    local path, q = target:match("^([^?]*)%??(.*)$")
    local list = {}
    for part in q:gmatch("[^&]+") do
      local n, v = part:match("^([^=]*)=(.*)$")
      assert(n, "a query part without '=': " .. part)
      list[#list + 1] = { unescape(n), unescape(v) }
    end
    return path, list
  end

  setup(function()
    sb = sandbox.start { tls = true }
    dir = sandbox.tmpdir("ecw-injection-spec")
    key = sandbox.keygen(dir, "RS384")
    kid = assert(core.jwk(key.path)).kid
    sb:register { client_id = CLIENT_ID, kid = kid, key = key }

    local script = dir .. "/capture.lua"
    local f = assert(io.open(script, "wb"))
    f:write(CAPTURE)
    f:close()
    cap.out = dir .. "/captured.bin"
    cap.proc = assert(io.popen("echo $$; exec lua5.4 '" .. script .. "' '" .. cap.out .. "'", "r"))
    cap.pid = tonumber(cap.proc:read("l"))
    cap.port = tonumber(cap.proc:read("l"))
    assert(cap.pid and cap.port, "capture server did not start")
  end)

  teardown(function()
    if cap.pid then
      os.execute("kill " .. cap.pid .. " 2>/dev/null")
      cap.proc:close()
    end
    if sb then sb:stop() end
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  after_each(function()
    sb:clear_faults()
    os.remove(cap.out)
  end)

  describe("on the wire", function()
    local HEADERS                       -- the header set of a benign request

    it("sends a benign search as expected", function()
      local c = configure_capture()
      assert.same({}, assert(c:patients { family = "Doe" }))
      local target, names = one_request()
      assert.equal("/fhir/r4/CAP/Patient?family=Doe", target)
      assert.equal("accept,accept-encoding,authorization,host,user-agent", names)
      HEADERS = names
    end)

    for _, criterion in ipairs({ "family", "given", "name", "identifier", "gender" }) do
      it("encodes every hostile " .. criterion .. " as one query value", function()
        local c = configure_capture()
        for _, v in ipairs(HOSTILE) do
          local list, err = c:patients { [criterion] = v }
          assert.same({}, list, err and err.message)
          local target, names = one_request()
          assert.equal(HEADERS, names, "headers changed for " .. ("%q"):format(v))
          local path, q = query_pairs(target)
          assert.equal("/fhir/r4/CAP/Patient", path)
          assert.same({ { criterion, v } }, q)
        end
      end)
    end

    it("keeps several criteria apart", function()
      local c = configure_capture()
      for _, v in ipairs(HOSTILE) do
        c:patients { family = v, given = v, birthdate = "1970-03-01" }
        local _, q = query_pairs(one_request())
        assert.same({ { "birthdate", "1970-03-01" }, { "family", v }, { "given", v } }, q)
      end
    end)

    it("encodes values and repeated values of ecw.search", function()
      local c = configure_capture()
      for _, v in ipairs(HOSTILE) do
        c:search("Patient", { phone = v, identifier = { v, "x" }, _count = 5 })
        local target = one_request()
        local path, q = query_pairs(target)
        assert.equal("/fhir/r4/CAP/Patient", path)
        assert.same({ { "_count", "5" }, { "identifier", v }, { "identifier", "x" }, { "phone", v } }, q)
      end
      -- "+" is encoded, so servers cannot read it as a space.
      c:search("Patient", { phone = "+15550100123" })
      assert.equal("/fhir/r4/CAP/Patient?phone=%2B15550100123", (one_request()))
    end)

    it("sends non-ASCII as UTF-8 percent-escapes", function()
      local c = configure_capture()
      c:patients { family = "Zoë" }
      assert.equal("/fhir/r4/CAP/Patient?family=Zo%C3%AB", (one_request()))
      c:patients { given = "李" }
      assert.equal("/fhir/r4/CAP/Patient?given=%E6%9D%8E", (one_request()))
    end)

    it("sends the helpers' patient id in the query, validated", function()
      local c = configure_capture()
      c:medications("p-1001")
      assert.equal("/fhir/r4/CAP/MedicationRequest?patient=p-1001&status=active", (one_request()))
      c:allergies({ id = "p.1-x" })
      assert.equal("/fhir/r4/CAP/AllergyIntolerance?patient=p.1-x", (one_request()))
    end)

    it("normalises phone numbers to digits before they reach the query", function()
      local c = configure_capture()
      for _, v in ipairs({ "5550100123&_id=p-1001", "5550100123#", "555-010-0123\r\nX: 1",
                           "sip:5550100123@host?x=y", "tel:+1-555-010-0123;x=../y" }) do
        c:patients { phone = v }
        for _, head in ipairs(captured()) do
          local _, target, names = parse_head(head)
          assert.equal(HEADERS, names)
          local path, q = query_pairs(target)
          assert.equal("/fhir/r4/CAP/Patient", path)
          assert.equal(1, #q)
          assert.equal("phone", q[1][1])
          assert.matches("^[%d%+%(%) %-]+$", q[1][2])
        end
      end
    end)

    it("makes no request at all for ids, types and names that would change the path", function()
      local c = configure_capture()
      local bad_ids = { "../metadata", "..", ".", "p-1/../x", "p-1%2F..%2Fx", "p-1?x=y", "p-1#",
                        "p-1\r\nX: 1", "p 1", "Zoë", "", ("a"):rep(65), "/p-1", "p-1/" }
      for _, id in ipairs(bad_ids) do
        assert.has_error(function() c:read("Patient", id) end)
        assert.has_error(function() c:patient { id = id } end)
        assert.has_error(function() c:medications(id) end)
        assert.has_error(function() c:practitioner { id = id } end)
      end
      for _, t in ipairs({ "Patient/../Practitioner", "Patient?x", "patient", "Patient#", "../Patient", "" }) do
        assert.has_error(function() c:read(t, "p-1") end)
        assert.has_error(function() c:search(t, {}) end)
      end
      for _, n in ipairs({ "a&b", "a=b", "a#", "a?b", "a b", "a\r\nb", "a/b", "", "ä" }) do
        assert.has_error(function() c:search("Patient", { [n] = "x" }) end)
      end
      for _, d in ipairs({ "1970-03-01&_id=p-1", "1970-03-01#", "1970/03/01" }) do
        assert.has_error(function() c:patients { family = "Doe", birthdate = d } end)
      end
      assert.same({}, captured())
    end)
  end)

  describe("against the sandbox", function()
    it("finds nobody with values that would select a patient if spliced in", function()
      local _, practice = configure_sandbox()
      for _, case in ipairs({
        { family = "Doe&_id=p-1001" }, { family = "Doe#" }, { family = "Doe?_id=p-1001" },
        { family = "D%6Fe" }, { family = "Doe%" }, { family = "Doe\r\nX-Injected: 1" },
        { family = "Doe/../Patient" }, { given = "Jane#" }, { given = "J%61ne" },
        { identifier = "MRN-0001001#" }, { identifier = "MRN-0001001&family=Doe" },
        { identifier = "x#|MRN-0001001" }, { name = "Smith&birthdate=1955-12-31" },
        { family = "Zoë" }, { gender = "female&_id=p-1001" }, { family = "Doe\"'" },
      }) do
        local list = assert(ecw.patients(case))
        local k, v = next(case)
        assert.same({}, list, k .. " = " .. ("%q"):format(v))
        local p, perr = ecw.patient(case)
        assert.is_nil(p)
        assert.equal("not_found", perr.code)
        for _, s in ipairs({ v, (v:gsub("[\r\n]", "")) }) do
          assert.is_nil(perr.message:find(s, 1, true))
        end
      end
      assert.is_true(sb:stats().by_practice[practice].fhir_requests > 0)
    end)

    it("still finds what the values mean once decoded", function()
      configure_sandbox()
      local p = assert(ecw.patient { identifier = data.MRN_SYSTEM .. "|MRN-0001001" })
      assert.equal(data.fixtures.jane, p.id)
      p = assert(ecw.patient { family = "Doe", given = "Jane" })
      assert.equal(data.fixtures.jane, p.id)
      local list = assert(ecw.search("Patient", { phone = "+15550100123" }))
      assert.equal(1, #list)
      -- A comma is FHIR's OR: one value, the server's meaning.
      list = assert(ecw.search("Patient", { _id = data.fixtures.jane .. "," .. data.fixtures.john }))
      assert.equal(2, #list)
    end)

    it("refuses a read id that would climb out of the resource", function()
      local _, practice = configure_sandbox()
      for _, id in ipairs({ "../metadata", "..", "p-1001/../../metadata", "p-1001?_format=xml" }) do
        local ok, msg = pcall(ecw.read, "Patient", id)
        assert.is_false(ok)
        assert.matches("bad argument #2 'id'", msg)
        assert.is_nil(msg:find(id, 1, true))
      end
      assert.is_nil(sb:stats().by_practice[practice])
    end)

    it("sends no request for a caller ID that is not a number", function()
      local _, practice = configure_sandbox()
      for _, v in ipairs({ "5550100199&_id=p-1003", "Doe", "5550100199#", "5550100199?x", "\r\n", "5550100199\r\nX: 1" }) do
        local p, err = ecw.patient { phone = v }
        assert.is_nil(p)
        assert.equal("not_found", err.code)
      end
      assert.is_nil(sb:stats().by_practice[practice])
    end)

    it("follows next links only below the FHIR base", function()
      local _, practice = configure_sandbox()
      local base = sb:fhir_base_for(practice)
      assert(ecw.warm { "Patient" })          -- no token request inside the loop
      for _, url in ipairs({
        sb:fhir_base_for("OTHER") .. "/Patient?page=2",
        base .. "/../OTHER/Patient?page=2",
        base .. "/%2e%2e/OTHER/Patient?page=2",
        base .. "/Patient%2F..%2F..%2FOTHER?page=2",
        base .. "X/Patient?page=2",
        sb.token_url,
        sb.base_url .. "/fhir/r4/" .. practice .. "\\..\\OTHER",
      }) do
        sb:fault { target = "fhir", status = 200, times = 1, content_type = "application/fhir+json",
          body = cjson.encode { resourceType = "Bundle", type = "searchset",
            link = { { relation = "next", url = url } }, entry = {} } }
        local before = sb:stats()
        local list, meta = assert(ecw.search("Patient", { family = "Paging" }))
        assert.same({}, list)
        assert.equal(1, meta.pages, url)
        assert.is_string(meta.truncated, url)
        local after = sb:stats()
        assert.equal(before.fhir_requests + 1, after.fhir_requests, "followed " .. url)
        assert.equal(before.token_requests, after.token_requests)
      end
      assert.is_nil(sb:stats().by_practice.OTHER)
      -- A link with CR/LF or spaces is not followed either.
      sb:fault { target = "fhir", status = 200, times = 1, content_type = "application/fhir+json",
        body = cjson.encode { resourceType = "Bundle", type = "searchset", entry = {},
          link = { { relation = "next", url = base .. "/Patient?page=2\r\nX-Injected: 1" } } } }
      local _, meta = assert(ecw.search("Patient", { family = "Paging" }))
      assert.equal("bad_link", meta.truncated)
      -- Below the base, paging goes on.
      local list = assert(ecw.search("Patient", { family = "Paging" }))
      assert.equal(data.fixtures.paging_count, #list)
    end)
  end)
end)
