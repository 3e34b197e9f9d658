-- Launcher for the sandbox EHR (sandbox/server.lua), for busted specs.
--
--   local sandbox = require "spec.support.sandbox"
--   local sb = sandbox.start { tls = true, token_lifetime = 300 }
--   -- sb.fhir_base, sb.token_url, sb.ca_file, ... (fields of sandbox.json)
--   sb:register { client_id = "c1", kid = "k1", key = sandbox.keygen(dir, "ES384") }
--   ...
--   sb:stop()
--
-- Works under Lua 5.3 and 5.4 (the server itself always runs on lua5.4, as
-- a child process). Talks to the admin API over plain HTTP with luasocket.
--
-- Process hygiene: the server is started through io.popen with `exec`, so
-- it is our direct child: stop() can signal it by pid and reap it with
-- pclose. Should the test process die without calling stop(), the server
-- notices its parent is gone within a second and exits by itself.
local http = require "socket.http"
local ltn12 = require "ltn12"
local socket = require "socket"
local cjson = require "cjson"

local M = {}

local START_TIMEOUT = 10   -- seconds to wait for sandbox.json
local STOP_TIMEOUT = 5     -- seconds between SIGTERM and SIGKILL
local ADMIN_TIMEOUT = 10   -- seconds per admin HTTP request

---------------------------------------------------------------- shell utils
local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs a shell command; returns ok, combined output.
local function sh(cmd)
  local f = assert(io.popen(cmd .. " 2>&1", "r"))
  local out = f:read("*a")
  local ok, _, code = f:close()
  return ok == true and (code == nil or code == 0), out
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(path, contents)
  local f = assert(io.open(path, "wb"))
  assert(f:write(contents))
  assert(f:close())
end

local function absolute(path)
  if path:sub(1, 1) == "/" then
    return path
  end
  local ok, pwd = sh("pwd")
  assert(ok, "pwd failed")
  return (pwd:gsub("%s+$", "")) .. "/" .. path
end

-- Repository root, from this file's location (spec/support/sandbox.lua).
local function repo_root()
  local src = debug.getinfo(1, "S").source
  local file = src:sub(1, 1) == "@" and src:sub(2) or "spec/support/sandbox.lua"
  local dir = file:match("^(.*)/[^/]*$") or "."
  return absolute(dir .. "/../..")
end

M.ROOT = repo_root()
M.SERVER = M.ROOT .. "/sandbox/server.lua"

local function mktemp_dir(prefix)
  local ok, out = sh("mktemp -d " .. q((os.getenv("TMPDIR") or "/tmp") .. "/" .. prefix .. ".XXXXXX"))
  assert(ok, "mktemp failed: " .. out)
  return (out:gsub("%s+$", ""))
end
M.tmpdir = mktemp_dir

