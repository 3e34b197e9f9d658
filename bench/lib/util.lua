-- Helpers shared by the bench drivers (bench/items/*) and bench/run.lua:
-- order statistics, counter deltas, the sandbox admin API, configuration
-- passing and result output.  Lua 5.4.
local cjson = require "cjson"

local M = {}

---------------------------------------------------------------- statistics
-- Sorted copy of the values of `t` that are >= 0 (the harness marks a value
-- a call did not report with -1).
function M.sorted(t)
  local s = {}
  for _, v in ipairs(t) do
    if v >= 0 then s[#s + 1] = v end
  end
  table.sort(s)
  return s
end

-- Nearest-rank percentile of a sorted array (p in 0..1).
function M.pct(s, p)
  if #s == 0 then return nil end
  local i = math.ceil(p * #s)
  if i < 1 then i = 1 end
  if i > #s then i = #s end
  return s[i]
end

-- { n, min, median, p90, p99, max, mean } of the values in t.
function M.summary(t)
  local s = M.sorted(t)
  local sum = 0
  for _, v in ipairs(s) do sum = sum + v end
  return {
    n = #s, min = s[1], median = M.pct(s, 0.5), p90 = M.pct(s, 0.9),
    p99 = M.pct(s, 0.99), max = s[#s], mean = #s > 0 and sum / #s or nil,
  }
end

-- Elementwise b - a over the numeric fields of two counter tables.
function M.delta(a, b)
  local d = {}
  for k, v in pairs(b) do
    if type(v) == "number" and type(a[k]) == "number" then d[k] = v - a[k] end
  end
  return d
end

-------------------------------------------------------------- sandbox admin
-- The few admin calls the drivers need, over plain HTTP (luasocket).
local function admin(admin_url, method, path, value)
  local http = require "socket.http"
  local ltn12 = require "ltn12"
  local body = value ~= nil and cjson.encode(value) or nil
  local chunks = {}
  local ok, code = http.request {
    url = admin_url .. path, method = method,
    sink = ltn12.sink.table(chunks),
    source = body and ltn12.source.string(body) or nil,
    headers = body and { ["content-type"] = "application/json",
                         ["content-length"] = tostring(#body) } or nil,
  }
  assert(ok and code == 200, "sandbox admin " .. path .. ": " .. tostring(code))
  return cjson.decode(table.concat(chunks))
end

-- The totals of /stats (connections, token_requests, expired_uses, ...),
-- with min_remaining_ms as a number or nil.
function M.sandbox_totals(admin_url)
  local s = admin(admin_url, "GET", "/stats")
  local t = {}
  for k, v in pairs(s) do
    if type(v) == "number" then t[k] = v end
  end
  if type(s.totals) == "table" then
    for k, v in pairs(s.totals) do
      if type(v) == "number" then t[k] = v end
    end
  end
  return t, s
end

function M.sandbox_reset(admin_url)
  return admin(admin_url, "POST", "/reset_stats", {})
end

function M.sandbox_config(admin_url, t)
  return admin(admin_url, "POST", "/config", t)
end

------------------------------------------------------------- configuration
function M.read_json(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return cjson.decode(s)
end

function M.write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- A Lua literal for a flat-ish table of strings, numbers, booleans and
-- nested arrays, for the ARG of fresh-state scripts (load(ARG)() costs a
-- few microseconds, reading a JSON file per call would cost more).
function M.literal(v)
  local t = type(v)
  if t == "string" then return string.format("%q", v) end
  if t == "number" or t == "boolean" then return tostring(v) end
  if t == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[#parts + 1] = M.literal(x) end
    local keys = {}
    for k in pairs(v) do
      if type(k) == "string" then keys[#keys + 1] = k end
    end
    table.sort(keys)
    for _, k in ipairs(keys) do
      parts[#parts + 1] = "[" .. string.format("%q", k) .. "]=" .. M.literal(v[k])
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return "nil"
end

-- The ecw.configure options of a driver configuration.  rate_limit = 0:
-- the bench sends far more than eCW's 250 requests per minute per practice
-- to one sandbox practice, and measures the module, not that budget (the
-- guard's bookkeeping still runs on every request).
function M.ecw_opts(cfg)
  return {
    fhir_base = cfg.fhir_base, client_id = cfg.client_id,
    private_key = cfg.key_path, kid = cfg.kid, ca_file = cfg.ca_file,
    rate_limit = 0,
  }
end

------------------------------------------------------------------- output
-- Drivers print exactly one result line; run.lua picks it out of stdout.
function M.result(t)
  io.stdout:write("RESULT ", cjson.encode(t), "\n")
  io.stdout:flush()
end

function M.log(fmt, ...)
  io.stderr:write("  ", string.format(fmt, ...), "\n")
  io.stderr:flush()
end

return M
