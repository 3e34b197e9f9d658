-- Response constructors shared by the handlers. A response is the plain
-- table http.lua writes: { status =, headers = { name = value }, body = }.
local json = require "sandbox.json"

local M = {}

local FHIR_JSON = "application/fhir+json; charset=utf-8"

function M.json(status, value, headers)
  headers = headers or {}
  headers["Content-Type"] = headers["Content-Type"] or "application/json; charset=utf-8"
  return { status = status, headers = headers, body = json.encode(value) }
end

function M.fhir(status, resource, headers)
  headers = headers or {}
  headers["Content-Type"] = FHIR_JSON
  return M.json(status, resource, headers)
end

-- FHIR OperationOutcome with a single error issue.
function M.outcome(status, code, text, headers)
  return M.fhir(status, {
    resourceType = "OperationOutcome",
    issue = { {
      severity = "error",
      code = code,
      details = { text = text },
    } },
  }, headers)
end

-- RFC 6749 section 5.2 error response. no-store because error bodies of a
-- token endpoint must not be cached any more than successes.
function M.oauth_error(status, err, description)
  return M.json(status, { error = err, error_description = description }, {
    ["Cache-Control"] = "no-store",
    ["Pragma"] = "no-cache",
  })
end

return M
