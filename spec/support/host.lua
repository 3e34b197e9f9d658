-- Runs spec/host/host.c (ecw-host) for the Lua version under test.
local M = {}

local v = _VERSION:match("%d+%.%d+")
M.binary = "./build/" .. v .. "/ecw-host"

local function q (s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- run{ script=, threads=, calls=, barrier=, detached=, env = {K=V} }
-- -> ok (boolean), summary {calls, ok, failed}, output (stdout + stderr)
function M.run (o)
  local parts = {}
  for k, val in pairs(o.env or {}) do parts[#parts + 1] = k .. "=" .. q(val) end
  parts[#parts + 1] = q(M.binary)
  parts[#parts + 1] = "-t " .. (o.threads or 1)
  parts[#parts + 1] = "-n " .. (o.calls or 1)
  if o.barrier then parts[#parts + 1] = "-b" end
  if o.detached then parts[#parts + 1] = "-d" end
  parts[#parts + 1] = "-m " .. q("./build/" .. v .. "/?.so")
  parts[#parts + 1] = "-s " .. q("./lua/?.lua;./?.lua")
  parts[#parts + 1] = q(o.script)
  local p = assert(io.popen(table.concat(parts, " ") .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  local calls, good, failed = out:match("calls=(%d+) ok=(%d+) failed=(%d+)")
  return ok == true, {
    calls = tonumber(calls), ok = tonumber(good), failed = tonumber(failed),
  }, out
end

return M
