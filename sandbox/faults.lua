-- Fault injection queue (admin API: POST /fault, POST /faults/clear).
--
-- Faults are consumed in registration order by the next requests of their
-- target ("token", "fhir" or "discovery"). A fault with `times` is removed
-- once used up; without `times` it stays until cleared.
local M = {}
M.__index = M

local TARGETS = { token = true, fhir = true, discovery = true }

function M.new()
  return setmetatable({ list = {} }, M)
end

local function opt_type(t, field, expected)
  local v = t[field]
  if v ~= nil and type(v) ~= expected then
    return field .. " must be a " .. expected
  end
end

-- Validates and queues a fault. Returns true or nil, err.
function M:add(f)
  if type(f) ~= "table" or not TARGETS[f.target] then
    return nil, 'target must be "token", "fhir" or "discovery"'
  end
  local err = opt_type(f, "status", "number") or opt_type(f, "body", "string")
    or opt_type(f, "content_type", "string") or opt_type(f, "headers", "table")
    or opt_type(f, "delay_ms", "number") or opt_type(f, "times", "number")
    or opt_type(f, "close", "boolean") or opt_type(f, "after", "boolean")
    or opt_type(f, "truncate", "boolean")
  if err then
    return nil, err
  end
  if f.status and (f.status < 100 or f.status > 599 or f.status % 1 ~= 0) then
    return nil, "status must be an HTTP status code"
  end
  if f.times and f.times < 1 then
    return nil, "times must be >= 1"
  end
  for k, v in pairs(f.headers or {}) do
    if type(k) ~= "string" or type(v) ~= "string" or k:find("[\r\n:]") or v:find("[\r\n]") then
      return nil, "headers must map names to single-line strings"
    end
  end
  table.insert(self.list, {
    target = f.target, status = f.status, body = f.body,
    content_type = f.content_type, headers = f.headers,
    delay_ms = f.delay_ms, times = f.times, close = f.close, after = f.after,
    truncate = f.truncate,
  })
  return true
end

-- Returns the first fault for target (consuming one of its uses), or nil.
function M:take(target)
  for i, f in ipairs(self.list) do
    if f.target == target then
      if f.times then
        f.times = f.times - 1
        if f.times == 0 then
          table.remove(self.list, i)
        end
      end
      return f
    end
  end
  return nil
end

-- The fault the next request of target would take, without taking it.
function M:peek(target)
  for _, f in ipairs(self.list) do
    if f.target == target then
      return f
    end
  end
  return nil
end

function M:clear()
  self.list = {}
end

return M
