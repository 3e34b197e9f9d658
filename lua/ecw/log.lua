-- The one place the Lua layer reports events, and the rules that keep PHI
-- and secrets out of them.
--
--   ecw.set_logger(function(level, message) ... end, "info")
--   ecw.set_log_level("debug")            -- or configure{ log_level = ... }
--
-- Levels: "debug" < "info" < "warn" < "error".  Sinks, per Lua state:
--
--   * the function given to ecw.set_logger (false: no logging at all);
--   * otherwise, under FreeSWITCH (a global `freeswitch` with consoleLog),
--     freeswitch.consoleLog(<DEBUG|INFO|WARNING|ERR>, "ecw: " .. message .. "\n");
--   * otherwise nothing.
--   The threshold of those sinks defaults to "warn".
--
--   * In addition, a debugging aid: with the environment variable
--     ECW_LOG_FILE=/path every line at or above ECW_LOG_LEVEL (default
--     "debug") is appended to that file, whatever the other sinks are:
--     "2024-05-01T12:00:00Z info ecw: call method=ecw.patient code=ok ...".
--     Worker threads (ecw.start) log only there: their Lua states have no
--     logger and no `freeswitch`.
--
-- What a line may contain is decided here, not by the callers: an event is
-- a fixed identifier and its fields are `key=value` pairs where numbers and
-- booleans pass, and strings pass only for the keys in STRING_KEYS (values
-- that the library itself chose: a method name, a resource type, an error
-- code, the FHIR server's host name) and only when they look like such a
-- value.  Anything else is written as "?".  So no name, birth date, phone
-- number, identifier, id, query string, resource body, OperationOutcome
-- text, access token, assertion or key material can reach a log line, even
-- by mistake in a caller.
local type, pairs, ipairs, pcall, rawget, next = type, pairs, ipairs, pcall, rawget, next
local math_type = math.type
local str_find, str_format = string.find, string.format
local tbl_concat, tbl_sort = table.concat, table.sort
local os_getenv, os_date, io_open = os.getenv, os.date, io.open

local _M = {}

local LEVELS = { debug = 10, info = 20, warn = 30, error = 40 }
_M.LEVELS = LEVELS

-- FreeSWITCH's names for our levels (switch_log_str2level is
-- case-insensitive; these match examples/freeswitch).
local FS_LEVEL = { debug = "DEBUG", info = "INFO", warn = "WARNING", error = "ERR" }

local DEFAULT_THRESHOLD = LEVELS.warn

-- Per Lua state (in mod_lua: per call).
local sink = nil            -- function, false (off) or nil (default)
local threshold = DEFAULT_THRESHOLD

-- The file sink, from the environment once per Lua state.
local file_path = os_getenv("ECW_LOG_FILE")
if file_path == "" then
  file_path = nil
end
local file_threshold = LEVELS[os_getenv("ECW_LOG_LEVEL") or "debug"] or LEVELS.debug
local file_handle = nil     -- nil: not opened yet; false: could not open

function _M.valid_level(level)
  return type(level) == "string" and LEVELS[level] ~= nil
end

-- Sets the logger (a function(level, message), false to silence ecw
-- entirely, nil for the default) and, when given, the threshold.  Returns
-- the previous logger and threshold name.
function _M.set_logger(fn, level)
  local prev_fn, prev_level = sink, _M.level()
  sink = fn
  if level ~= nil then
    threshold = LEVELS[level]
  end
  return prev_fn, prev_level
end

-- Sets the threshold of the logger (not of ECW_LOG_FILE).  Returns the
-- previous one.
function _M.set_level(level)
  local prev = _M.level()
  threshold = LEVELS[level]
  return prev
end

function _M.level()
  for name, n in pairs(LEVELS) do
    if n == threshold then
      return name
    end
  end
end

local function freeswitch_log()
  local fs = rawget(_G, "freeswitch")
  if type(fs) == "table" then
    local f = fs.consoleLog
    if type(f) == "function" then
      return f
    end
  end
  return nil
end

-- Is any sink listening at this level?  Lets callers skip the work of
-- gathering fields (core.stats() snapshots) when nobody would read them.
function _M.enabled(level)
  local n = LEVELS[level] or LEVELS.error
  if file_path and file_handle ~= false and n >= file_threshold then
    return true
  end
  if n < threshold or sink == false then
    return false
  end
  return sink ~= nil or freeswitch_log() ~= nil
end

------------------------------------------------------------- formatting
-- Explicit ASCII classes throughout: %w depends on the host's C locale.
-- Keys whose string values are the library's own words.
local STRING_KEYS = {
  method = true, code = true, cause = true, type = true, interaction = true,
  reason = true, host = true, vendor = true, scope_style = true, scope = true,
  phone_search = true, alg = true, mode = true,
}

local function value_text(k, v)
  local t = type(v)
  if t == "number" then
    if math_type(v) == "integer" then
      return str_format("%d", v)
    end
    return str_format("%.1f", v)
  elseif t == "boolean" then
    return v and "true" or "false"
  elseif t == "string" and STRING_KEYS[k] and #v <= 96
      and not str_find(v, "[^A-Za-z0-9%._%-/:%+%[%]]") then
    return v
  end
  return "?"
end

local function format(event, fields)
  if type(event) ~= "string" or str_find(event, "[^A-Za-z0-9_]") then
    event = "event"
  end
  if type(fields) ~= "table" or next(fields) == nil then
    return event
  end
  local keys = {}
  for k in pairs(fields) do
    if type(k) == "string" and not str_find(k, "[^A-Za-z0-9_]") then
      keys[#keys + 1] = k
    end
  end
  tbl_sort(keys)
  local parts = { event }
  for _, k in ipairs(keys) do
    parts[#parts + 1] = k .. "=" .. value_text(k, fields[k])
  end
  return tbl_concat(parts, " ")
end
_M.format = format

local function write_file(level, message)
  if file_handle == nil then
    file_handle = io_open(file_path, "a") or false
    if file_handle then
      file_handle:setvbuf("line")
    end
  end
  if file_handle then
    file_handle:write(os_date("!%Y-%m-%dT%H:%M:%SZ"), " ", level, " ecw: ", message, "\n")
  end
end

-- Reports an event: level, a fixed event name, and fields (see above).
-- Never raises: a broken logger must not break the call it reports on.
function _M.emit(level, event, fields)
  local n = LEVELS[level]
  if not n then
    level, n = "error", LEVELS.error
  end
  local to_file = file_path and file_handle ~= false and n >= file_threshold
  local fn
  if n >= threshold and sink ~= false then
    fn = sink or freeswitch_log()
  end
  if not fn and not to_file then
    return
  end
  local ok, message = pcall(format, event, fields)
  if not ok then
    message = "event ?"
  end
  if to_file then
    pcall(write_file, level, message)
  end
  if fn then
    if fn == sink then
      pcall(fn, level, message)
    else
      pcall(fn, FS_LEVEL[level], "ecw: " .. message .. "\n")
    end
  end
end

-- For tests: forget the logger and threshold (not the file sink).
function _M.reset()
  sink, threshold = nil, DEFAULT_THRESHOLD
end

-- Reported by configure, for the debugging aid: where lines go.
function _M.file_enabled()
  return file_path ~= nil
end

return _M
