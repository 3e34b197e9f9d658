-- Minimal HTTP/1.1 server over cqueues sockets (lua-http is not packaged
-- for Lua 5.4 on Debian).
--
-- One coroutine per connection; keep-alive and pipelining; optional TLS.
-- Robustness rules: every connection runs under xpcall so a bug or a
-- hostile peer can only ever lose its own connection; every read and write
-- has a deadline; header and body sizes are bounded. Handler errors are
-- logged (message and traceback only, never request data) and answered
-- with a 500.
--
-- handler(req) receives the table built by http_request.read plus
-- req.conn = { id =, remote =, data = {} } (per-connection scratch space)
-- and returns { status =, headers = { Name = value }, body =, close = bool }
-- or { abort = true } to drop the connection without answering.
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local errno = require "cqueues.errno"
local Reader = require "sandbox.http_reader"
local http_request = require "sandbox.http_request"

local monotime = cqueues.monotime

local M = {}

M.DEFAULT_LIMITS = {
  max_header_bytes = 16 * 1024,
  max_headers = 100,
  max_body_bytes = 1024 * 1024,
  idle_timeout = 120,       -- keep-alive wait for the next request
  read_timeout = 30,        -- one request, from its first byte
  write_timeout = 30,
  handshake_timeout = 10,
  max_connections = 1000,   -- well below the usual 1024 fd limit headroom
}

local REASONS = {
  [100] = "Continue", [200] = "OK", [201] = "Created", [202] = "Accepted",
  [204] = "No Content", [301] = "Moved Permanently", [302] = "Found",
  [304] = "Not Modified", [400] = "Bad Request", [401] = "Unauthorized",
  [403] = "Forbidden", [404] = "Not Found", [405] = "Method Not Allowed",
  [408] = "Request Timeout", [409] = "Conflict", [411] = "Length Required",
  [413] = "Content Too Large", [415] = "Unsupported Media Type",
  [417] = "Expectation Failed", [429] = "Too Many Requests",
  [431] = "Request Header Fields Too Large", [500] = "Internal Server Error",
  [501] = "Not Implemented", [502] = "Bad Gateway", [503] = "Service Unavailable",
  [504] = "Gateway Timeout", [505] = "HTTP Version Not Supported",
}

local function describe(err)
  if type(err) == "number" then
    return errno.strerror(err) or ("errno " .. err)
  end
  return tostring(err)
end

local function http_date()
  return os.date("!%a, %d %b %Y %H:%M:%S GMT")
end

