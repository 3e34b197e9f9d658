-- The PHI scan (issue 6, item 6).  busted runs spec files in name order in
-- one process, so this file runs last and reads what the whole run logged:
--
--   rm -f /tmp/ecw-scan.log /tmp/ecw-scan.tokens
--   ECW_LOG_FILE=/tmp/ecw-scan.log ECW_LOG_LEVEL=debug \
--   ECW_ISSUED_TOKENS_FILE=/tmp/ecw-scan.tokens \
--     busted --lua=lua5.4 spec
--
-- ECW_LOG_FILE makes every Lua state that loads ecw (busted's, worker
-- threads', the embedding hosts' child processes) append every line at
-- ECW_LOG_LEVEL to that file, whatever logger a spec sets.  The scan then
-- searches every line for the sandbox data's names, phones, birth dates,
-- MRNs and ids, for values the specs planted or passed in, for JWTs and
-- PEM material, and for every access token any sandbox issued during the
-- run (the sandbox appends each one to ECW_ISSUED_TOKENS_FILE).  It finds
-- none, or fails.
--
-- Without ECW_LOG_FILE the scan is pending (a plain `busted spec` run).
package.path = "./lua/?.lua;./?.lua;" .. package.path
package.cpath = (_VERSION == "Lua 5.3" and "build/5.3/?.so;" or "build/5.4/?.so;") .. package.cpath

local data = require "sandbox.data"

local LOG = os.getenv("ECW_LOG_FILE")
local TOKENS = os.getenv("ECW_ISSUED_TOKENS_FILE")
if LOG == "" then LOG = nil end
if TOKENS == "" then TOKENS = nil end

