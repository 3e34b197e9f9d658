-- Error values returned (never raised) by the ecw Lua layer.
--
-- Every operational failure is `nil, err` where err is a table
--   { code, message, status?, retryable, outcome?, oauth_error?,
--     oauth_error_description?, count? }
-- carrying core.error_mt, so tostring(err) and "x" .. err read as the
-- message.  `code` is one of a small stable set that IVR scripts branch on;
-- `message` never contains what the caller passed in (phone, name, birth
-- date, identifier, id): those are PHI and messages end up in logs.
local core = require "ecw.core"

local getmetatable, setmetatable = getmetatable, setmetatable
local pairs, type = pairs, type

local _M = { _VERSION = core._VERSION }

-- The stable codes scripts may test against.
_M.CODES = {
  config = true, auth = true, scope = true, not_found = true,
  ambiguous = true, timeout = true, network = true, tls = true,
  rate_limited = true, unavailable = true, bad_response = true, http = true,
  internal = true, cancelled = true,
}

-- Core codes -> ecw codes.  The core distinguishes the OAuth failure kinds
-- (kept in err.cause and err.oauth_error); a script only needs "auth".
local FROM_CORE = {
  invalid_client = "auth",
  invalid_grant = "auth",
  oauth_error = "auth",
  config = "config",
  origin = "config",
  timeout = "timeout",
  network = "network",
  tls = "tls",
  http = "http",
  bad_response = "bad_response",
  internal = "internal",
  busy = "unavailable",          -- the worker queue is full
  rate_limited = "rate_limited", -- the practice's budget, or a 429 block
  unavailable = "unavailable",   -- the practice's circuit breaker is open
  cancelled = "cancelled",       -- the script cancelled a started lookup
}

local function new(code, message, fields)
  local err = { code = code, message = message, retryable = false }
  if fields then
    for k, v in pairs(fields) do
      err[k] = v
    end
  end
  return setmetatable(err, core.error_mt)
end
_M.new = new

-- HTTP statuses that mean "try again later" whoever answered them.
local function by_status(status)
  if status == 429 then
    return "rate_limited", true
  elseif status == 502 or status == 503 or status == 504 then
    return "unavailable", true
  end
end

-- Wraps a core error table.  ctx ("ecw.patient") prefixes the message.
function _M.from_core(e, ctx)
  local code = FROM_CORE[e.code] or "internal"
  local retryable = e.retryable and true or false
  local c2, r2 = by_status(e.status)
  if c2 then
    code, retryable = c2, r2
  elseif e.status and e.status >= 500 and (code == "auth" or code == "http") then
    -- the token or discovery endpoint failing is an outage, not a refusal
    code, retryable = "unavailable", true
  end
  return new(code, ctx .. ": " .. (e.message or "failure"), {
    status = e.status,
    retryable = retryable,
    cause = e.code,
    oauth_error = e.oauth_error,
    oauth_error_description = e.oauth_error_description,
  })
end

-- Error for a FHIR response that is not a success.  outcome is the text of
-- an OperationOutcome the server sent (kept out of the message: servers
-- echo search values into diagnostics).  interaction is "read" or "search".
function _M.from_status(status, ctx, rtype, interaction, outcome)
  local code, retryable = by_status(status)
  local what
  if code then
    what = code == "rate_limited" and "rate limited by the FHIR server"
      or "FHIR server unavailable"
  elseif status == 401 then
    -- Already retried once with a fresh token by the core.
    code, what = "auth", "the FHIR server rejected the access token"
  elseif status == 403 then
    code, what = "auth", "the FHIR server refused access"
  elseif (status == 404 or status == 410) and interaction == "read" then
    code, what = "not_found", rtype .. " not found"
  else
    code, what = "http", "the FHIR server answered an error"
    retryable = status >= 500
  end
  return new(code, ctx .. ": " .. what .. " (" .. rtype .. " " ..
    interaction .. ", HTTP " .. status .. ")", {
    status = status,
    retryable = retryable or false,
    outcome = outcome,
  })
end

function _M.is_error(v)
  return type(v) == "table" and getmetatable(v) == core.error_mt
end

return _M
