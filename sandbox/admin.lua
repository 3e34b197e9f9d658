-- Admin API on its own plain-HTTP port, for tests to inspect and steer the
-- sandbox. JSON in, JSON out; every POST answers {"ok": true} or a 4xx with
-- {"error": "..."}.
--
--   GET  /stats          counters, issued tokens, recent assertions
--   POST /reset_stats
--   GET  /config         current behaviour switches
--   POST /config         merge switches (null resets one to its default)
--   GET  /clients        client_id -> { kid -> alg }
--   POST /clients        register {client_id, kid, alg, public_key_pem} (or an array)
--   POST /fault          queue a fault (see faults.lua / README)
--   POST /faults/clear
--   POST /revoke_all     forget all issued access tokens
--   POST /shutdown       exit the process
--   GET  /health
local json = require "sandbox.json"
local response = require "sandbox.response"

local M = {}

local OK = { ok = true }

local function bad_request(msg)
  return response.json(400, { error = msg })
end

local function with_json_body(req, fn)
  local value, err = json.decode(req.body)
  if value == nil then
    return bad_request(err)
  end
  local ok, msg = fn(value)
  if not ok then
    return bad_request(msg)
  end
  return response.json(200, OK)
end

local function register_clients(ctx, value)
  -- A JSON array decodes to a table with [1]; an object has client_id.
  local list = value[1] and value or { value }
  for _, entry in ipairs(list) do
    local ok, err = ctx.clients:register(entry)
    if not ok then
      return nil, err
    end
  end
  return true
end

local ROUTES = {
  ["GET /health"] = function() return response.json(200, OK) end,
  ["GET /stats"] = function(ctx)
    local s = ctx.stats:snapshot()
    s.pending_faults = #ctx.faults.list
    return response.json(200, s)
  end,
  ["POST /reset_stats"] = function(ctx)
    ctx.stats:reset()
    return response.json(200, OK)
  end,
  ["GET /config"] = function(ctx)
    return response.json(200, ctx.config:snapshot())
  end,
  ["POST /config"] = function(ctx, req)
    return with_json_body(req, function(v) return ctx.config:merge(v) end)
  end,
  ["GET /clients"] = function(ctx)
    return response.json(200, ctx.clients:list())
  end,
  ["POST /clients"] = function(ctx, req)
    return with_json_body(req, function(v) return register_clients(ctx, v) end)
  end,
  ["POST /fault"] = function(ctx, req)
    return with_json_body(req, function(v) return ctx.faults:add(v) end)
  end,
  ["POST /faults/clear"] = function(ctx)
    ctx.faults:clear()
    return response.json(200, OK)
  end,
  ["POST /revoke_all"] = function(ctx)
    ctx.tokens:revoke_all()
    return response.json(200, OK)
  end,
  ["POST /shutdown"] = function(ctx)
    ctx.shutdown()
    local res = response.json(200, OK)
    res.close = true
    return res
  end,
}

function M.handler(ctx)
  return function(req)
    ctx.activity()
    local route = ROUTES[req.method .. " " .. req.path]
    if route then
      return route(ctx, req)
    end
    for key in pairs(ROUTES) do
      if key:match("^%u+ (.*)$") == req.path then
        return response.json(405, { error = "method not allowed" })
      end
    end
    return response.json(404, { error = "no such admin endpoint" })
  end
end

return M
