-- Tiny HTTP(S) client for specs, driving the curl CLI (Lua 5.3/5.4).
--
--   local curl = require "spec.support.curl"
--   local r = curl.request { url = ..., cacert = sb.ca_file,
--                            headers = { Authorization = "Bearer x" },
--                            form = { {"grant_type", "client_credentials"}, ... } }
--   r.status, r.headers["content-type"], r.body, r:json()
--
-- Using the real curl binary (rather than luasec) exercises the same TLS
-- and HTTP stack as the ecw module, which is built on libcurl.
local cjson = require "cjson"

local M = {}

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function tmpname()
  local ok, out = pcall(function()
    local f = io.popen("mktemp " .. q((os.getenv("TMPDIR") or "/tmp") .. "/ecw-curl.XXXXXX"))
    local name = f:read("*l")
    f:close()
    return name
  end)
  assert(ok and out, "mktemp failed")
  return out
end

local function read_and_remove(path)
  local f = io.open(path, "rb")
  local s = f and f:read("*a") or ""
  if f then f:close() end
  os.remove(path)
  return s
end

local Response = {}
Response.__index = Response

function Response:json()
  return cjson.decode(self.body)
end

-- Parses the last header block of a -D dump (earlier ones are 100 Continue).
local function parse_headers(dump)
  local blocks = {}
  for block in (dump .. "\r\n\r\n"):gmatch("(.-)\r\n\r\n") do
    if block:match("^HTTP/") then
      blocks[#blocks + 1] = block
    end
  end
  local headers, status_line = {}, blocks[#blocks] or ""
  for line in (status_line .. "\r\n"):gmatch("(.-)\r\n") do
    local name, value = line:match("^([^:]+):%s*(.*)$")
    if name then
      headers[name:lower()] = value
    end
  end
  return headers, #blocks
end

-- o: url, method, headers (table), body (string), form (array of {name,
--    value}, sent urlencoded), cacert, insecure, extra (array of raw curl
--    arguments), timeout (s, default 10).
-- Returns a Response { status, headers, body, exit_code, stderr, blocks }.
function M.request(o)
  local body_file, header_file, err_file = tmpname(), tmpname(), tmpname()
  local args = { "curl", "-sS", "-o", q(body_file), "-D", q(header_file),
                 "-w", q("%{http_code}"), "--max-time", tostring(o.timeout or 10) }
  local function add(...)
    for _, a in ipairs({ ... }) do
      args[#args + 1] = a
    end
  end
  if o.method then add("-X", q(o.method)) end
  if o.cacert then add("--cacert", q(o.cacert)) end
  if o.insecure then add("-k") end
  for name, value in pairs(o.headers or {}) do
    add("-H", q(name .. ": " .. value))
  end
  local data_file
  if o.body then
    data_file = tmpname()
    local f = assert(io.open(data_file, "wb"))
    f:write(o.body)
    f:close()
    add("--data-binary", q("@" .. data_file))
  end
  for _, pair in ipairs(o.form or {}) do
    add("--data-urlencode", q(pair[1] .. "=" .. pair[2]))
  end
  for _, a in ipairs(o.extra or {}) do
    add(q(a))
  end
  add(q(o.url))
  local cmd = table.concat(args, " ") .. " 2>" .. q(err_file)
  local p = assert(io.popen(cmd, "r"))
  local code = p:read("*a")
  local _, _, exit_code = p:close()
  if data_file then os.remove(data_file) end
  local headers, blocks = parse_headers(read_and_remove(header_file))
  return setmetatable({
    status = tonumber(code) or 0,
    headers = headers,
    blocks = blocks,
    body = read_and_remove(body_file),
    exit_code = exit_code,
    stderr = read_and_remove(err_file),
  }, Response)
end

-- Runs one curl process fetching several URLs over (ideally) one reused
-- connection. Returns the list of status codes and curl's exit code.
function M.multi(urls, o)
  o = o or {}
  local args = { "curl", "-sS", "--max-time", tostring(o.timeout or 10) }
  if o.cacert then args[#args + 1] = "--cacert " .. q(o.cacert) end
  for name, value in pairs(o.headers or {}) do
    args[#args + 1] = "-H " .. q(name .. ": " .. value)
  end
  for _, url in ipairs(urls) do
    args[#args + 1] = "-o /dev/null -w " .. q("%{http_code}\\n") .. " " .. q(url)
  end
  local p = assert(io.popen(table.concat(args, " ") .. " 2>/dev/null", "r"))
  local out = p:read("*a")
  local _, _, exit_code = p:close()
  local codes = {}
  for c in out:gmatch("%d+") do
    codes[#codes + 1] = tonumber(c)
  end
  return codes, exit_code
end

M.quote = q

return M
