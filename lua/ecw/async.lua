-- ecw.async: lookups that run on the module's worker threads.
--
--   local req = ecw.start("patient", { phone = caller_id })
--   session:streamFile("one-moment.wav")     -- the caller hears a prompt
--   local p, err = req:wait(1500)            -- the same answer as ecw.patient
--
-- A Lua state is single-threaded, so the lookup runs in a state owned by a
-- worker thread (csrc/async.c).  The request crosses as JSON: the client's
-- configuration, the method name and its arguments; the answer comes back
-- the same way.  The worker's ecw.configure finds the same process-wide
-- client, key and token cache, so nothing is fetched twice.
local core = require "ecw.core"
local cjson = require "cjson.safe"
local errors = require "ecw.errors"
local log = require "ecw.log"

local type, error, setmetatable, pcall = type, error, setmetatable, pcall
local tostring = tostring

local _M = {}

-- Methods a script may start; all return value | nil, err.
local STARTABLE = {
  patient = true, patients = true, read = true, search = true,
  practitioner = true, medications = true, allergies = true,
  coverage = true, encounters = true, warm = true,
}
_M.STARTABLE = STARTABLE

local Request = {}
Request.__index = Request

-- Wait up to ms (default: until the lookup's own deadline) for the answer.
-- Returns what the blocking call returns; on a wait that runs out first,
-- nil and a "timeout" error, and the request keeps running (wait again, or
-- cancel it).
function Request:wait(ms)
  if ms ~= nil and (type(ms) ~= "number" or ms < 0) then
    error("request:wait: bad argument #1 'ms' (expected a non-negative number)", 2)
  end
  if self.result then
    return self.result[1], self.result[2]
  end
  local done, out, failed = self.job:wait(ms and math.floor(ms))
  if not done then
    return nil, errors.new("timeout", self.fname .. ": still running after "
      .. tostring(ms) .. " ms", { retryable = true })
  end
  local value, err
  local t = not failed and cjson.decode(out)
  if type(t) ~= "table" then
    -- The worker raised: a bug, not a lookup result.  Keep the trace out
    -- of the message (it may quote arguments); the code says what it is.
    err = errors.new("internal", self.fname .. ": the lookup failed on its worker thread")
  elseif t.ok then
    value = t.value
  else
    err = errors.new(t.err.code or "internal", t.err.message or "lookup failed", t.err)
  end
  self.result = { value, err }
  self.job:release()
  log.emit(err and "info" or "debug", "async_done",
    { method = self.fname, code = err and err.code or "ok" })
  return value, err
end

-- Stop the lookup: its next network step is abandoned.
function Request:cancel()
  if not self.result then
    self.job:cancel()
  end
end

-- "running", "done" or "cancelled".
function Request:status()
  if self.result then
    return "done"
  end
  return self.job:status()
end

Request.__close = function(self)
  if not self.result then
    self.job:cancel()
    self.job:release()
  end
end

-- start(client_config, method, args...) -> request | nil, err
function _M.start(config, fname, method, ...)
  local payload, perr = cjson.encode({ config = config, method = method,
                                       args = { ... }, n = select("#", ...) })
  if not payload then
    -- 1 = here (Client:start tail-calls us), 2 = its wrapper (see the end
    -- of client.lua), 3 = the script
    error(fname .. ": arguments cannot be sent to a worker (" .. tostring(perr) .. ")", 3)
  end
  local job, err = core.spawn { module = "ecw.async", func = "run", payload = payload }
  if not job then
    return nil, errors.new("unavailable", fname .. ": " .. err.message,
      { retryable = true })
  end
  return setmetatable({ job = job, fname = fname }, Request)
end

-- Runs on a worker thread, in its own state.
local clients = {}

local function plain_error(e)
  return { code = e.code, message = e.message, status = e.status,
           retryable = e.retryable, outcome = e.outcome, count = e.count,
           oauth_error = e.oauth_error,
           oauth_error_description = e.oauth_error_description }
end

function _M.run(payload)
  local ecw = require "ecw"
  local req = assert(cjson.decode(payload), "undecodable job")
  local key = cjson.encode(req.config)
  local c = clients[key]
  if not c then
    local err
    c, err = ecw.configure(req.config)
    if not c then
      return cjson.encode({ ok = false, err = plain_error(err) })
    end
    clients[key] = c
  end
  local args = req.args
  for i = 1, req.n do
    if args[i] == cjson.null then args[i] = nil end
  end
  local ok, value, err = pcall(c[req.method], c, table.unpack(args, 1, req.n))
  if not ok then
    -- An argument error: report it as the blocking call would have raised.
    return cjson.encode({ ok = false, err = { code = "internal",
      message = tostring(value):gsub("^[^:]*:%d+: ", "") } })
  end
  if value == nil then
    return cjson.encode({ ok = false, err = plain_error(err) })
  end
  local out = cjson.encode({ ok = true, value = value })
  if not out then
    -- Server data JSON cannot carry back (cjson refuses it): report it as
    -- the server's fault, not as a crash of the worker.
    return cjson.encode({ ok = false, err = { code = "bad_response",
      message = "ecw." .. tostring(req.method) .. ": the answer cannot be passed back " ..
        "from the worker thread" } })
  end
  return out
end

return _M