-- true while pid exists and is not a zombie (a zombie has exited and only
-- waits for us to reap it).
local function running(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  if not stat then
    return false
  end
  local state = stat:match(".*%) (%S)")
  return state ~= "Z"
end

local function sleep(s)
  socket.sleep(s)
end

------------------------------------------------------------------ admin API
local function admin_request(self, method, path, value)
  local body = value ~= nil and cjson.encode(value) or nil
  local chunks = {}
  local saved = http.TIMEOUT
  http.TIMEOUT = ADMIN_TIMEOUT
  local ok, code = http.request {
    url = self.admin_url .. path,
    method = method,
    sink = ltn12.sink.table(chunks),
    source = body and ltn12.source.string(body) or nil,
    headers = body and {
      ["content-type"] = "application/json",
      ["content-length"] = tostring(#body),
    } or nil,
  }
  http.TIMEOUT = saved
  if not ok then
    error(string.format("sandbox admin %s %s failed: %s", method, path, tostring(code)), 3)
  end
  local text = table.concat(chunks)
  local decoded_ok, decoded = pcall(cjson.decode, text)
  if code ~= 200 then
    local msg = decoded_ok and type(decoded) == "table" and decoded.error or text
    error(string.format("sandbox admin %s %s: HTTP %s: %s", method, path, tostring(code), tostring(msg)), 3)
  end
  return decoded_ok and decoded or text
end

local Sandbox = {}
Sandbox.__index = Sandbox

-- Counters, issued tokens, recent assertions (see sandbox/README.md).
function Sandbox:stats()
  return admin_request(self, "GET", "/stats")
end

function Sandbox:reset_stats()
  return admin_request(self, "POST", "/reset_stats", {})
end

-- Merges behaviour switches; pass cjson.null (M.null) to reset one.
function Sandbox:config(t)
  return admin_request(self, "POST", "/config", t)
end

function Sandbox:get_config()
  return admin_request(self, "GET", "/config")
end

-- client: { client_id, kid, alg, public_key_pem } or
--         { client_id, kid, key = <keygen() result> }; or an array of those.
function Sandbox:register(client)
  local function normalize(c)
    if c.key then
      return { client_id = c.client_id, kid = c.kid,
               alg = c.alg or c.key.alg, public_key_pem = c.key.public_pem }
    end
    return c
  end
  local payload
  if client[1] then
    payload = {}
    for i, c in ipairs(client) do
      payload[i] = normalize(c)
    end
  else
    payload = normalize(client)
  end
  return admin_request(self, "POST", "/clients", payload)
end

-- t: { target = "token"|"fhir"|"discovery", status?, body?, content_type?,
--      headers?, delay_ms?, times?, close? }
function Sandbox:fault(t)
  return admin_request(self, "POST", "/fault", t)
end

function Sandbox:clear_faults()
  return admin_request(self, "POST", "/faults/clear", {})
end

function Sandbox:revoke_all()
  return admin_request(self, "POST", "/revoke_all", {})
end

-- FHIR base URL for a practice code (tests isolate themselves by practice).
function Sandbox:fhir_base_for(practice)
  return self.base_url .. "/fhir/r4/" .. practice
end

-- The server's stderr (request log) so far; empty when started verbose
-- with stderr inherited.
function Sandbox:log()
  return read_file(self.dir .. "/server.log") or ""
end

function Sandbox:running()
  return not self._stopped and running(self.pid)
end

-- Stops the server (SIGTERM, then SIGKILL after STOP_TIMEOUT), reaps it and
-- removes its directory. Idempotent.
function Sandbox:stop()
  if self._stopped then
    return
  end
  self._stopped = true
  local pid = self.pid
  os.execute("kill -TERM " .. pid .. " 2>/dev/null")
  local deadline = socket.gettime() + STOP_TIMEOUT
  while running(pid) and socket.gettime() < deadline do
    sleep(0.02)
  end
  if running(pid) then
    os.execute("kill -KILL " .. pid .. " 2>/dev/null")
  end
  self._proc:close() -- waits for (reaps) the child
  if not self._keep_dir then
    os.execute("rm -rf " .. q(self.dir))
  end
end

Sandbox.__gc = Sandbox.stop

--------------------------------------------------------------------- start
-- opts:
--   tls (default true), token_lifetime, port, admin_port, clients (array of
--   client entries, written to a --clients file), max_lifetime (idle exit),
--   verbose (log each request to DIR/server.log; default quiet),
--   inherit_stderr (server stderr goes to ours), keep_dir (debugging),
--   lua (interpreter for the server, default "lua5.4").
function M.start(opts)
  opts = opts or {}
  local dir = mktemp_dir("ecw-sandbox")
  local args = { "--dir", dir, opts.tls == false and "--no-tls" or "--tls" }
  local function add(flag, v)
    if v ~= nil then
      args[#args + 1] = flag
      args[#args + 1] = tostring(v)
    end
  end
  add("--token-lifetime", opts.token_lifetime)
  add("--port", opts.port)
  add("--admin-port", opts.admin_port)
  add("--max-lifetime", opts.max_lifetime)
  if opts.clients then
    local path = dir .. "/clients.json"
    write_file(path, cjson.encode(opts.clients))
    add("--clients", path)
  end
  if not opts.verbose then
    args[#args + 1] = "--quiet"
  end
  local quoted = {}
  for i, a in ipairs(args) do
    quoted[i] = q(a)
  end
  local stderr = opts.inherit_stderr and "" or (" 2>" .. q(dir .. "/server.log"))
  -- `echo $$; exec ...`: the shell reports its pid, then becomes the
  -- server, so that pid is the server's and we are its parent.
  local cmd = string.format("echo $$; exec %s %s %s </dev/null >%s%s",
    q(opts.lua or "lua5.4"), q(M.SERVER), table.concat(quoted, " "),
    q(dir .. "/server.out"), stderr)
  local proc = assert(io.popen(cmd, "r"))
  local pid = tonumber(proc:read("*l"))
  if not pid then
    proc:close()
    error("sandbox: could not start " .. cmd)
  end

  local self = setmetatable({ pid = pid, dir = dir, _proc = proc,
                              _keep_dir = opts.keep_dir }, Sandbox)
  local info_path = dir .. "/sandbox.json"
  local deadline = socket.gettime() + START_TIMEOUT
  local text
  repeat
    text = read_file(info_path)
    if not text then
      if not running(pid) then
        break
      end
      sleep(0.02)
    end
  until text or socket.gettime() > deadline
  if not text then
    local log = self:log()
    self._keep_dir = false
    self:stop()
    error("sandbox did not start within " .. START_TIMEOUT .. " s:\n" .. log, 2)
  end

  for k, v in pairs(cjson.decode(text)) do
    if v == cjson.null then
      v = nil
    elseif type(v) == "number" then
      v = math.tointeger(v) or v -- cjson 2.1 decodes every number as a float
    end
    self[k] = v
  end
  return self
end

M.null = cjson.null

------------------------------------------------------------------- keygen
local KEY_KINDS = {
  RS384 = { args = "-algorithm RSA -pkeyopt rsa_keygen_bits:2048", alg = "RS384" },
  ES384 = { args = "-algorithm EC -pkeyopt ec_paramgen_curve:P-384", alg = "ES384" },
  -- Negative-test keys: wrong size / wrong curve for their alg.
  ES256 = { args = "-algorithm EC -pkeyopt ec_paramgen_curve:P-256", alg = "ES256" },
}

local key_counter = 0

-- Creates a private key with the openssl CLI, mode 600.
--   kind: "RS384" (RSA 2048), "ES384" (P-384), "ES256" (P-256),
--         "RSA<bits>" e.g. "RSA1024", "RSA3072" (alg RS384)
--   opts.traditional = true: PEM "BEGIN RSA/EC PRIVATE KEY" instead of PKCS#8
--   opts.name: file name (default "<kind>-<n>.pem")
-- Returns { path =, public_pem =, alg =, kind =, format = "pkcs8"|"traditional" }.
function M.keygen(dir, kind, opts)
  opts = opts or {}
  local spec = KEY_KINDS[kind]
  if not spec then
    local bits = kind:match("^RSA(%d+)$")
    assert(bits, "unknown key kind " .. tostring(kind))
    spec = { args = "-algorithm RSA -pkeyopt rsa_keygen_bits:" .. bits, alg = "RS384" }
  end
  key_counter = key_counter + 1
  local path = dir .. "/" .. (opts.name or string.format("%s-%d.pem", kind:lower(), key_counter))
  local ok, out = sh(string.format("umask 077 && openssl genpkey %s -out %s", spec.args, q(path)))
  assert(ok, "openssl genpkey failed: " .. out)
  if opts.traditional then
    ok, out = sh(string.format("umask 077 && openssl pkey -in %s -traditional -out %s.trad && mv %s.trad %s",
      q(path), q(path), q(path), q(path)))
    assert(ok, "openssl pkey -traditional failed: " .. out)
  end
  assert(sh("chmod 600 " .. q(path)))
  local public_pem
  ok, public_pem = sh("openssl pkey -in " .. q(path) .. " -pubout")
  assert(ok, "openssl pkey -pubout failed: " .. public_pem)
  return {
    path = path,
    public_pem = public_pem,
    alg = spec.alg,
    kind = kind,
    format = opts.traditional and "traditional" or "pkcs8",
  }
end

return M
