-- ecw sandbox EHR: a local SMART Backend Services + FHIR R4 server.
--
--   lua5.4 sandbox/server.lua --dir DIR [--tls|--no-tls] [--port N]
--       [--admin-port N] [--token-lifetime SECONDS] [--clients FILE]
--       [--max-lifetime SECONDS] [--no-parent-watch] [--quiet]
--
-- Writes DIR/sandbox.json (atomically) once both listeners are up; see
-- README.md for its fields and for the admin API.

-- Find sibling modules ("sandbox.*") relative to this file, so the server
-- runs from any working directory.
local SCRIPT_DIR = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = SCRIPT_DIR .. "/../?.lua;" .. package.path

local cqueues = require "cqueues"
local signal = require "cqueues.signal"
local json = require "sandbox.json"
local http = require "sandbox.http"
local app = require "sandbox.app"
local admin = require "sandbox.admin"
local pki = require "sandbox.pki"
local Config = require "sandbox.config"
local Clients = require "sandbox.clients"
local Tokens = require "sandbox.tokens"
local Stats = require "sandbox.stats"
local Faults = require "sandbox.faults"

local USAGE = [[
usage: lua5.4 sandbox/server.lua --dir DIR [options]
  --dir DIR                 state directory (created if missing); sandbox.json,
                            ca.pem, wrong-ca.pem, server.pem are written there
  --tls | --no-tls          HTTPS (default) or plain HTTP on the main port
  --port N                  main port (default 0: ephemeral)
  --admin-port N            admin port, always plain HTTP (default 0: ephemeral)
  --token-lifetime SECONDS  access token lifetime (default 300, may be fractional)
  --clients FILE            JSON array of {client_id, kid, alg, public_key_pem}
  --max-lifetime SECONDS    exit after this long without any request (default 3600)
  --no-parent-watch         keep running when the parent process exits
  --quiet                   no per-request log lines on stderr
]]

local function die(msg)
  io.stderr:write("sandbox: ", msg, "\n")
  os.exit(2)
end

local function parse_args(argv)
  local o = { tls = true, port = 0, admin_port = 0, token_lifetime = 300,
              max_lifetime = 3600, parent_watch = true, quiet = false }
  local i = 1
  local function value(name)
    i = i + 1
    local v = argv[i]
    if v == nil then die(name .. " needs a value") end
    return v
  end
  local function number(name)
    local v = tonumber(value(name))
    if not v or v < 0 then die(name .. " needs a non-negative number") end
    return v
  end
  while i <= #argv do
    local a = argv[i]
    if a == "--dir" then o.dir = value(a)
    elseif a == "--tls" then o.tls = true
    elseif a == "--no-tls" then o.tls = false
    elseif a == "--port" then o.port = math.floor(number(a))
    elseif a == "--admin-port" then o.admin_port = math.floor(number(a))
    elseif a == "--token-lifetime" then o.token_lifetime = number(a)
    elseif a == "--clients" then o.clients = value(a)
    elseif a == "--max-lifetime" then o.max_lifetime = number(a)
    elseif a == "--no-parent-watch" then o.parent_watch = false
    elseif a == "--quiet" then o.quiet = true
    elseif a == "--help" or a == "-h" then io.stdout:write(USAGE) os.exit(0)
    else die("unknown argument " .. a .. "\n" .. USAGE)
    end
    i = i + 1
  end
  if not o.dir then die("--dir is required\n" .. USAGE) end
  if o.token_lifetime <= 0 then die("--token-lifetime must be > 0") end
  return o
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

-- Write-then-rename, so a poller never reads a half-written file.
local function write_atomically(path, contents)
  local tmp = path .. ".tmp"
  local f = assert(io.open(tmp, "wb"))
  assert(f:write(contents))
  assert(f:close())
  assert(os.rename(tmp, path))
end

local function load_clients(clients, path)
  local text, err = read_file(path)
  if not text then die("cannot read --clients file: " .. tostring(err)) end
  local list = json.decode(text)
  if type(list) ~= "table" then die("--clients file is not a JSON array") end
  for n, entry in ipairs(list) do
    local ok, why = clients:register(entry)
    if not ok then die(string.format("--clients entry %d: %s", n, why)) end
  end
end

