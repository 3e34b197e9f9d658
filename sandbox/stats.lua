-- Counters the tests read back through the admin API (GET /stats).
--
-- Each counter exists in the totals and in per-practice buckets (FHIR and
-- discovery traffic carries a practice code in its path) and per-client
-- buckets (token traffic has no practice code, so tests that want isolated
-- token counts register their own client_id). Every bucket has the same
-- fields; ones that cannot apply to a bucket simply stay 0.
local json = require "sandbox.json"

local M = {}
M.__index = M

local MAX_ASSERTIONS = 100

local COUNTERS = {
  "token_requests", "token_ok", "token_failed",
  "discovery_requests", "fhir_requests", "connections",
  "expired_uses", "faults_applied",
}

local function new_bucket()
  local b = { min_remaining_ms = json.null }
  for _, c in ipairs(COUNTERS) do
    b[c] = 0
  end
  return b
end

function M.new()
  local self = setmetatable({}, M)
  self:reset()
  return self
end

function M:reset()
  self.total = new_bucket()
  self.by_practice = {}
  self.by_client = {}
  self.issued_tokens = {}
  self.token_uses = {}
  self.assertions = {}
  self.last_assertion = json.null
end

local function bucket(map, key)
  if key == nil then
    return nil
  end
  local b = map[key]
  if not b then
    b = new_bucket()
    map[key] = b
  end
  return b
end

-- Adds n (default 1) to counter in the totals and in the practice/client
-- buckets that are given.
function M:count(counter, practice, client_id, n)
  n = n or 1
  self.total[counter] = self.total[counter] + n
  local p = bucket(self.by_practice, practice)
  if p then p[counter] = p[counter] + n end
  local c = bucket(self.by_client, client_id)
  if c then c[counter] = c[counter] + n end
end

-- A TCP connection is counted in the totals when accepted; practice buckets
-- count the connections that carried at least one request for them.
function M:bucket_connection(practice)
  local b = bucket(self.by_practice, practice)
  b.connections = b.connections + 1
end

local function lower_min(b, ms)
  if b and (b.min_remaining_ms == json.null or ms < b.min_remaining_ms) then
    b.min_remaining_ms = ms
  end
end

-- Records one authorized FHIR use of a token with `remaining` seconds left.
function M:token_used(token, remaining, practice, client_id)
  local ms = math.floor(remaining * 1000)
  lower_min(self.total, ms)
  lower_min(bucket(self.by_practice, practice), ms)
  lower_min(bucket(self.by_client, client_id), ms)
  self.token_uses[token] = (self.token_uses[token] or 0) + 1
end

-- ECW_ISSUED_TOKENS_FILE: every token any sandbox issues is appended
-- there too, so a whole-suite log scan can look for all of them (stats
-- are reset between tests; the file is not).
local ISSUED_FILE = os.getenv("ECW_ISSUED_TOKENS_FILE")

function M:token_issued(token)
  table.insert(self.issued_tokens, token)
  if ISSUED_FILE and ISSUED_FILE ~= "" then
    local f = io.open(ISSUED_FILE, "a")
    if f then
      f:write(token, "\n")
      f:close()
    end
  end
end

-- Keeps the decoded header/claims of the last MAX_ASSERTIONS assertions,
-- accepted or not, so tests can check jti freshness, exp - iat, jku...
function M:assertion(record)
  self.last_assertion = record
  table.insert(self.assertions, record)
  if #self.assertions > MAX_ASSERTIONS then
    table.remove(self.assertions, 1)
  end
end

function M:snapshot()
  local out = {}
  for k, v in pairs(self.total) do
    out[k] = v
  end
  out.by_practice = self.by_practice
  out.by_client = self.by_client
  out.issued_tokens = self.issued_tokens
  out.token_uses = self.token_uses
  out.assertions = self.assertions
  out.last_assertion = self.last_assertion
  return out
end

return M
