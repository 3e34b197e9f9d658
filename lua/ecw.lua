-- ecw: patient lookups from eClinicalWorks (and other SMART-on-FHIR EHRs)
-- for FreeSWITCH mod_lua voice agents.
--
--   local ecw = require "ecw"
--   assert(ecw.configure{ fhir_base = ..., client_id = ..., private_key = ..., kid = ... })
--   local p, err = ecw.patient{ phone = session:getVariable("caller_id_number") }
--   if not p and err.code == "ambiguous" then ... ask for the date of birth ... end
--
-- ecw.configure stores a client under a name ("default" unless given);
-- ecw.patient, ecw.read, ... use the default client, ecw.client(name)
-- returns any of them (client:patient{...}).  The C core shares tokens,
-- keys and connections process-wide, so configuring on every call (mod_lua
-- runs each call in a fresh Lua state) is cheap.
local core = require "ecw.core"
local client = require "ecw.client"
local errors = require "ecw.errors"
local phone = require "ecw.phone"
local say = require "ecw.say"
local log = require "ecw.log"

local type, error, pairs = type, error, pairs

local _M = { _VERSION = core._VERSION }

local clients = {}

-- Returns the client, or nil, err for run-time failures (unreadable key
-- file...).  Bad option types raise.
function _M.configure(opts)
  local c, err = client.new(opts, 1)
  if not c then
    return nil, err
  end
  clients[c.name] = c
  return c
end

-- The client configured under `name` (default "default"), or nil, err.
function _M.client(name)
  if name ~= nil and type(name) ~= "string" then
    error("ecw.client: bad argument #1 'name' (expected a string)", 2)
  end
  local c = clients[name or "default"]
  if not c then
    return nil, errors.new("config", "ecw.client: no client configured under that name")
  end
  return c
end

local function default(fname)
  local c = clients.default
  if not c then
    -- A script that never configured is a programming error.
    error(fname .. ": no client configured (call ecw.configure first)", 3)
  end
  return c
end

-- ecw.f(...) == ecw.client():f(...); tail calls keep argument errors
-- pointing at the script's line.
local function delegate(method)
  local fname = "ecw." .. method
  return function(...)
    local c = default(fname)
    return c[method](c, ...)
  end
end

for _, m in pairs({ "patient", "patients", "read", "search", "practitioner",
                    "medications", "allergies", "coverage", "encounters", "warm",
                    "start" }) do
  _M[m] = delegate(m)
end

-- Speech helpers (no requests): ecw.say.name(p), .birthdate(p),
-- .summary(p [, extra]), .date(s).  Also reachable as client.say.
_M.say = say

-- "+15550100199" from any caller-ID shape, or nil.
_M.normalize_phone = phone.normalize

-- Logging (see lua/ecw/log.lua): fn(level, message) receives PHI-free
-- lines at or above level ("debug" < "info" < "warn" < "error"; default
-- "warn").  nil restores the default (freeswitch.consoleLog under
-- FreeSWITCH, otherwise nothing); false silences ecw.  Both are per Lua
-- state.  Return the previous logger and level.
function _M.set_logger(fn, level)
  if fn ~= nil and fn ~= false and type(fn) ~= "function" then
    error("ecw.set_logger: bad argument #1 'fn' (expected a function, false or nil)", 2)
  end
  if level ~= nil and not log.valid_level(level) then
    error("ecw.set_logger: bad argument #2 'level' (expected \"debug\", \"info\", " ..
      "\"warn\" or \"error\")", 2)
  end
  return log.set_logger(fn, level)
end

function _M.set_log_level(level)
  if not log.valid_level(level) then
    error("ecw.set_log_level: bad argument #1 'level' (expected \"debug\", \"info\", " ..
      "\"warn\" or \"error\")", 2)
  end
  return log.set_level(level)
end

-- core.stats() plus the Lua-side counters of this Lua state.
function _M.stats()
  local s = core.stats()
  for k, v in pairs(client.counters) do
    s[k] = v
  end
  return s
end

return _M
