-- FHIR R4 endpoints under /fhir/r4/{practice}/: metadata (open), and
-- bearer-protected read (GET {Type}/{id}) and search (GET {Type}?...).
local data = require "sandbox.data"
local scopes = require "sandbox.scopes"
local search = require "sandbox.search"
local urlcodec = require "sandbox.urlcodec"
local response = require "sandbox.response"

local M = {}

local DEFAULT_PAGE_SIZE = 20
local MAX_PAGE_SIZE = 50

local KNOWN_TYPE = {}
for _, t in ipairs(data.types) do
  KNOWN_TYPE[t] = true
end

-- RFC 6750 challenge. The reason stays in the OperationOutcome only, so
-- the header is a fixed string clients and tests can compare exactly.
local function challenge(err)
  return string.format('Bearer realm="sandbox", error="%s"', err)
end

local function unauthorized(code, text)
  return response.outcome(401, code, text,
    { ["WWW-Authenticate"] = challenge("invalid_token") })
end

-- Extracts the token from "Authorization: Bearer <token>" (scheme is
-- case-insensitive per RFC 7235).
local function bearer_token(header)
  if type(header) ~= "string" then
    return nil
  end
  local scheme, token = header:match("^%s*(%S+)%s+(%S+)%s*$")
  if scheme and scheme:lower() == "bearer" then
    return token
  end
  return nil
end

local function replace_origin(url, origin)
  if not origin then
    return url
  end
  return (url:gsub("^%a[%w+.-]*://[^/]+", function() return origin end))
end

local function bundle(ctx, req, practice, rtype)
  local params, ordered_params = urlcodec.parse(req.query)
  local matches = search.run(rtype, data.ordered[rtype], params)

  local count = math.floor(tonumber(params._count and params._count[1]) or DEFAULT_PAGE_SIZE)
  count = math.max(0, math.min(count, MAX_PAGE_SIZE))
  local page = math.floor(tonumber(params.page and params.page[1]) or 1)
  page = math.max(page, 1)

  local base = ctx.urls.fhir_base(practice)
  local type_url = base .. "/" .. rtype
  local links = {
    { relation = "self", url = type_url .. (req.query ~= "" and "?" .. req.query or "") },
  }
  local first = (page - 1) * count + 1
  local last = math.min(first + count - 1, #matches)
  if count > 0 and last < #matches then
    local next_params = {}
    for _, p in ipairs(ordered_params) do
      if p[1] ~= "page" then
        next_params[#next_params + 1] = p
      end
    end
    next_params[#next_params + 1] = { "page", tostring(page + 1) }
    links[#links + 1] = {
      relation = "next",
      url = replace_origin(type_url .. "?" .. urlcodec.build(next_params),
        ctx.config:get("next_link_origin")),
    }
  end

  local entries = {}
  for i = first, last do
    local r = matches[i]
    entries[#entries + 1] = {
      fullUrl = type_url .. "/" .. r.id,
      resource = r,
      search = { mode = "match" },
    }
  end
  return response.fhir(200, {
    resourceType = "Bundle",
    type = "searchset",
    total = #matches,
    link = links,
    -- FHIR: an empty searchset has no "entry" (cjson would emit {}).
    entry = #entries > 0 and entries or nil,
  })
end

local function capability_statement()
  local resources = {}
  for _, t in ipairs(data.types) do
    resources[#resources + 1] = {
      type = t,
      interaction = { { code = "read" }, { code = "search-type" } },
    }
  end
  return response.fhir(200, {
    resourceType = "CapabilityStatement",
    status = "active",
    kind = "instance",
    fhirVersion = "4.0.1",
    format = { "json" },
    rest = { { mode = "server", resource = resources } },
  })
end

-- Authenticated part. Returns response, client_id (when the token is known).
local function protected(ctx, req, practice, rest)
  local token = bearer_token(req.headers["authorization"])
  if not token then
    return unauthorized("login", "missing bearer token")
  end
  local rec, remaining, expired = ctx.tokens:lookup(token)
  if not rec then
    if remaining == "expired" then
      ctx.stats:count("expired_uses", practice, expired.client_id)
      return unauthorized("expired", "access token expired"), expired.client_id
    end
    return unauthorized("login", "unknown access token")
  end
  rec.uses = rec.uses + 1
  ctx.stats:token_used(token, remaining, practice, rec.client_id)

  local rtype, id = rest:match("^([^/]+)/([^/]+)$")
  rtype = rtype or rest:match("^([^/]+)$")
  if not rtype or not KNOWN_TYPE[rtype] then
    return response.outcome(404, "not-supported", "unknown resource type"), rec.client_id
  end
  local interaction = id and "read" or "search"
  if not scopes.allows(rec.scopes, rtype, interaction) then
    local text = "insufficient scope for " .. rtype .. " " .. interaction
    return response.outcome(403, "forbidden", text, {
      ["WWW-Authenticate"] = challenge("insufficient_scope"),
    }), rec.client_id
  end
  if id then
    local resource = data.resources[rtype][id]
    if not resource then
      return response.outcome(404, "not-found", rtype .. "/" .. id .. " not found"), rec.client_id
    end
    return response.fhir(200, resource), rec.client_id
  end
  return bundle(ctx, req, practice, rtype), rec.client_id
end

-- rest: the path after /fhir/r4/{practice}/ (never empty).
-- Every request counts as one fhir_request, attributed to the token's
-- client when there is one.
function M.handle(ctx, req, practice, rest)
  local res, client_id
  if req.method ~= "GET" then
    res = response.outcome(405, "not-supported", "only GET is supported", { Allow = "GET" })
  elseif rest == "metadata" then
    res = capability_statement()
  else
    res, client_id = protected(ctx, req, practice, rest)
  end
  ctx.stats:count("fhir_requests", practice, client_id)
  return res
end

return M
