-- Server-side state for the token endpoint: issued access tokens and the
-- jti replay cache.
--
-- Access tokens are opaque random strings; everything we know about one is
-- kept here. Expiry uses cqueues.monotime() so fractional lifetimes (0.5 s
-- in tests) work and wall-clock jumps cannot resurrect a token. Expired
-- tokens are remembered (not deleted) so that a use after expiry can be
-- told apart from a made-up token and counted as `expired_uses`.
local monotime = require "cqueues".monotime
local rand = require "openssl.rand"
local urlcodec = require "sandbox.urlcodec"

local M = {}
M.__index = M

local TOKEN_BYTES = 32
-- Expired tokens are forgotten this long after expiry, bounding memory in
-- long demo runs while keeping them recognisable for any realistic test.
local EXPIRED_RETENTION = 3600

function M.new()
  return setmetatable({ by_token = {}, count = 0, jtis = {} }, M)
end

local function prune_tokens(self, now)
  for tok, rec in pairs(self.by_token) do
    if rec.expires_at + EXPIRED_RETENTION < now then
      self.by_token[tok] = nil
    end
  end
end

-- Issues a token for client_id with the granted scope list/string.
-- Returns the token string and its record.
function M:issue(client_id, scope_list, scope_string, lifetime)
  local now = monotime()
  self.count = self.count + 1
  if self.count % 1000 == 0 then
    prune_tokens(self, now)
  end
  local token = urlcodec.base64url_encode(rand.bytes(TOKEN_BYTES))
  local rec = {
    client_id = client_id,
    scopes = scope_list,
    scope = scope_string,
    issued_at = now,
    expires_at = now + lifetime,
    uses = 0,
  }
  self.by_token[token] = rec
  return token, rec
end

-- Returns rec, remaining_seconds for a live token; nil, "expired", rec for
-- an expired one; nil, "unknown" otherwise.
function M:lookup(token)
  local rec = token and self.by_token[token]
  if not rec then
    return nil, "unknown"
  end
  local remaining = rec.expires_at - monotime()
  if remaining <= 0 then
    return nil, "expired", rec
  end
  return rec, remaining
end

function M:revoke_all()
  self.by_token = {}
end

-- Replay cache. Entries are kept until the assertion's own exp has passed:
-- after that the assertion is rejected as expired anyway, so the jti can
-- be dropped without opening a replay window.
function M:jti_seen(jti)
  return self.jtis[jti] ~= nil
end

function M:remember_jti(jti, exp)
  local now = os.time()
  for j, e in pairs(self.jtis) do
    if e < now then
      self.jtis[j] = nil
    end
  end
  self.jtis[jti] = exp
end

return M
