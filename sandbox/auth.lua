-- POST /oauth/oauth2/token: SMART Backend Services client_credentials grant
-- with a private_key_jwt client assertion (RFC 7523), checked as strictly
-- as the spec allows so that a lax client fails here rather than at eCW.
local jwt = require "sandbox.jwt_verify"
local scopes = require "sandbox.scopes"
local urlcodec = require "sandbox.urlcodec"
local response = require "sandbox.response"
local json = require "sandbox.json"

local M = {}

local JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
local MAX_EXP_AHEAD = 300 -- SMART: exp no more than five minutes ahead
local MIN_RSA_BITS = 2048
local ALGS = { RS384 = true, ES384 = true }

-- A failed check: carries the HTTP status and OAuth error code.
local function reject(status, err, description)
  return { status = status, error = err, description = description }
end

local function invalid_client(description)
  return reject(401, "invalid_client", description)
end

-- Reads the single value of a form parameter. RFC 6749 section 3.2:
-- parameters must not be repeated.
local function param(form, name)
  local values = form[name]
  if not values then
    return nil
  end
  if #values > 1 then
    return nil, "parameter " .. name .. " is repeated"
  end
  return values[1]
end

local function is_integer(v)
  return type(v) == "number" and v == math.floor(v) and v == v
end

-- Claim policy for a signature-verified assertion. Returns nil when all
-- checks pass, or a rejection.
local function check_claims(ctx, claims)
  if claims.aud ~= ctx.urls.token_url then
    return invalid_client("aud must be exactly " .. ctx.urls.token_url)
  end
  -- clock_offset simulates a server whose clock runs ahead of the client's
  local now = os.time() + math.floor(ctx.config:get("clock_offset") or 0)
  if not is_integer(claims.exp) then
    return invalid_client("exp must be an integer (seconds since epoch)")
  end
  if claims.exp <= now then
    return invalid_client("client assertion expired")
  end
  if claims.exp > now + MAX_EXP_AHEAD then
    return invalid_client("exp is more than 5 minutes in the future")
  end
  if type(claims.jti) ~= "string" or claims.jti == "" then
    return invalid_client("jti must be a non-empty string")
  end
  if ctx.tokens:jti_seen(claims.jti) then
    return invalid_client("jti replayed")
  end
  return nil
end

-- Authenticates the client from its assertion. Returns the client_id on
-- success, or nil, rejection. `note` receives the decoded assertion so it
-- is recorded (for the stats) even when verification fails.
local function authenticate(ctx, assertion, form_client_id, note)
  local parsed, err = jwt.parse(assertion)
  if not parsed then
    return nil, invalid_client("malformed client_assertion: " .. err)
  end
  local header, claims = parsed.header, parsed.claims
  note(header, claims)

  if not ALGS[header.alg] then
    return nil, invalid_client("unsupported alg " .. tostring(header.alg) .. " (RS384 or ES384)")
  end
  if header.typ ~= "JWT" then
    return nil, invalid_client('JWS header typ must be "JWT"')
  end
  if type(header.kid) ~= "string" then
    return nil, invalid_client("JWS header kid missing")
  end
  if type(claims.iss) ~= "string" or claims.iss ~= claims.sub then
    return nil, invalid_client("iss and sub must both equal the client_id")
  end
  if form_client_id and form_client_id ~= claims.iss then
    return nil, invalid_client("client_id parameter does not match iss")
  end
  local key
  key, err = ctx.clients:find(claims.iss, header.kid)
  if not key then
    return nil, invalid_client(err)
  end
  if key.alg ~= header.alg then
    return nil, invalid_client("alg " .. header.alg .. " does not match the key registered for kid")
  end
  if key.rsa_bits and key.rsa_bits < MIN_RSA_BITS then
    return nil, invalid_client("RSA key shorter than 2048 bits")
  end
  local ok
  ok, err = jwt.verify(parsed, header.alg, key.key)
  if not ok then
    return nil, invalid_client(err)
  end
  local bad = check_claims(ctx, claims)
  if bad then
    return nil, bad
  end
  ctx.tokens:remember_jti(claims.jti, claims.exp)
  return claims.iss
end

-- The whole request, minus bookkeeping. Returns a success table
-- { token =, scope =, lifetime = } or a rejection; and the client_id the
-- request claimed to be (when that client is registered), for stats.
local function process(ctx, req, note)
  if req.method ~= "POST" then
    return reject(405, "invalid_request", "token endpoint requires POST")
  end
  local ctype = (req.headers["content-type"] or ""):lower()
  if not ctype:match("^application/x%-www%-form%-urlencoded%s*;?") then
    return reject(400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded")
  end
  local form = urlcodec.parse(req.body)
  local values, err = {}, nil
  for _, name in ipairs({ "grant_type", "client_assertion_type", "client_assertion", "scope", "client_id" }) do
    values[name], err = param(form, name)
    if err then
      return reject(400, "invalid_request", err)
    end
  end
  if not values.grant_type then
    return reject(400, "invalid_request", "missing grant_type")
  end
  if values.grant_type ~= "client_credentials" then
    return reject(400, "unsupported_grant_type", "only client_credentials is supported")
  end
  for _, name in ipairs({ "client_assertion_type", "client_assertion", "scope" }) do
    if not values[name] or values[name] == "" then
      return reject(400, "invalid_request", "missing " .. name)
    end
  end
  if values.client_assertion_type ~= JWT_BEARER then
    return invalid_client("unsupported client_assertion_type")
  end

  local client_id, bad = authenticate(ctx, values.client_assertion, values.client_id, note)
  if not client_id then
    return bad
  end

  local deny = ctx.config:get("deny_scope")
  local requested, offending = scopes.validate(values.scope, deny)
  if not requested then
    return reject(400, "invalid_scope", "unknown or unsupported scope: " .. offending)
  end
  local granted = ctx.config:get("grant_scope") or table.concat(requested, " ")
  local lifetime = ctx.config:get("token_lifetime")
  local token = ctx.tokens:issue(client_id, scopes.split(granted), granted, lifetime)
  return { token = token, scope = granted, lifetime = lifetime, client_id = client_id }
end

function M.handle(ctx, req)
  local record
  local function note(header, claims)
    record = { header = header, claims = claims, ok = false, error = json.null,
               received_at = os.time() }
    ctx.stats:assertion(record)
  end
  local result = process(ctx, req, note)

  -- Attribute the request to the client it claims to be, if registered,
  -- so tests with their own client_id get isolated counters.
  local claimed = record and type(record.claims.iss) == "string" and record.claims.iss
  if claimed and not ctx.clients.by_id[claimed] then
    claimed = nil
  end
  ctx.stats:count("token_requests", nil, claimed)

  if result.token then
    record.ok = true
    ctx.stats:count("token_ok", nil, claimed)
    ctx.stats:token_issued(result.token)
    return response.json(200, {
      access_token = result.token,
      token_type = ctx.config:get("token_type"),
      expires_in = result.lifetime,
      scope = result.scope,
    }, { ["Cache-Control"] = "no-store", ["Pragma"] = "no-cache" })
  end

  if record then
    record.error = result.description
  end
  ctx.stats:count("token_failed", nil, claimed)
  local res = response.oauth_error(result.status, result.error, result.description)
  if result.status == 405 then
    res.headers["Allow"] = "POST"
  end
  return res
end

return M
