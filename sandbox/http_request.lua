-- Reads and validates one HTTP/1.x request from an http_reader.
--
-- Returns a request table
--   { method, target, path, query, version = "1.0"|"1.1", headers = {lowercase name = value},
--     body, keep_alive }
-- or nil, status, reason when the request must be refused (the connection
-- is then closed), or nil, nil when the peer went away / stayed idle.
local cqueues = require "cqueues"

local monotime = cqueues.monotime

local M = {}

-- RFC 9110 token characters, for header names.
local HEADER_LINE = "^([!#$%%&'*+%-.^_`|~%w]+):[ \t]*(.-)[ \t]*$"
local MAX_CHUNK_LINE = 1024

local function split_lines(head)
  local lines = {}
  for line in (head .. "\n"):gmatch("(.-)\r?\n") do
    lines[#lines + 1] = line
  end
  return lines
end

-- Returns headers map or nil, status, reason.
local function parse_headers(lines, max_headers)
  if #lines - 1 > max_headers then
    return nil, 431, "too many header fields"
  end
  local headers = {}
  for i = 2, #lines do
    local name, value = lines[i]:match(HEADER_LINE)
    -- Also rejects obs-fold continuation lines and "Name : value".
    if not name or value:find("[%z\r\n]") then
      return nil, 400, "malformed header line"
    end
    name = name:lower()
    local prev = headers[name]
    if prev == nil then
      headers[name] = value
    elseif name == "content-length" or name == "host" then
      -- Conflicting framing or authority is a request smuggling vector.
      if prev ~= value then
        return nil, 400, "conflicting " .. name .. " headers"
      end
    else
      headers[name] = prev .. ", " .. value
    end
  end
  return headers
end

local function has_token(value, token)
  for item in (value or ""):gmatch("[^,]+") do
    if item:match("^%s*(.-)%s*$"):lower() == token then
      return true
    end
  end
  return false
end

local function read_chunked(reader, limits, deadline)
  local parts, total = {}, 0
  while true do
    local line, err = reader:read_line(MAX_CHUNK_LINE, deadline)
    if not line then
      return nil, err == "too_large" and 400 or nil, "bad chunk header"
    end
    local hex = line:match("^(%x+)%s*;?") -- chunk extensions are ignored
    if not hex or #hex > 8 then
      return nil, 400, "bad chunk size"
    end
    local size = tonumber(hex, 16)
    if size == 0 then
      break
    end
    total = total + size
    if total > limits.max_body_bytes then
      return nil, 413, "request body too large"
    end
    local data
    data, err = reader:read_exact(size, deadline)
    if not data then
      return nil, nil, err
    end
    parts[#parts + 1] = data
    line, err = reader:read_line(2, deadline)
    if line ~= "" then
      return nil, line and 400 or nil, "bad chunk terminator"
    end
  end
  -- Trailer section: ignored, but must be consumed up to the blank line.
  local trailer_bytes = 0
  while true do
    local line, err = reader:read_line(MAX_CHUNK_LINE, deadline)
    if not line then
      return nil, err == "too_large" and 400 or nil, "bad trailer"
    end
    if line == "" then
      break
    end
    trailer_bytes = trailer_bytes + #line
    if trailer_bytes > limits.max_header_bytes then
      return nil, 431, "trailers too large"
    end
  end
  return table.concat(parts)
end

-- Sends "100 Continue" if the client waits for it before sending a body
-- (libcurl does for POST bodies over 1 KiB, and when told to).
local function maybe_continue(reader, req, limits)
  local expect = req.headers["expect"]
  if not expect then
    return true
  end
  if expect:lower() ~= "100-continue" then
    return nil, 417, "unsupported expectation"
  end
  if req.version == "1.1" and reader.buf == "" then
    reader.con:xwrite("HTTP/1.1 100 Continue\r\n\r\n", "bn", limits.write_timeout)
  end
  return true
end

local function read_body(reader, req, limits, deadline)
  local te, cl = req.headers["transfer-encoding"], req.headers["content-length"]
  if te then
    if cl then
      return nil, 400, "both Transfer-Encoding and Content-Length"
    end
    if te:lower() ~= "chunked" then
      return nil, 501, "unsupported Transfer-Encoding"
    end
    local ok, status, reason = maybe_continue(reader, req, limits)
    if not ok then
      return nil, status, reason
    end
    return read_chunked(reader, limits, deadline)
  end
  if not cl then
    return ""
  end
  if not cl:match("^%d+$") or #cl > 15 then
    return nil, 400, "bad Content-Length"
  end
  local length = tonumber(cl)
  if length > limits.max_body_bytes then
    return nil, 413, "request body too large"
  end
  if length == 0 then
    return ""
  end
  local ok, status, reason = maybe_continue(reader, req, limits)
  if not ok then
    return nil, status, reason
  end
  local body, err = reader:read_exact(length, deadline)
  if not body then
    return nil, nil, err
  end
  return body
end

function M.read(reader, limits, idle_deadline)
  local head, err = reader:read_head(limits.max_header_bytes, idle_deadline, limits.read_timeout)
  if not head then
    if err == "too_large" then
      return nil, 431, "request header section too large"
    elseif err == "timeout" then
      return nil, 408, "request timeout"
    end
    return nil, nil, err
  end
  local deadline = monotime() + limits.read_timeout

  local lines = split_lines(head)
  local method, target, minor = lines[1]:match("^(%u+) (%S+) HTTP/1%.([01])$")
  if not method then
    if lines[1]:match("^%u+ %S+ HTTP/%d+%.%d+$") then
      return nil, 505, "HTTP version not supported"
    end
    return nil, 400, "malformed request line"
  end
  if target:sub(1, 1) ~= "/" then
    return nil, 400, "request target must be origin-form"
  end

  local headers, status, reason = parse_headers(lines, limits.max_headers)
  if not headers then
    return nil, status, reason
  end
  local req = {
    method = method,
    target = target,
    version = "1." .. minor,
    headers = headers,
  }
  req.path, req.query = target:match("^([^?#]*)%??([^#]*)")
  if req.version == "1.1" and not headers["host"] then
    return nil, 400, "missing Host header"
  end

  local conn_hdr = headers["connection"]
  if req.version == "1.1" then
    req.keep_alive = not has_token(conn_hdr, "close")
  else
    req.keep_alive = has_token(conn_hdr, "keep-alive")
  end

  local body
  body, status, reason = read_body(reader, req, limits, deadline)
  if not body then
    return nil, status, reason
  end
  req.body = body
  return req
end

return M
