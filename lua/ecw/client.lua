-- The client class: one configured EHR tenant (FHIR base + app identity)
-- and the calls a voice agent makes against it.
--
-- Contract of every method:
--   * bad arguments raise (programmer errors, caught while writing the
--     script), with the function and argument named;
--   * anything that can go wrong at run time returns nil, err (an error
--     raised inside mod_lua ends the caller's IVR script);
--   * one deadline per call covers token wait, 401 retry, phone-format
--     attempts and paging;
--   * the call asks only for the scopes it needs, and is refused locally
--     when the app's registered scopes do not cover them.
local core = require "ecw.core"
local errors = require "ecw.errors"
local async = require "ecw.async"
local fhir = require "ecw.fhir"
local query = require "ecw.query"
local scopes = require "ecw.scopes"
local phone = require "ecw.phone"
local patient = require "ecw.patient"
local records = require "ecw.records"
local log = require "ecw.log"
local say = require "ecw.say"

local type, error, pairs, ipairs, setmetatable, getmetatable, tostring, pcall, select =
  type, error, pairs, ipairs, setmetatable, getmetatable, tostring, pcall, select
local math_type = math.type
local str_match, str_find, str_gsub, str_format =
  string.match, string.find, string.gsub, string.format
local tbl_sort = table.sort
local now_ms = core.now_ms

local _M = { _VERSION = core._VERSION }

-- Lua-side counters (per Lua state: in mod_lua, per call), added to
-- core.stats() by ecw.stats().
local counters = {
  calls = 0,
  pages_followed = 0,
  phone_forms_tried = 0,
  scope_refusals = 0,
  next_links_refused = 0,
}
_M.counters = counters

local Client = {}
Client.__index = Client
_M.Client = Client

-- Speech helpers, for scripts holding a client: client.say.name(p).
Client.say = say

------------------------------------------------------------ argument checks
-- Frames between a public function and its caller: every public function
-- is entered through one wrapper (see "instrumentation" at the end).
local WRAPPER_FRAMES = 1

-- `level` is counted from the public function: 1 = that function, 2 = its
-- caller.  argerr adds its own frame and skips the wrapper's.
local function argerr(fname, msg, level)
  error(fname .. ": " .. msg, (level or 2) + 1 + WRAPPER_FRAMES)
end

local function check_self(self, fname, method)
  if getmetatable(self) ~= Client then
    argerr(fname, "call it as client:" .. method .. "(...) (with a colon)", 3)
  end
end

local function is_posint(v)
  return math_type(v) == "integer" and v > 0
end

-- Upper bounds the core enforces (it would raise without our prefix).
local MAX = { timeout_ms = 600000, connect_timeout_ms = 600000, max_body = 1 << 30 }

-- Per-call options every function accepts, plus the ones listed in extra.
local COMMON_OPTS = { timeout_ms = true, scopes = true }

local function check_opts(fname, opts, extra, level)
  level = (level or 2) + 1
  if opts == nil then
    return {}
  end
  if type(opts) ~= "table" then
    argerr(fname, "'opts' must be a table", level)
  end
  for k, v in pairs(opts) do
    if not COMMON_OPTS[k] and not (extra and extra[k]) then
      argerr(fname, "unknown option '" .. tostring(k) .. "'", level)
    end
    if (k == "timeout_ms" or k == "max_pages" or k == "count") and not is_posint(v) then
      argerr(fname, "option '" .. k .. "' must be a positive integer", level)
    end
    if MAX[k] and v > MAX[k] then
      argerr(fname, "option '" .. k .. "' must be at most " .. MAX[k], level)
    end
  end
  if opts.phone_search ~= nil and opts.phone_search ~= "first" and opts.phone_search ~= "all" then
    argerr(fname, "option 'phone_search' must be \"first\" or \"all\"", level)
  end
  if opts.scopes ~= nil then
    local list, why = scopes.list(opts.scopes)
    if not list then
      argerr(fname, "option 'scopes' " .. why, level)
    end
  end
  return opts
end

------------------------------------------------------------------ the call
-- What the instrumentation wrapper gathers about the call in progress
-- (requests, pages, phone forms) when a logger listens; nil otherwise.
-- A Lua state runs one call at a time.
local current = nil

-- A call: its name for messages, its deadline and its scope override.
local function begin(self, fname, opts)
  counters.calls = counters.calls + 1
  return {
    fname = fname,
    deadline = now_ms() + (opts.timeout_ms or self.timeout_ms),
    scopes = opts.scopes and scopes.list(opts.scopes),
    max_pages = opts.max_pages or self.max_pages,
    phone_search = opts.phone_search or self.phone_search,
  }
end

-- Scopes for reading/searching rtype in this call, or nil, err when the
-- registered set does not cover them.  Checked for every type a call will
-- touch before its first request, so a refused call costs no HTTP at all.
local function need(self, call, rtype)
  local list = call.scopes or { scopes.for_type(rtype, self.scope_style) }
  if self.registered then
    local missing = scopes.uncovered(self.registered, list)
    if missing then
      counters.scope_refusals = counters.scope_refusals + 1
      log.emit("warn", "scope_refused", { method = call.fname, type = rtype, scope = missing })
      return nil, errors.new("scope", call.fname .. ": scope " .. missing ..
        " is not among the scopes configured for this app")
    end
  end
  return list
end

local function timed_out(call)
  return errors.new("timeout", call.fname .. ": the call's time budget ran out",
    { retryable = true })
end

-- One GET within the call's deadline; non-2xx answers become errors, and
-- so do 2xx answers that do not say they are JSON.
local function get(self, call, target, scope_list, rtype, interaction)
  local remaining = call.deadline - now_ms()
  if remaining <= 0 then
    return nil, timed_out(call)
  end
  local t0 = now_ms()
  local res, e = self.h:get(target, scope_list,
    { timeout_ms = remaining, deadline = call.deadline })
  if current then
    current.requests = current.requests + 1
  end
  if not res then
    log.emit("debug", "request", { type = rtype, interaction = interaction,
      ms = now_ms() - t0, code = e.code })
    return nil, errors.from_core(e, call.fname)
  end
  -- Only the type and interaction: the target holds ids and query values.
  log.emit("debug", "request", { type = rtype, interaction = interaction,
    status = res.status, ms = now_ms() - t0, bytes = #res.body,
    retried_401 = res.retried })
  if res.status < 200 or res.status > 299 then
    return nil, errors.from_status(res.status, call.fname, rtype, interaction,
      fhir.error_outcome(res.body))
  end
  local ctype = res.headers and res.headers["content-type"]
  if ctype ~= nil and not fhir.json_media_type(ctype) then
    return nil, errors.new("bad_response", call.fname .. ": the FHIR server answered " ..
      "a body that is not JSON (" .. rtype .. " " .. interaction .. ", HTTP " ..
      res.status .. ")", { status = res.status })
  end
  return res
end

local function read(self, call, rtype, id, scope_list)
  local res, err = get(self, call, query.read_target(rtype, id), scope_list, rtype, "read")
  if not res then
    return nil, err
  end
  local r
  r, err = fhir.resource(res.body, rtype, call.fname)
  if r and r.id ~= id then
    -- Another resource than the one asked for: never hand a script the
    -- wrong patient.
    return nil, errors.new("bad_response", call.fname .. ": the server answered a " ..
      rtype .. " with another id", { status = res.status })
  end
  return r, err
end

-- Runs a search and follows Bundle next links on fhir_base's origin, up to
-- max_pages.  Returns the resources (deduplicated by id) and meta
-- { pages, total?, truncated? } where truncated says why paging stopped
-- early: "max_pages", "origin" (a next link pointing elsewhere: the token
-- never leaves the FHIR server), "bad_link" or "loop".
local function search(self, call, rtype, list, scope_list)
  local target = query.search_target(rtype, list)
  local out, seen, visited = {}, {}, {}
  local meta = { pages = 0 }
  for page = 1, call.max_pages do
    local res, err = get(self, call, target, scope_list, rtype, "search")
    if not res then
      return nil, err
    end
    local bundle
    bundle, err = fhir.resource(res.body, "Bundle", call.fname)
    if not bundle then
      return nil, err
    end
    meta.pages = page
    if current then
      current.pages = current.pages + 1
    end
    if page == 1 and math_type(bundle.total) == "integer" then
      meta.total = bundle.total
    end
    for _, r in ipairs(fhir.entries(bundle, rtype)) do
      local id = r.id
      if id == nil or not seen[id] then
        if id ~= nil then
          seen[id] = true
        end
        out[#out + 1] = r
      end
    end
    local nxt = fhir.next_link(bundle)
    if not nxt then
      return out, meta
    end
    local origin = query.origin(nxt)
    if origin ~= self.origin or not query.under_base(nxt, self.fhir_base) then
      -- Elsewhere than the FHIR base (another host, or another path on
      -- it: another practice, the token endpoint): the token stays home.
      meta.truncated = origin and "origin" or "bad_link"
      counters.next_links_refused = counters.next_links_refused + 1
      log.emit("warn", "next_link_refused", { type = rtype, reason = meta.truncated })
      return out, meta
    end
    if str_find(nxt, "[%z\1-\32\127-\255]") then
      meta.truncated = "bad_link"
      log.emit("warn", "next_link_refused", { type = rtype, reason = meta.truncated })
      return out, meta
    end
    if visited[nxt] then
      meta.truncated = "loop"
      log.emit("warn", "next_link_refused", { type = rtype, reason = meta.truncated })
      return out, meta
    end
    visited[nxt] = true
    target = nxt
    if page < call.max_pages then
      counters.pages_followed = counters.pages_followed + 1
    end
  end
  meta.truncated = "max_pages"
  log.emit("info", "max_pages", { type = rtype, pages = meta.pages })
  return out, meta
end

-------------------------------------------------------------- generic API
function Client:read(rtype, id, opts)
  local fname = "ecw.read"
  check_self(self, fname, "read")
  if not query.valid_type(rtype) then
    argerr(fname, "bad argument #1 'type' (expected a FHIR resource type)")
  end
  if not query.valid_id(id) then
    argerr(fname, "bad argument #2 'id' (expected a FHIR id: [A-Za-z0-9-.]{1,64})")
  end
  opts = check_opts(fname, opts)
  local call = begin(self, fname, opts)
  local scope_list, err = need(self, call, rtype)
  if not scope_list then
    return nil, err
  end
  return read(self, call, rtype, id, scope_list)
end

function Client:search(rtype, params, opts)
  local fname = "ecw.search"
  check_self(self, fname, "search")
  if not query.valid_type(rtype) then
    argerr(fname, "bad argument #1 'type' (expected a FHIR resource type)")
  end
  if params ~= nil and type(params) ~= "table" then
    argerr(fname, "bad argument #2 'params' (expected a table)")
  end
  local list, why = query.pairs_of(params or {})
  if not list then
    argerr(fname, "bad argument #2 'params' (" .. why .. ")")
  end
  opts = check_opts(fname, opts, { max_pages = true })
  local call = begin(self, fname, opts)
  local scope_list, err = need(self, call, rtype)
  if not scope_list then
    return nil, err
  end
  return search(self, call, rtype, list, scope_list)
end

------------------------------------------------------------------ patients
-- criteria key -> Patient search parameter
local CRITERIA = {
  phone = "phone", identifier = "identifier", family = "family",
  given = "given", name = "name", birthdate = "birthdate",
  gender = "gender", id = "_id",
}
local CRITERIA_LIST = "phone, identifier, family, given, name, birthdate, gender or id"

local function check_criteria(fname, criteria, level)
  level = level + 1
  if type(criteria) ~= "table" then
    argerr(fname, "bad argument #1 'criteria' (expected a table such as {phone = caller_id})", level)
  end
  local any = false
  for k, v in pairs(criteria) do
    if not CRITERIA[k] then
      argerr(fname, "unknown criterion '" .. tostring(k) .. "' (expected " ..
        CRITERIA_LIST .. ")", level)
    end
    if type(v) ~= "string" then
      argerr(fname, "'" .. k .. "' must be a string", level)
    end
    if v == "" then
      argerr(fname, "'" .. k .. "' must not be empty", level)
    end
    any = true
  end
  if not any then
    argerr(fname, "no search criteria (expected " .. CRITERIA_LIST .. ")", level)
  end
  if criteria.birthdate and not str_match(criteria.birthdate, "^%d%d%d%d%-%d%d%-%d%d$") then
    argerr(fname, "'birthdate' must be a date as YYYY-MM-DD", level)
  end
  if criteria.id and not query.valid_id(criteria.id) then
    argerr(fname, "'id' must be a FHIR id ([A-Za-z0-9-.]{1,64})", level)
  end
end

local function shape_all(list)
  local out = {}
  for i, r in ipairs(list) do
    out[i] = patient.shape(r)
  end
  return out
end

-- A matching Patient without a usable id cannot be told apart from the
-- others nor looked up again: the answer as a whole is unusable (dropping
-- it could turn "ambiguous" into the wrong patient).
local function no_id(call)
  return errors.new("bad_response", call.fname ..
    ": the server answered a Patient without a valid id", { status = 200 })
end

local function find_patients(self, call, criteria, scope_list)
  local params = {}
  for k, v in pairs(criteria) do
    if k ~= "phone" then
      params[#params + 1] = { CRITERIA[k], v }
    end
  end
  tbl_sort(params, function(a, b) return a[1] < b[1] end)
  local dob = criteria.birthdate
  local function keep(r)
    -- The server filters too; this guards against servers that ignore a
    -- parameter (lenient servers drop unknown ones silently).
    return not dob or r.birthDate == dob
  end

  if not criteria.phone then
    if criteria.id and #params == 1 then
      local r, err = read(self, call, "Patient", criteria.id, scope_list)
      if not r then
        if err.code == "not_found" then
          return {}, { pages = 0 }
        end
        return nil, err
      end
      return { patient.shape(r) }, { pages = 1 }
    end
    local list, meta = search(self, call, "Patient", params, scope_list)
    if not list then
      return nil, meta
    end
    local out = {}
    for _, r in ipairs(list) do
      if keep(r) then
        if not query.valid_id(r.id) then
          return nil, no_id(call)
        end
        out[#out + 1] = r
      end
    end
    return shape_all(out), meta
  end

  -- Caller ID: withheld or unparseable numbers find nobody, without a
  -- request (it is the caller's input, not a programming error).
  local e164 = phone.normalize(criteria.phone)
  if not e164 then
    return {}, { pages = 0, phone = "unusable" }
  end
  local total_pages, seen, out = 0, {}, {}
  local meta
  for i, form in ipairs(phone.search_forms(e164)) do
    counters.phone_forms_tried = counters.phone_forms_tried + 1
    if current then
      current.forms = current.forms + 1
    end
    local list = { { "phone", form } }
    for _, p in ipairs(params) do
      list[#list + 1] = p
    end
    local found
    found, meta = search(self, call, "Patient", list, scope_list)
    if not found then
      return nil, meta
    end
    total_pages = total_pages + meta.pages
    local confirmed = 0
    for _, r in ipairs(found) do
      -- Confirm every match: the patient must really have the caller's
      -- number (a token search may match loosely, or match another field).
      if keep(r) and patient.has_phone(r, e164) then
        if not query.valid_id(r.id) then
          return nil, no_id(call)
        end
        confirmed = confirmed + 1
        if not seen[r.id] then
          seen[r.id] = true
          out[#out + 1] = r
        end
      end
    end
    -- The form's position in the list, never the number itself.
    log.emit("debug", "phone_form", { form = i, found = #found, confirmed = confirmed })
    -- "first": stop at the first form with confirmed matches (fewest
    -- requests).  "all": try every form, for servers that match the stored
    -- text exactly, where family members sharing a line may have been
    -- typed in different formats and "first" would see only some of them.
    if #out > 0 and call.phone_search ~= "all" then
      break
    end
  end
  meta.pages = total_pages
  return shape_all(out), meta
end

function Client:patients(criteria, opts)
  local fname = "ecw.patients"
  check_self(self, fname, "patients")
  check_criteria(fname, criteria, 2)
  opts = check_opts(fname, opts, { max_pages = true, phone_search = true })
  local call = begin(self, fname, opts)
  local scope_list, err = need(self, call, "Patient")
  if not scope_list then
    return nil, err
  end
  return find_patients(self, call, criteria, scope_list)
end

function Client:patient(criteria, opts)
  local fname = "ecw.patient"
  check_self(self, fname, "patient")
  check_criteria(fname, criteria, 2)
  opts = check_opts(fname, opts, { max_pages = true, phone_search = true })
  local call = begin(self, fname, opts)
  local scope_list, err = need(self, call, "Patient")
  if not scope_list then
    return nil, err
  end
  local list, meta = find_patients(self, call, criteria, scope_list)
  if not list then
    return nil, meta
  end
  if #list == 0 then
    return nil, errors.new("not_found", fname .. ": no patient matches")
  elseif #list > 1 then
    return nil, errors.new("ambiguous", fname .. ": " .. #list ..
      " patients match; ask for more details (e.g. the date of birth)",
      { count = #list })
  end
  return list[1]
end

------------------------------------------------------- receptionist helpers
-- The helpers take what ecw.patient returned, a Patient resource, or an id.
-- Returns id, resource-or-nil.
local function patient_arg(fname, p, level)
  level = level + 1
  if type(p) == "string" then
    if not query.valid_id(p) then
      argerr(fname, "bad argument #1 'patient' (not a FHIR id)", level)
    end
    return p, nil
  elseif type(p) == "table" then
    local resource = (p.resourceType == "Patient" and p)
      or (type(p.resource) == "table" and p.resource.resourceType == "Patient" and p.resource)
      or nil
    local id = p.id
    if query.valid_id(id) then
      return id, resource
    end
  end
  argerr(fname, "bad argument #1 'patient' (expected a patient from ecw.patient, " ..
    "a Patient resource or a patient id)", level)
end

-- Searches rtype?patient=<id>[&extra] and shapes each result.
local function patient_records(self, fname, p, opts, rtype, extra_params, extra_opts)
  local id = patient_arg(fname, p, 3)
  opts = check_opts(fname, opts, extra_opts, 3)
  local call = begin(self, fname, opts)
  local scope_list, err = need(self, call, rtype)
  if not scope_list then
    return nil, err
  end
  local list = { { "patient", id } }
  for _, kv in ipairs(extra_params or {}) do
    list[#list + 1] = kv
  end
  return search(self, call, rtype, list, scope_list)
end

local function map(list, fn, filter)
  local out = {}
  for _, r in ipairs(list) do
    if not filter or filter(r) then
      out[#out + 1] = fn(r)
    end
  end
  return out
end

-- Practitioner reference -> id, or nil.  Relative "Practitioner/x", or an
-- absolute URL under our own FHIR base (never another server's).
local function practitioner_id(self, ref)
  if type(ref) ~= "table" or type(ref.reference) ~= "string" then
    return nil
  end
  local r = ref.reference
  local prefix = self.fhir_base .. "/"
  if r:sub(1, #prefix) == prefix then
    r = r:sub(#prefix + 1)
  end
  local id = str_match(r, "^Practitioner/([^/]+)$")
    or str_match(r, "^Practitioner/([^/]+)/_history/[^/]+$")
  return query.valid_id(id) and id or nil
end

-- Patient.generalPractitioner[1] (the first one that is a Practitioner)
-- -> { id, name = "Dr. Alice Example", family, given, prefix, resource }.
function Client:practitioner(p, opts)
  local fname = "ecw.practitioner"
  check_self(self, fname, "practitioner")
  local id, resource = patient_arg(fname, p, 2)
  opts = check_opts(fname, opts)
  local call = begin(self, fname, opts)
  local pr_scopes, err = need(self, call, "Practitioner")
  if not pr_scopes then
    return nil, err
  end
  if not resource then
    local pa_scopes
    pa_scopes, err = need(self, call, "Patient")
    if not pa_scopes then
      return nil, err
    end
    resource, err = read(self, call, "Patient", id, pa_scopes)
    if not resource then
      return nil, err
    end
  end
  local gp = type(resource.generalPractitioner) == "table" and resource.generalPractitioner or {}
  local pid
  for _, ref in ipairs(gp) do
    pid = practitioner_id(self, ref)
    if pid then
      break
    end
  end
  if not pid then
    return nil, errors.new("not_found", fname .. ": no primary care practitioner on file")
  end
  local r
  r, err = read(self, call, "Practitioner", pid, pr_scopes)
  if not r then
    return nil, err
  end
  return records.practitioner(r)
end

-- Active MedicationRequests, most recently authored first.
-- opts.status: a status to ask for instead of "active", or "all".
function Client:medications(p, opts)
  local fname = "ecw.medications"
  check_self(self, fname, "medications")
  local status = type(opts) == "table" and opts.status or "active"
  if type(status) ~= "string" or not str_match(status, "^[%a%-]+$") then
    argerr(fname, "option 'status' must be a MedicationRequest status or \"all\"")
  end
  local extra = status ~= "all" and { { "status", status } } or nil
  local list, meta = patient_records(self, fname, p, opts, "MedicationRequest", extra,
    { status = true, max_pages = true })
  if not list then
    return nil, meta
  end
  local out = map(list, records.medication, function(r)
    return status == "all" or r.status == status
  end)
  return records.sort_by_date_desc(out, "authored"), meta
end

-- Current allergies (resolved, inactive, refuted and entered-in-error
-- ones are left out).
function Client:allergies(p, opts)
  local fname = "ecw.allergies"
  check_self(self, fname, "allergies")
  local list, meta = patient_records(self, fname, p, opts, "AllergyIntolerance", nil,
    { max_pages = true })
  if not list then
    return nil, meta
  end
  return map(list, records.allergy, records.allergy_current), meta
end

-- Coverage (insurance) records that are in force, most recent first.
function Client:coverage(p, opts)
  local fname = "ecw.coverage"
  check_self(self, fname, "coverage")
  local list, meta = patient_records(self, fname, p, opts, "Coverage", nil,
    { max_pages = true })
  if not list then
    return nil, meta
  end
  local out = map(list, records.coverage, function(r)
    return r.status ~= "cancelled" and r.status ~= "entered-in-error"
  end)
  return records.sort_by_date_desc(out, "start"), meta
end

-- Encounters, most recent first, at most opts.count (default 5).
function Client:encounters(p, opts)
  local fname = "ecw.encounters"
  check_self(self, fname, "encounters")
  local list, meta = patient_records(self, fname, p, opts, "Encounter", nil,
    { count = true, max_pages = true })
  if not list then
    return nil, meta
  end
  local out = records.sort_by_date_desc(map(list, records.encounter), "date")
  local count = type(opts) == "table" and opts.count or 5
  for i = #out, count + 1, -1 do
    out[i] = nil
  end
  return out, meta
end

------------------------------------------------------------ construction
local OPTION_TYPES = {
  fhir_base = "string", client_id = "string", private_key = "string", kid = "string",
  token_url = "string", alg = "string", ca_file = "string", jku = "string",
  timeout_ms = "posint", connect_timeout_ms = "posint", max_body = "posint",
  max_pages = "posint", iat = "boolean", name = "string", scopes = "scopes",
  scope_style = "string", vendor = "string", phone_search = "string",
  rate_limit = "count", breaker_threshold = "count", breaker_cooldown_ms = "posint",
  log_level = "string", allow_insecure_key = "boolean",
}
local REQUIRED = { "fhir_base", "client_id", "private_key", "kid" }
local VENDORS = { ecw = true, epic = true, generic = true }
-- eCW and Epic document v1 system scopes for backend apps; a generic
-- server gets the current (v2) grammar.
local DEFAULT_STYLE = { ecw = "v1", epic = "v1", generic = "v2" }

local function registered_count(v)
  local list = v and scopes.list(v)
  return list and #list or nil
end

-- The options as given, for a worker thread to configure the same client.
local function copy_config(opts)
  local c = {}
  for k, v in pairs(opts) do
    if type(v) == "table" then
      local l = {}
      for i, s in ipairs(v) do l[i] = s end
      v = l
    end
    c[k] = v
  end
  return c
end

local function check_config(opts, level)
  local fname = "ecw.configure"
  if type(opts) ~= "table" then
    argerr(fname, "bad argument #1 'opts' (expected a table)", level)
  end
  for k, v in pairs(opts) do
    local want = OPTION_TYPES[k]
    if not want then
      argerr(fname, "unknown option '" .. tostring(k) .. "'", level)
    elseif want == "posint" then
      if not is_posint(v) then
        argerr(fname, "'" .. k .. "' must be a positive integer", level)
      end
      if MAX[k] and v > MAX[k] then
        argerr(fname, "'" .. k .. "' must be at most " .. MAX[k], level)
      end
    elseif want == "count" then
      if math_type(v) ~= "integer" or v < 0 then
        argerr(fname, "'" .. k .. "' must be a non-negative integer (0 turns it off)", level)
      end
    elseif want == "scopes" then
      local ok, why = scopes.list(v)
      if not ok then
        argerr(fname, "'scopes' " .. why, level)
      end
    elseif type(v) ~= want then
      argerr(fname, "'" .. k .. "' must be a " .. want, level)
    elseif want == "string" and v == "" then
      argerr(fname, "'" .. k .. "' must not be empty", level)
    end
  end
  for _, k in ipairs(REQUIRED) do
    if opts[k] == nil then
      argerr(fname, "'" .. k .. "' is required", level)
    end
  end
  if opts.vendor and not VENDORS[opts.vendor] then
    argerr(fname, "'vendor' must be \"ecw\", \"epic\" or \"generic\"", level)
  end
  if opts.scope_style and opts.scope_style ~= "v1" and opts.scope_style ~= "v2" then
    argerr(fname, "'scope_style' must be \"v1\" or \"v2\"", level)
  end
  if opts.phone_search and opts.phone_search ~= "first" and opts.phone_search ~= "all" then
    argerr(fname, "'phone_search' must be \"first\" or \"all\"", level)
  end
  if opts.alg and opts.alg ~= "RS384" and opts.alg ~= "ES384" then
    argerr(fname, "'alg' must be \"RS384\" or \"ES384\"", level)
  end
  if opts.log_level and not log.valid_level(opts.log_level) then
    argerr(fname, "'log_level' must be \"debug\", \"info\", \"warn\" or \"error\"", level)
  end
end

-- The private key must be readable by its owner alone.  Readable or
-- writable by others: refused (unless allow_insecure_key); by the group:
-- a loud warning.  Needs core.file_mode (mode bits, or nil when the file
-- cannot be examined: then core.client reports the problem).  Returns nil
-- or an error.
local function check_key_mode(opts, fname)
  local file_mode = core.file_mode
  if type(file_mode) ~= "function" then
    return nil
  end
  local ok, mode = pcall(file_mode, opts.private_key)
  if not ok or math_type(mode) ~= "integer" then
    return nil
  end
  local perms = str_format("%04o", mode & 4095)
  if mode & 7 ~= 0 then                     -- o+rwx
    if not opts.allow_insecure_key then
      log.emit("error", "key_file_refused", { mode = perms, reason = "others" })
      return errors.new("config", fname .. ": the private key file is accessible to " ..
        "other users (mode " .. perms .. "); chmod 600 it, or set allow_insecure_key = true")
    end
    log.emit("error", "key_file_insecure", { mode = perms, reason = "others",
      allowed = true })
  elseif mode & 56 ~= 0 then                -- g+rwx
    log.emit("warn", "key_file_insecure", { mode = perms, reason = "group" })
  end
  return nil
end

-- Returns a client, or nil, err for failures found at run time (a key
-- file that cannot be read, a base URL that is not http(s)).
-- depth: stack frames between the script and this function, so that
-- argument errors point at the script's line (ecw.configure adds one).
function _M.new(opts, depth)
  check_config(opts, 3 + (depth or 0))
  local fname = "ecw.configure"
  if opts.log_level then
    log.set_level(opts.log_level)
  end
  local base = str_gsub(opts.fhir_base, "/+$", "")
  local origin = query.origin(base)
  if not origin then
    log.emit("error", "configure", { code = "config", reason = "fhir_base" })
    return nil, errors.new("config", fname .. ": 'fhir_base' is not an http(s) URL")
  end
  local kerr = check_key_mode(opts, fname)
  if kerr then
    return nil, kerr
  end
  local h, e = core.client {
    fhir_base = base, client_id = opts.client_id, private_key = opts.private_key,
    kid = opts.kid, token_url = opts.token_url, alg = opts.alg, jku = opts.jku,
    ca_file = opts.ca_file, timeout_ms = opts.timeout_ms,
    connect_timeout_ms = opts.connect_timeout_ms, max_body = opts.max_body,
    iat = opts.iat,
    -- eCW: 250 requests per minute per practice, token calls included
    rate_limit = opts.rate_limit or (opts.vendor or "ecw") == "ecw" and 250 or 0,
    breaker_threshold = opts.breaker_threshold,
    breaker_cooldown_ms = opts.breaker_cooldown_ms,
  }
  if not h then
    log.emit("error", "configure", { code = "config", cause = e.code })
    return nil, errors.from_core(e, fname)
  end
  local vendor = opts.vendor or "ecw"
  -- The host only: the path names the practice, and the client id and
  -- key stay out of logs altogether.
  log.emit("debug", "configure", { host = str_match(origin, "^%a+://(.*)$"),
    vendor = vendor, scope_style = opts.scope_style or DEFAULT_STYLE[vendor],
    scopes = registered_count(opts.scopes), max_pages = opts.max_pages or 10,
    timeout_ms = h:info().timeout_ms, phone_search = opts.phone_search or "first" })
  local registered = opts.scopes and scopes.list(opts.scopes)
  return setmetatable({
    h = h,
    name = opts.name or "default",
    fhir_base = base,
    origin = origin,
    vendor = vendor,
    scope_style = opts.scope_style or DEFAULT_STYLE[vendor],
    scopes = registered,
    registered = registered and scopes.registered(registered),
    max_pages = opts.max_pages or 10,
    phone_search = opts.phone_search or "first",
    timeout_ms = h:info().timeout_ms,
    config = copy_config(opts),
  }, Client)
end

-- What the client was configured with (no secrets: the key stays a path).
function Client:info()
  check_self(self, "ecw.info", "info")
  local info = self.h:info()
  info.name = self.name
  info.vendor = self.vendor
  info.scope_style = self.scope_style
  info.scopes = self.scopes and scopes.join(self.scopes)
  info.max_pages = self.max_pages
  info.phone_search = self.phone_search
  return info
end

-- Warm-up before the first call (e.g. from a FreeSWITCH startup-script, or
-- before session:answer() so the caller hears ringback, not silence):
--   client:warm{ "Patient", "MedicationRequest" }        -- resource types
--   client:warm{ scopes = { "system/Patient.read", ... } } -- explicit sets
-- fetches a token for each scope set and opens a connection to the FHIR
-- server.  The tokens are then refreshed ahead of expiry, off the call
-- path, for as long as calls use them.
function Client:warm(what, opts)
  local fname = "ecw.warm"
  check_self(self, fname, "warm")
  if type(what) == "string" then
    what = { what }
  end
  if type(what) ~= "table" then
    argerr(fname, "bad argument #1 (expected resource types or {scopes = {...}})")
  end
  local sets = {}
  if what.scopes ~= nil then
    if type(what.scopes) ~= "table" or #what.scopes == 0 then
      argerr(fname, "'scopes' must be a list of scope sets")
    end
    for i, set in ipairs(what.scopes) do
      local list, why = scopes.list(set)
      if not list then
        argerr(fname, "'scopes[" .. i .. "]' " .. why)
      end
      sets[#sets + 1] = list
    end
  else
    if #what == 0 then
      argerr(fname, "bad argument #1 (expected resource types or {scopes = {...}})")
    end
    for _, t in ipairs(what) do
      if not query.valid_type(t) then
        argerr(fname, "bad argument #1 'types' (expected FHIR resource types)")
      end
    end
  end
  opts = check_opts(fname, opts)
  local call = begin(self, fname, opts)
  for _, t in ipairs(what) do
    local scope_list, err = need(self, call, t)
    if not scope_list then
      return nil, err
    end
    sets[#sets + 1] = scope_list
  end
  for _, set in ipairs(sets) do
    if self.registered then
      local missing = scopes.uncovered(self.registered, set)
      if missing then
        return nil, errors.new("scope", fname .. ": scope " .. missing ..
          " is not among the scopes configured for this app")
      end
    end
    local remaining = call.deadline - now_ms()
    if remaining <= 0 then
      return nil, timed_out(call)
    end
    local ok, e = self.h:token(set, { timeout_ms = remaining, deadline = call.deadline })
    if not ok then
      return nil, errors.from_core(e, fname)
    end
  end
  -- A keep-alive connection to the FHIR server (the token endpoint may
  -- live on another host, as eCW's does).
  local remaining = call.deadline - now_ms()
  if remaining <= 0 then
    return nil, timed_out(call)
  end
  local status, e = self.h:connect { timeout_ms = remaining }
  if not status then
    return nil, errors.from_core(e, fname)
  end
  return true
end

-- Start a lookup on a worker thread and return at once:
--   local req = client:start("patient", { phone = ... })
--   ... play a prompt ...
--   local p, err = req:wait(ms)
-- Patient criteria are checked here, so mistakes raise in the script as
-- they would for the blocking call; other methods check theirs on the
-- worker and report a mistake as an "internal" error.
function Client:start(method, ...)
  local fname = "ecw.start"
  check_self(self, fname, "start")
  if type(method) ~= "string" or not async.STARTABLE[method] then
    argerr(fname, "bad argument #1 'method' (expected the name of a lookup, e.g. \"patient\")")
  end
  if method == "patient" or method == "patients" then
    check_criteria(fname, (...), 2)
  end
  return async.start(self.config, "ecw." .. method, method, ...)
end

function Client:close()
  check_self(self, "ecw.close", "close")
  self.h:close()
end

--------------------------------------------------------- instrumentation
-- Every public function is entered through one wrapper (WRAPPER_FRAMES),
-- which logs a summary of each lookup when a logger listens: the method,
-- the outcome code, the time taken, the FHIR requests, pages and phone
-- forms of this call, and deltas of the core's counters (process-wide, so
-- under concurrent calls they include other threads' work).  Never a
-- criterion, id, result value or message (see ecw.log).
-- A new public method must be added to one of the lists below.
local function pass(...)
  return ...
end

-- Outcome code -> level: what a person should look at is "warn" (the
-- service is degraded) or "error" (the configuration is wrong).
local LEVEL_OF = {
  ok = "info", not_found = "info", ambiguous = "info", cancelled = "info",
  timeout = "warn", network = "warn", rate_limited = "warn", unavailable = "warn",
  bad_response = "warn", http = "warn",
  auth = "error", config = "error", scope = "error", tls = "error", internal = "error",
}

local CORE_DELTAS = { "http_requests", "token_requests", "token_cache_hits",
                      "token_waits", "token_failures", "retries_401" }
local LISTS = { ["ecw.patients"] = true, ["ecw.search"] = true, ["ecw.medications"] = true,
                ["ecw.allergies"] = true, ["ecw.coverage"] = true, ["ecw.encounters"] = true }

local function report(ctx, n, value, second)
  local fields = { method = ctx.fname, ms = now_ms() - ctx.t0, requests = ctx.requests,
                   pages = ctx.pages }
  if ctx.forms > 0 then
    fields.phone_forms = ctx.forms
  end
  local code = "ok"
  if value == nil and n > 0 then
    code = errors.is_error(second) and second.code or "internal"
    if type(second) == "table" then
      fields.status = math_type(second.status) == "integer" and second.status or nil
      fields.cause = second.cause
      fields.count = math_type(second.count) == "integer" and second.count or nil
      fields.retryable = second.retryable
      -- Only that the server explained itself: its text may quote PHI.
      fields.outcome = second.outcome ~= nil or nil
    end
  elseif LISTS[ctx.fname] and type(value) == "table" then
    fields.results = #value
    if type(second) == "table" and type(second.truncated) == "string" then
      fields.truncated = true
    end
  end
  fields.code = code
  local after = core.stats()
  for _, k in ipairs(CORE_DELTAS) do
    local a, b = after[k], ctx.stats[k]
    if math_type(a) == "integer" and math_type(b) == "integer" and a ~= b then
      fields[k] = a - b
    end
  end
  log.emit(LEVEL_OF[code] or "warn", "call", fields)
end

local function finish(ctx, ...)
  current = nil
  local n = select("#", ...)
  local value, second = ...
  pcall(report, ctx, n, value, second)
  return ...
end

local function logged(fname, fn)
  return function(self, ...)
    if not log.enabled("error") then
      current = nil
      return pass(fn(self, ...))
    end
    local ctx = { fname = fname, t0 = now_ms(), requests = 0, pages = 0, forms = 0,
                  stats = core.stats() }
    current = ctx
    return finish(ctx, fn(self, ...))
  end
end

local function plain(fn)
  return function(...)
    return pass(fn(...))
  end
end

for _, m in ipairs({ "patient", "patients", "read", "search", "practitioner",
                     "medications", "allergies", "coverage", "encounters", "warm" }) do
  Client[m] = logged("ecw." .. m, Client[m])
end
for _, m in ipairs({ "start", "info", "close" }) do
  Client[m] = plain(Client[m])
end
_M.new = plain(_M.new)

return _M