-- Parent pid from /proc/self/stat (field 4; the comm field before it may
-- contain spaces and parentheses, hence the greedy match).
local function parent_pid()
  local stat = read_file("/proc/self/stat") or ""
  return tonumber(stat:match(".*%) %S+ (%d+)"))
end

local function self_pid()
  local stat = read_file("/proc/self/stat") or ""
  return tonumber(stat:match("^(%d+)"))
end

local function main()
  local opts = parse_args(arg)
  if os.execute("mkdir -p " .. shell_quote(opts.dir)) ~= true then
    die("cannot create " .. opts.dir)
  end
  -- Absolute, so the file paths published in sandbox.json work from any cwd.
  local pwd = io.popen("cd " .. shell_quote(opts.dir) .. " && pwd")
  opts.dir = pwd:read("l") or opts.dir
  pwd:close()

  local function log(line)
    io.stderr:write(os.date("%H:%M:%S "), line, "\n")
  end

  -- A client that vanishes mid-write must cost a connection, not the process.
  signal.ignore(signal.SIGPIPE)

  local cq = cqueues.new()
  local last_activity = cqueues.monotime()
  local ctx = {
    config = Config.new { token_lifetime = opts.token_lifetime, token_type = "Bearer" },
    clients = Clients.new(),
    tokens = Tokens.new(),
    stats = Stats.new(),
    faults = Faults.new(),
    urls = {},
    activity = function() last_activity = cqueues.monotime() end,
  }
  ctx.shutdown = function()
    cq:wrap(function()
      cqueues.sleep(0.05) -- let the admin response go out first
      os.exit(0)
    end)
  end
  if opts.clients then
    load_clients(ctx.clients, opts.clients)
  end

  local tls_files = opts.tls and pki.create(opts.dir) or {}

  local function log_request(prefix)
    return function(method, path, status)
      if not opts.quiet then
        log(string.format("%s%s %s %s", prefix, method, path, tostring(status)))
      end
    end
  end
  local main_server = http.serve(cq, {
    name = "sandbox",
    port = opts.port,
    tls = tls_files.ssl_context,
    handler = app.handler(ctx),
    on_accept = function() ctx.stats:count("connections") end,
    log_request = log_request(""),
    log_error = log,
    log_info = function(msg) if not opts.quiet then log(msg) end end,
  })
  local admin_server = http.serve(cq, {
    name = "admin",
    port = opts.admin_port,
    handler = admin.handler(ctx),
    log_request = log_request("admin "),
    log_error = log,
  })

  local scheme = opts.tls and "https" or "http"
  local base_url = string.format("%s://127.0.0.1:%d", scheme, main_server.port)
  ctx.urls.base_url = base_url
  ctx.urls.token_url = base_url .. app.TOKEN_PATH
  ctx.urls.fhir_base = function(practice)
    return base_url .. "/fhir/r4/" .. practice
  end

  write_atomically(opts.dir .. "/sandbox.json", json.encode {
    pid = self_pid(),
    port = main_server.port,
    admin_port = admin_server.port,
    tls = opts.tls,
    base_url = base_url,
    fhir_base = ctx.urls.fhir_base("SANDBOX"),
    token_url = ctx.urls.token_url,
    ca_file = tls_files.ca_file or json.null,
    wrong_ca_file = tls_files.wrong_ca_file or json.null,
    server_cert_file = tls_files.server_cert_file or json.null,
    admin_url = string.format("http://127.0.0.1:%d", admin_server.port),
    dir = opts.dir,
  })
  if not opts.quiet then
    log(string.format("sandbox: listening on %s (admin port %d)", base_url, admin_server.port))
  end

  -- Watchdog: never outlive the test run that started us, nor linger
  -- forever when forgotten.
  local original_parent = parent_pid()
  cq:wrap(function()
    while true do
      cqueues.sleep(1)
      if opts.parent_watch and parent_pid() ~= original_parent then
        log("sandbox: parent process exited, shutting down")
        os.exit(0)
      end
      if cqueues.monotime() - last_activity > opts.max_lifetime then
        log("sandbox: idle for --max-lifetime, shutting down")
        os.exit(0)
      end
    end
  end)

  -- Connection coroutines trap their own errors; this loop only guards
  -- against a failure in our own plumbing stopping the whole server.
  while true do
    local ok, err = cq:loop()
    if ok then break end
    log("sandbox: event loop error: " .. tostring(err))
  end
end

main()