-- Serializes a response. Framing headers are ours alone: whatever the
-- handler put in Content-Length/Connection/Transfer-Encoding is replaced.
local function serialize(res, keep_alive, version, head_only)
  local status = res.status
  local out = { string.format("HTTP/1.1 %d %s\r\n", status, REASONS[status] or "Status") }
  for name, value in pairs(res.headers or {}) do
    local lname = name:lower()
    if lname ~= "content-length" and lname ~= "connection" and lname ~= "transfer-encoding" then
      out[#out + 1] = name .. ": " .. value .. "\r\n"
    end
  end
  out[#out + 1] = "Date: " .. http_date() .. "\r\n"
  out[#out + 1] = "Server: ecw-sandbox\r\n"
  local body = res.body or ""
  if status == 204 or status == 304 then
    body = ""
  else
    out[#out + 1] = "Content-Length: " .. #body .. "\r\n"
  end
  if not keep_alive then
    out[#out + 1] = "Connection: close\r\n"
  elseif version == "1.0" then
    out[#out + 1] = "Connection: keep-alive\r\n"
  end
  out[#out + 1] = "\r\n"
  if not head_only then
    out[#out + 1] = body
  end
  return table.concat(out)
end

local function send(con, data, limits)
  local ok, err = con:xwrite(data, "bn", limits.write_timeout)
  if not ok then
    return nil, describe(err)
  end
  return true
end

local function error_response(status, reason)
  return {
    status = status,
    headers = { ["Content-Type"] = "application/json" },
    body = string.format('{"error":"%s"}', (reason:gsub('[%c"\\]', ""))),
  }
end

-- Calls the handler; any error becomes a logged 500 that closes the
-- connection (the handler may have left shared state half-updated for
-- this request, but never for the server as a whole).
local function call_handler(server, req)
  local ok, res = xpcall(server.handler, debug.traceback, req)
  if ok and type(res) == "table" and (res.abort or type(res.status) == "number") then
    return res
  end
  server.log_error(string.format("%s: handler error on %s %s: %s", server.name,
    req.method, req.path, ok and "handler returned no response" or tostring(res)))
  local r = error_response(500, "internal sandbox error")
  r.close = true
  return r
end

local function serve_connection(server, con, conn)
  local limits = server.limits
  con:onerror(function(_, _, why) return why end) -- return errors, never throw
  con:setmode("b", "bn")
  if server.tls then
    local ok, err = con:starttls(server.tls, limits.handshake_timeout)
    if not ok then
      server.log_info(string.format("%s: TLS handshake failed from %s: %s",
        server.name, conn.remote, describe(err)))
      return
    end
  end
  local reader = Reader.new(con)
  while true do
    local idle_deadline = monotime() + limits.idle_timeout
    local req, status, reason = http_request.read(reader, limits, idle_deadline)
    if not req then
      if status then
        -- Refused request: answer, then drain what the client may still be
        -- sending so our close does not turn into a RST that eats the answer.
        server.log_request("-", "-", status)
        if send(con, serialize(error_response(status, reason), false, "1.1"), limits) then
          reader:drain(256 * 1024, monotime() + 2, 0.2)
        end
      end
      return
    end
    req.conn = conn
    local res = call_handler(server, req)
    if res.abort then
      server.log_request(req.method, req.path, "aborted")
      return
    end
    if res.truncate then
      -- A reset in the middle of the body: the full Content-Length, half
      -- the body, then the connection goes away.
      server.log_request(req.method, req.path, "truncated")
      local wire = serialize(res, false, req.version, false)
      send(con, wire:sub(1, #wire - (#(res.body or "") + 1) // 2), limits)
      return
    end
    local keep = req.keep_alive and not res.close
    server.log_request(req.method, req.path, res.status)
    local wire = serialize(res, keep, req.version, req.method == "HEAD")
    if not send(con, wire, limits) or not keep then
      return
    end
  end
end

local function remote_name(con)
  local _, host, port = con:peername()
  return tostring(host) .. ":" .. tostring(port)
end

local function accept_loop(server, cq, listener)
  local next_id = 0
  local active = 0
  while true do
    local con, err = listener:accept({ nodelay = true })   -- no Nagle stall on the first answer
    if not con then
      -- EMFILE and friends: back off instead of spinning at 100% CPU.
      server.log_error(server.name .. ": accept failed: " .. describe(err))
      cqueues.sleep(0.1)
    elseif active >= server.limits.max_connections then
      con:close()
    else
      next_id = next_id + 1
      active = active + 1
      local conn = { id = next_id, remote = remote_name(con), data = {} }
      if server.on_accept then
        server.on_accept(conn)
      end
      cq:wrap(function()
        local ok, e = xpcall(serve_connection, debug.traceback, server, con, conn)
        if not ok then
          server.log_error(server.name .. ": connection error: " .. tostring(e))
        end
        active = active - 1
        -- NB: cqueues never calls SSL_shutdown, so TLS connections end
        -- without close_notify. Harmless for HTTP clients: every response
        -- is Content-Length framed, so truncation is still detectable.
        con:close()
      end)
    end
  end
end

-- Starts listening and serving on cq.
-- opts: host, port (0 = ephemeral), tls (server SSL context or nil),
--       handler, name (log prefix), on_accept(conn), log_request(method,
--       path, status), log_error(msg), log_info(msg), limits (overrides).
-- Returns { port = <bound port> }.
function M.serve(cq, opts)
  local limits = {}
  for k, v in pairs(M.DEFAULT_LIMITS) do
    limits[k] = (opts.limits and opts.limits[k]) or v
  end
  local server = {
    name = opts.name or "http",
    handler = assert(opts.handler, "handler required"),
    tls = opts.tls,
    limits = limits,
    on_accept = opts.on_accept,
    log_request = opts.log_request or function() end,
    log_error = opts.log_error or function(msg) io.stderr:write(msg, "\n") end,
    log_info = opts.log_info or function() end,
  }
  local listener = assert(socket.listen {
    host = opts.host or "127.0.0.1",
    port = opts.port or 0,
    reuseaddr = true,
  })
  listener:onerror(function(_, _, why) return why end)
  local ok, err = listener:listen()
  if not ok then
    error(string.format("%s: cannot listen on port %s: %s", server.name,
      tostring(opts.port or 0), describe(err)), 0)
  end
  local _, _, port = listener:localname()
  cq:wrap(function()
    accept_loop(server, cq, listener)
  end)
  return { port = port }
end

return M