local function read_all(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local s = f:read("a")
  f:close()
  return s
end

local function word(s)
  return "%f[%w]" .. s:gsub("%p", "%%%0") .. "%f[%W]"
end

-- Values specs pass in or plant in hostile bodies that are not in data.phi.
local PLANTED = {
  "Venomsworth", "Hostilia", "MRN-HOSTILE", "O'Brien", "Zo%C3%AB", "Zoë", "Ñuñez",
  "Lisinopril", "Metformin", "Atorvastatin", "Albuterol", "Springfield", "Example Street",
}

-- Fragments that only a leak would put into a line.
local FORBIDDEN = {
  "eyJ",                       -- a JWT: access token or client assertion
  "-----", "BEGIN", "PRIVATE KEY", "Bearer", "access_token", "client_assertion",
  "client_id", "urn:oid", "fhir/r4", "://", "&", "Patient/", "Practitioner/",
  "family=", "given=", "name=", "phone=", "identifier=", "birthdate=", "_id=",
}

describe("PHI scan of the whole run's log", function()
  if not LOG then
    pending("set ECW_LOG_FILE=/path ECW_LOG_LEVEL=debug (and ECW_ISSUED_TOKENS_FILE) " ..
      "for a whole `busted spec` run to scan its log")
    return
  end

  -- lines: every line; bodies: the distinct lines without their timestamp
  -- (which is a date), and blob: those joined by "\n", searched at once.
  local lines, bodies, blob

  setup(function()
    local text = read_all(LOG)
    assert(text, "ECW_LOG_FILE is set but " .. LOG .. " does not exist: nothing was logged")
    lines, bodies = {}, {}
    local seen = {}
    for l in text:gmatch("[^\n]+") do
      lines[#lines + 1] = l
      local b = l:gsub("^%S+ ", "")
      if not seen[b] then
        seen[b] = true
        bodies[#bodies + 1] = b
      end
    end
    blob = "\n" .. table.concat(bodies, "\n") .. "\n"
  end)

  -- Fails with the line holding the match when pattern (or plain text)
  -- occurs anywhere in the log.
  local function refute(pattern, plain, what)
    local at = blob:find(pattern, 1, plain)
    if at then
      local from = blob:sub(1, at):match(".*\n()") or 1
      local line = blob:match("^[^\n]*", from)
      error(what .. " in the log: " .. line, 2)
    end
  end

  it("logged the run at debug", function()
    local level = os.getenv("ECW_LOG_LEVEL")
    assert(level == nil or level == "" or level == "debug", "run the scan with ECW_LOG_LEVEL=debug")
    assert(#lines > 100, "only " .. #lines .. " lines: was the whole suite run?")
    for _, want in ipairs({ "debug ecw: configure ", "debug ecw: request ", "debug ecw: phone_form ",
                            "method=ecw.patient", "method=ecw.patients", "method=ecw.read",
                            "method=ecw.search", "method=ecw.medications", "code=not_found",
                            "code=ambiguous", "code=bad_response", "next_link_refused" }) do
      assert(blob:find(want, 1, true), "no line has " .. want)
    end
  end)

  it("has only lines of the documented shape", function()
    for i, l in ipairs(lines) do
      assert(l:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ %a+ ecw: "),
        "line " .. i .. " has an unexpected start: " .. l)
    end
    local LEVELS = { debug = true, info = true, warn = true, error = true }
    for _, b in ipairs(bodies) do
      local level, rest = b:match("^(%a+) ecw: [%w_]+(.*)$")
      assert(level and LEVELS[level], "a line has an unexpected shape: " .. b)
      for field in (rest .. " "):gmatch(" ([^ ]*)") do
        assert(field == "" or field:match("^[%w_]+=[%w%._%-/:%+%[%]%?]+$"), "odd field in: " .. b)
      end
    end
  end)

  it("carries no name, phone, birth date, MRN or id of the data set", function()
    for _, s in ipairs(data.phi) do
      refute(word(s), false, "PHI (" .. s .. ")")
    end
    for _, by_id in pairs(data.resources) do
      for id in pairs(by_id) do
        refute(word(id), false, "an id (" .. id .. ")")
      end
    end
    refute("%d%d%d%d%-%d%d%-%d%d", false, "a date")
    refute("555[%s%-%.%)]*01%d", false, "a phone number")
    refute("%d%d%d%d%d%d%d%d%d%d", false, "a long number")
  end)

  it("carries nothing the specs planted or passed in, and no secrets", function()
    for _, s in ipairs(PLANTED) do
      refute(s, true, "a planted value (" .. s .. ")")
    end
    for _, s in ipairs(FORBIDDEN) do
      refute(s, true, "'" .. s .. "'")
    end
  end)

  it("carries none of the tokens of a sandbox started here", function()
    local sandbox = require "spec.support.sandbox"
    local core = require "ecw.core"
    local ecw = require "ecw"
    local sb = sandbox.start { tls = true }
    local dir = sandbox.tmpdir("ecw-phi-scan")
    local ok, err = pcall(function()
      local key = sandbox.keygen(dir, "ES384")
      local kid = assert(core.jwk(key.path)).kid
      sb:register { client_id = "ecw-phi-scan", kid = kid, key = key }
      assert(ecw.configure { name = "scan", fhir_base = sb:fhir_base_for("PHISCAN"),
        client_id = "ecw-phi-scan", private_key = key.path, kid = kid, ca_file = sb.ca_file })
      local c = assert(ecw.client("scan"))
      assert(c:warm { "Patient", "Practitioner", "MedicationRequest" })
      local p = assert(c:patient { phone = "5550100123" })
      assert(c:practitioner(p))
      assert(c:medications(p))
      sb:revoke_all()                          -- a 401, a retry, a new token
      assert(c:patient { id = p.id })
      local stats = sb:stats()
      assert(#stats.issued_tokens >= 4)
      local text = read_all(LOG) or ""
      for _, t in ipairs(stats.issued_tokens) do
        assert(not text:find(t, 1, true), "an issued access token is in the log")
      end
      assert(not text:find("eyJ", 1, true), "a JWT is in the log")
      assert(not text:find(key.path, 1, true), "the key path is in the log")
      assert(not text:find("PHISCAN", 1, true), "the practice code is in the log")
    end)
    sb:stop()
    os.execute("rm -rf '" .. dir .. "'")
    assert(ok, err)
  end)

  it("carries none of the access tokens the sandboxes issued", function()
    if not TOKENS then
      pending("set ECW_ISSUED_TOKENS_FILE to check every token issued during the run")
      return
    end
    local text = read_all(TOKENS)
    assert(text and text:find("%S"), "ECW_ISSUED_TOKENS_FILE is set but " .. TOKENS ..
      " is missing or empty: the sandbox did not record the tokens it issued")
    local n = 0
    for token in text:gmatch("%S+") do
      n = n + 1
      refute(token, true, "an issued access token")
      -- Also a distinctive slice, in case a line cut it short.
      if #token >= 24 then
        refute(token:sub(5, 24), true, "part of an access token")
      end
    end
    assert(n > 10, "only " .. n .. " tokens recorded")
  end)
end)
