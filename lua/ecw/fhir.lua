-- Decoding FHIR JSON: nulls, resource checks, OperationOutcome text,
-- Bundle entries and paging links.
--
-- Scripts index decoded resources directly (p.gender == "female"), so
-- cjson.null (a truthy lightuserdata) must never reach them: every null is
-- removed right after decoding.  A null inside an array is dropped and the
-- array closed up, so ipairs and # keep working.
local cjson = require "cjson.safe"
local errors = require "ecw.errors"

local type, pairs, ipairs = type, pairs, ipairs
local math_type, math_tointeger = math.type, math.tointeger
local tbl_concat = table.concat
local str_match, str_lower, str_byte, str_sub =
  string.match, string.lower, string.byte, string.sub

local _M = {}

-- A private instance: settings changed here must not leak into a script's
-- own use of cjson, and its settings must not leak into ours.
local json = cjson.new()
json.decode_invalid_numbers(false)   -- no NaN, Infinity or hex numbers
-- FHIR resources nest a dozen levels or so (Bundle, entry, resource,
-- contained, extension...); deeper is hostile.  cjson answers too deep
-- input with an error instead of recursing, and strip() below recurses
-- only as deep as this.
_M.MAX_DEPTH = 64
json.decode_max_depth(_M.MAX_DEPTH)
local NULL = json.null
local HUGE = math.huge

-- Set when strip() meets a number JSON can spell but Lua cannot hold
-- (1e400 decodes to infinity): such a body is refused, since the value
-- is not what the server meant and cjson cannot encode it again (ecw.start
-- sends results across threads as JSON).
local out_of_range = false

-- cjson turns JSON arrays into tables with integer keys only, and JSON
-- objects into tables with string keys only, so integer keys tell them
-- apart after decoding.
-- cjson 2.1 decodes every JSON number as a float: integral values are
-- turned back into integers so that speech says "128", not "128.0".
local function strip(v)
  if type(v) ~= "table" then
    if math_type(v) == "float" then
      if v ~= v or v == HUGE or v == -HUGE then
        out_of_range = true
      end
      return math_tointeger(v) or v
    end
    return v
  end
  local n, array = 0, false
  for k in pairs(v) do
    if math_type(k) == "integer" then
      array = true
      if k > n then n = k end
    end
  end
  if array then
    local j = 0
    for i = 1, n do
      local x = v[i]
      if x ~= nil and x ~= NULL then
        j = j + 1
        v[j] = strip(x)
      end
    end
    for i = j + 1, n do
      v[i] = nil
    end
  else
    for k, x in pairs(v) do
      if x == NULL then
        v[k] = nil        -- clearing a field during traversal is allowed
      else
        v[k] = strip(x)   -- so is assigning to an existing one
      end
    end
  end
  return v
end
_M.strip_nulls = strip

-- JSON text -> Lua value without nulls, or nil, reason.
function _M.decode(body)
  if type(body) ~= "string" or body == "" then
    return nil, "empty body"
  end
  if str_byte(body, 1) == 0xEF and str_sub(body, 1, 3) == "\239\187\191" then
    body = str_sub(body, 4)            -- a UTF-8 byte order mark (RFC 8259 s8.1)
  end
  local v, err = json.decode(body)
  if v == nil then
    return nil, err or "invalid JSON"
  end
  if v == NULL then
    return nil, "JSON null"
  end
  out_of_range = false
  v = strip(v)
  if out_of_range then
    return nil, "a number out of range"
  end
  return v
end

-- Is a Content-Type one that carries JSON ("application/fhir+json",
-- "application/json; charset=utf-8", the DSTU2 "application/json+fhir")?
function _M.json_media_type(ctype)
  if type(ctype) ~= "string" then
    return false
  end
  local media = str_match(str_lower(ctype), "^%s*([^;%s]+)")
  return media == "application/json"
    or (media ~= nil and (str_match(media, "^application/[%w%.%-]+%+json$") ~= nil
                          or str_match(media, "^application/json%+[%w%.%-]+$") ~= nil))
end

-- "details.text or diagnostics" of every issue, joined with "; ".
function _M.outcome_text(oo)
  if type(oo) ~= "table" or type(oo.issue) ~= "table" then
    return nil
  end
  local texts = {}
  for _, issue in ipairs(oo.issue) do
    if type(issue) == "table" then
      local t = type(issue.details) == "table" and issue.details.text
      if type(t) ~= "string" or t == "" then
        t = issue.diagnostics
      end
      if type(t) == "string" and t ~= "" then
        texts[#texts + 1] = t
      end
    end
  end
  if #texts == 0 then
    return nil
  end
  return tbl_concat(texts, "; ")
end

-- OperationOutcome text of an error response body, if it carries one.
function _M.error_outcome(body)
  local v = _M.decode(body)
  if type(v) == "table" and v.resourceType == "OperationOutcome" then
    return _M.outcome_text(v)
  end
  return nil
end

-- Decodes a success body and checks it is a `expected` resource.  A 200
-- carrying an OperationOutcome is a failure in disguise (some servers
-- answer errors that way).  Returns the resource or nil, err.
function _M.resource(body, expected, ctx)
  local v, why = _M.decode(body)
  if type(v) ~= "table" then
    return nil, errors.new("bad_response", ctx .. ": response is not JSON (" ..
      (why or "not an object") .. ")", { status = 200 })
  end
  local rt = v.resourceType
  if rt == "OperationOutcome" and expected ~= "OperationOutcome" then
    return nil, errors.new("bad_response",
      ctx .. ": the server answered an OperationOutcome instead of a " .. expected,
      { status = 200, outcome = _M.outcome_text(v) })
  end
  if rt ~= expected then
    -- Only a well-formed type name goes into the message: it is the
    -- server's text, and messages are logged.
    local got = type(rt) == "string" and #rt <= 64 and str_match(rt, "^[A-Z][A-Za-z]*$")
      and rt or (rt == nil and "no resourceType" or "an invalid resourceType")
    return nil, errors.new("bad_response", ctx .. ": expected a " .. expected ..
      ", got " .. got, { status = 200 })
  end
  return v
end

-- Resources of type rtype in a search Bundle.  Entries the server added
-- (search.mode "include" or "outcome") are not results.
function _M.entries(bundle, rtype)
  local out = {}
  for _, e in ipairs(type(bundle.entry) == "table" and bundle.entry or {}) do
    local r = type(e) == "table" and e.resource
    local mode = type(e) == "table" and type(e.search) == "table" and e.search.mode
    if type(r) == "table" and r.resourceType == rtype
        and mode ~= "include" and mode ~= "outcome" then
      out[#out + 1] = r
    end
  end
  return out
end

-- URL of the Bundle's next page, or nil.
function _M.next_link(bundle)
  for _, l in ipairs(type(bundle.link) == "table" and bundle.link or {}) do
    if type(l) == "table" and l.relation == "next" and type(l.url) == "string"
        and l.url ~= "" then
      return l.url
    end
  end
  return nil
end

return _M
