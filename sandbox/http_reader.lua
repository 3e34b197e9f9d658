-- Buffered, deadline-bounded reading from a cqueues socket, with the
-- HTTP/1.1 framing primitives http.lua needs: header block, exact-length
-- body, CRLF-terminated line.
--
-- We keep our own buffer instead of cqueues' line reads so every limit is
-- enforced on bytes actually received: a peer that never sends a newline
-- cannot make us buffer more than max bytes.
local cqueues = require "cqueues"
local errno = require "cqueues.errno"

local monotime = cqueues.monotime

local M = {}
M.__index = M

local READ_CHUNK = 16384

function M.new(con)
  return setmetatable({ con = con, buf = "" }, M)
end

local function describe(err)
  if type(err) == "number" then
    return errno.strerror(err) or ("errno " .. err)
  end
  return tostring(err)
end

-- Reads whatever is available (at most `max` bytes) before deadline.
-- Returns the data, or nil and "eof" | "timeout" | <error text>.
function M:recv(max, deadline)
  local timeout = math.max(0, deadline - monotime())
  local data, err = self.con:xread(-max, "b", timeout)
  if data then
    return data
  elseif err == nil then
    return nil, "eof"
  elseif err == errno.ETIMEDOUT then
    return nil, "timeout"
  end
  return nil, describe(err)
end

function M:fill(deadline)
  local data, err = self:recv(READ_CHUNK, deadline)
  if not data then
    return nil, err
  end
  self.buf = self.buf .. data
  return true
end

-- Reads the request head (request line + header lines), dropping the blank
-- line that ends it. Leading blank lines are skipped (RFC 9112 section 2.2).
-- idle_deadline bounds the wait for the first byte (keep-alive idle time);
-- once a request has started, it must complete within read_timeout.
-- Returns head, or nil and "idle" (nothing received: close quietly),
-- "too_large", "timeout", "eof" or an error text.
function M:read_head(max_bytes, idle_deadline, read_timeout)
  local deadline = idle_deadline
  local started = false
  while true do
    if not started then
      self.buf = self.buf:gsub("^[\r\n]+", "")
      if self.buf ~= "" then
        started = true
        deadline = monotime() + read_timeout
      end
    end
    local s, e = self.buf:find("\r?\n\r?\n")
    if s then
      -- The limit applies however the bytes arrived, even in one segment.
      if s - 1 > max_bytes then
        return nil, "too_large"
      end
      local head = self.buf:sub(1, s - 1)
      self.buf = self.buf:sub(e + 1)
      return head
    end
    if #self.buf > max_bytes then
      return nil, "too_large"
    end
    local ok, err = self:fill(deadline)
    if not ok then
      if not started then
        return nil, "idle"
      end
      return nil, err
    end
  end
end

-- Reads exactly n bytes. Returns them, or nil and an error.
function M:read_exact(n, deadline)
  if #self.buf >= n then
    local out = self.buf:sub(1, n)
    self.buf = self.buf:sub(n + 1)
    return out
  end
  local parts, have = { self.buf }, #self.buf
  self.buf = ""
  while have < n do
    -- Never ask for more than the body needs: the rest belongs to the next
    -- (pipelined) request.
    local data, err = self:recv(math.min(n - have, READ_CHUNK), deadline)
    if not data then
      return nil, err
    end
    parts[#parts + 1] = data
    have = have + #data
  end
  return table.concat(parts)
end

-- Reads one line (without its CRLF/LF) of at most max bytes.
-- Returns the line, or nil and "too_large" | error.
function M:read_line(max, deadline)
  while true do
    local s, e = self.buf:find("\r?\n")
    if s then
      local line = self.buf:sub(1, s - 1)
      self.buf = self.buf:sub(e + 1)
      return line
    end
    if #self.buf > max then
      return nil, "too_large"
    end
    local ok, err = self:fill(deadline)
    if not ok then
      return nil, err
    end
  end
end

-- Discards input until EOF, `max` bytes, `idle` seconds of silence or the
-- deadline: used before closing after an error response, so that unread
-- request bytes do not make the kernel answer with a RST that destroys our
-- response in flight ("lingering close").
function M:drain(max, deadline, idle)
  local seen = 0
  while seen < max do
    local data = self:recv(READ_CHUNK, math.min(deadline, monotime() + idle))
    if not data then
      return
    end
    seen = seen + #data
  end
end

return M
