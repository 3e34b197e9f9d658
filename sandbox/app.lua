-- Router for the main (HTTPS) port: token endpoint, SMART discovery and
-- FHIR, with fault injection in front of each.
local cqueues = require "cqueues"
local auth = require "sandbox.auth"
local discovery = require "sandbox.discovery"
local fhir = require "sandbox.fhir"
local response = require "sandbox.response"

local M = {}

M.TOKEN_PATH = "/oauth/oauth2/token"
local DISCOVERY = ".well-known/smart-configuration"

-- The counter a request of each target bumps on arrival. FHIR and token
-- handlers count themselves (they know the client); faulted requests never
-- reach them, so apply_fault counts those.
local ARRIVAL = { token = "token_requests", discovery = "discovery_requests", fhir = "fhir_requests" }

-- A connection counts once per practice it carried requests for, so tests
-- isolated by practice code can assert on connection reuse.
local function note_practice_connection(ctx, conn, practice)
  local seen = conn.data.practices or {}
  conn.data.practices = seen
  if not seen[practice] then
    seen[practice] = true
    ctx.stats:bucket_connection(practice)
  end
end

local function fault_response(f)
  local headers = { ["Content-Type"] = f.content_type or "application/json" }
  for name, value in pairs(f.headers or {}) do
    for existing in pairs(headers) do
      if existing:lower() == name:lower() then
        headers[existing] = nil
      end
    end
    headers[name] = value
  end
  return { status = f.status or 200, headers = headers, body = f.body or "" }
end

-- Returns a response when the fault replaces the normal one, else nil
-- (no fault, or a delay-only fault).
local function apply_fault(ctx, target, practice)
  local f = ctx.faults:take(target)
  if not f then
    return nil
  end
  ctx.stats:count("faults_applied", practice)
  if f.delay_ms and f.delay_ms > 0 then
    cqueues.sleep(f.delay_ms / 1000)
  end
  if not f.close and not f.status and not f.truncate then
    return nil
  end
  ctx.stats:count(ARRIVAL[target], practice)
  if target == "token" then
    ctx.stats:count("token_failed")
  end
  if f.close then
    return { abort = true }
  end
  local res = fault_response(f)
  res.truncate = f.truncate
  return res
end

local function route(ctx, req)
  if req.path == M.TOKEN_PATH then
    -- An `after` fault lets the token endpoint verify and record the
    -- assertion (its jti included) before the fault replaces the answer,
    -- so tests can see what a client retried with.
    local f = ctx.faults:peek("token")
    if f and f.after then
      local real = auth.handle(ctx, req)
      return apply_fault(ctx, "token") or real
    end
    return apply_fault(ctx, "token") or auth.handle(ctx, req)
  end
  local practice, rest = req.path:match("^/fhir/r4/([%w_-]+)/(.+)$")
  if not practice then
    return response.json(404, { error = "not found" })
  end
  note_practice_connection(ctx, req.conn, practice)
  if rest == DISCOVERY then
    local faulted = apply_fault(ctx, "discovery", practice)
    if faulted then
      return faulted
    end
    ctx.stats:count("discovery_requests", practice)
    return discovery.handle(ctx, req)
  end
  return apply_fault(ctx, "fhir", practice) or fhir.handle(ctx, req, practice, rest)
end

-- Returns the handler for http.serve.
function M.handler(ctx)
  return function(req)
    ctx.activity()
    return route(ctx, req)
  end
end

return M
