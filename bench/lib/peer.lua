-- The lookup as FreeSWITCH scripts do it without ecw (bench item 5), and
-- the token the C baseline of item 1 sends.
--
-- What such a script does on every call: read the PEM key, sign a client
-- assertion (RS384), POST it to the token endpoint over a new TLS
-- connection, then GET the resource over another new TLS connection
-- (luasec's https.request closes the connection after each request), and
-- decode the JSON.  Signing uses spec/support/jwt.lua (luaossl), the test
-- suite's own signer, which shares no code with ecw.
--
-- Verification settings are the ones a careful script would pass:
-- verify = "peer" with the sandbox CA.  luasec does not check the host
-- name; ecw (libcurl) does, so the peer does slightly less work there.
local https = require "ssl.https"
local ltn12 = require "ltn12"
local cjson = require "cjson"
local jwt = require "spec.support.jwt"

local M = {}

local ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

local function urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

local function tls(cfg, t)
  t.verify = "peer"
  t.cafile = cfg.ca_file
  t.protocol = "any"
  t.options = { "all", "no_sslv2", "no_sslv3", "no_tlsv1", "no_tlsv1_1" }
  return t
end

-- A fresh access token for cfg.scope (default system/Patient.read), or
-- nil, reason.  cfg: client_id, kid, key_path, token_url, ca_file.
function M.token(cfg)
  local assertion = jwt.assertion {
    key = { path = cfg.key_path, alg = "RS384" }, kid = cfg.kid,
    client_id = cfg.client_id, aud = cfg.token_url,
  }
  local body = "grant_type=client_credentials" ..
    "&client_assertion_type=" .. urlencode(ASSERTION_TYPE) ..
    "&client_assertion=" .. urlencode(assertion) ..
    "&scope=" .. urlencode(cfg.scope or "system/Patient.read")
  local chunks = {}
  local ok, code = https.request(tls(cfg, {
    url = cfg.token_url, method = "POST",
    headers = {
      ["content-type"] = "application/x-www-form-urlencoded",
      ["content-length"] = tostring(#body),
      ["accept"] = "application/json",
    },
    source = ltn12.source.string(body),
    sink = ltn12.sink.table(chunks),
  }))
  if not ok or code ~= 200 then
    return nil, "token endpoint: " .. tostring(code)
  end
  local doc = cjson.decode(table.concat(chunks))
  return doc.access_token
end

-- GET url with the token; the decoded resource, or nil, reason.
function M.get(cfg, url, token)
  local chunks = {}
  local ok, code = https.request(tls(cfg, {
    url = url,
    headers = { authorization = "Bearer " .. token, accept = "application/fhir+json" },
    sink = ltn12.sink.table(chunks),
  }))
  if not ok or code ~= 200 then
    return nil, "GET: " .. tostring(code)
  end
  return cjson.decode(table.concat(chunks))
end

-- The whole per-call lookup: token, then the read.
function M.read(cfg, rtype, id)
  local token, err = M.token(cfg)
  if not token then return nil, err end
  return M.get(cfg, cfg.fhir_base .. "/" .. rtype .. "/" .. id, token)
end

-- The same with the curl command line: two curl processes per call (the
-- assertion is signed in-process, as above).
local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

function M.read_curl(cfg, rtype, id)
  local assertion = jwt.assertion {
    key = { path = cfg.key_path, alg = "RS384" }, kid = cfg.kid,
    client_id = cfg.client_id, aud = cfg.token_url,
  }
  local p = io.popen("curl -sS --fail --cacert " .. q(cfg.ca_file) ..
    " -H 'Accept: application/json'" ..
    " --data-urlencode grant_type=client_credentials" ..
    " --data-urlencode " .. q("client_assertion_type=" .. ASSERTION_TYPE) ..
    " --data-urlencode " .. q("client_assertion=" .. assertion) ..
    " --data-urlencode " .. q("scope=" .. (cfg.scope or "system/Patient.read")) ..
    " " .. q(cfg.token_url))
  local out = p:read("a")
  p:close()
  local ok, doc = pcall(cjson.decode, out)
  if not ok or type(doc) ~= "table" or not doc.access_token then
    return nil, "token endpoint (curl)"
  end
  p = io.popen("curl -sS --fail --cacert " .. q(cfg.ca_file) ..
    " -H 'Accept: application/fhir+json' -H " ..
    q("Authorization: Bearer " .. doc.access_token) ..
    " " .. q(cfg.fhir_base .. "/" .. rtype .. "/" .. id))
  out = p:read("a")
  p:close()
  local resource
  ok, resource = pcall(cjson.decode, out)
  if not ok then return nil, "GET (curl)" end
  return resource
end

return M
