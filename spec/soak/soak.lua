-- Soak (issue 6): calls from 16 threads of fresh Lua states, the mod_lua
-- pattern, against the sandbox EHR while faults are switched on and off at
-- random.  It passes when no call crashed or raised, every call answered
-- within its deadline plus 50 ms, RSS stayed flat after warm-up, and the
-- HTTP requests ecw counted match the requests the sandbox received.
--
--   lua5.4 spec/soak/soak.lua [SECONDS]   (make soak: 600; CI: 60)
-- Prints a report and exits non-zero on a failed condition.
package.path = "./lua/?.lua;./?.lua;" .. package.path
package.cpath = "./build/5.4/?.so;" .. package.cpath

local sandbox = require "spec.support.sandbox"

local SECONDS = tonumber(arg[1]) or 60
local THREADS = tonumber(os.getenv("SOAK_THREADS")) or 16
local TIMEOUT = 400
local WARM = tonumber(os.getenv("SOAK_WARM")) or 3000   -- calls before the RSS baseline
local RSS_LIMIT_KB = 2048
local HOST = os.getenv("SOAK_HOST") or "./build/5.4/ecw-host"

local FAULTS = {
  { name = "token 500", f = { target = "token", status = 500, body = '{"error":"server_error"}' } },
  { name = "token slow", f = { target = "token", delay_ms = 1500 } },
  { name = "token connection closed", f = { target = "token", close = true } },
  { name = "token invalid_client", f = { target = "token", status = 400,
      body = '{"error":"invalid_client"}' } },
  { name = "token 429 Retry-After 1", f = { target = "token", status = 429, times = 1,
      headers = { ["Retry-After"] = "1" } } },
  { name = "fhir 503", f = { target = "fhir", status = 503 } },
  { name = "fhir slow", f = { target = "fhir", delay_ms = 1000 } },
  { name = "fhir reset mid-body", f = { target = "fhir", truncate = true,
      body = string.rep("x", 4096) } },
  { name = "fhir 401", f = { target = "fhir", status = 401 } },
  { name = "fhir 403", f = { target = "fhir", status = 403 } },
  { name = "fhir 429 Retry-After 1", f = { target = "fhir", status = 429, times = 1,
      headers = { ["Retry-After"] = "1" } } },
  { name = "fhir 200 not JSON", f = { target = "fhir", status = 200, body = "<html>",
      content_type = "text/html" } },
  { name = "revoked tokens", revoke = true },
  { name = "short tokens (2 s)", config = { token_lifetime = 2 } },
}

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local sb = sandbox.start { tls = true }
local ok_all, report = pcall(function()
  local dir = sb.dir .. "/soak"
  os.execute("mkdir -p " .. q(dir))
  local key = sandbox.keygen(sb.dir, "RS384")
  sb:register { client_id = "soak", kid = "soak-1", key = key }

  local cmd = table.concat({
    q(HOST), "-t", THREADS, "-n 100000000", "-T", SECONDS, "-w", WARM,
    "-m", q("./build/5.4/?.so"), "-s", q("./lua/?.lua"),
    "-v", q("ecw_fhir_base=" .. sb.fhir_base), "-v", q("ecw_client_id=soak"),
    "-v", q("ecw_private_key=" .. key.path), "-v", q("ecw_kid=soak-1"),
    "-v", q("ecw_ca_file=" .. sb.ca_file), "-v", q("soak_timeout_ms=" .. TIMEOUT),
    "-v", q("soak_dir=" .. dir), "spec/soak/call.lua", "2>&1",
  }, " ")
  local host = assert(io.popen(cmd))

  -- Faults on and off at random until the host's time is up.
  math.randomseed(os.time())
  local tried, stop = {}, os.time() + SECONDS
  while os.time() < stop - 2 do
    local pick = FAULTS[math.random(#FAULTS)]
    tried[pick.name] = (tried[pick.name] or 0) + 1
    if pick.revoke then sb:revoke_all() end
    if pick.config then sb:config(pick.config) end
    if pick.f then sb:fault(pick.f) end
    os.execute(("sleep %.2f"):format(0.5 + math.random() * 1.5))
    sb:clear_faults()
    sb:config { token_lifetime = 300 }
    os.execute(("sleep %.2f"):format(0.5 + math.random()))
  end
  local out = host:read("a")
  local host_ok = host:close()

  local r = { out = out, host_ok = host_ok, tried = tried, codes = {}, max_ms = 0,
              over = 0, calls = 0 }
  r.summary = out:match("calls=%d+ ok=%d+ failed=%d+[^\n]*") or "no summary"
  r.failed = tonumber(out:match("failed=(%d+)")) or -1
  r.rss_warm = tonumber(out:match("rss_warm_kb=(%d+)")) or -1
  r.rss_end = tonumber(out:match("rss_end_kb=(%d+)")) or -1
  local best = { 0, 0, 0 }
  for t = 1, THREADS do
    local f = io.open(("%s/calls-%d"):format(dir, t))
    if f then
      for code, took in f:read("a"):gmatch("(%S+) (%d+)\n") do
        took = tonumber(took)
        r.calls = r.calls + 1
        r.codes[code] = (r.codes[code] or 0) + 1
        if took > r.max_ms then r.max_ms = took end
        if took > TIMEOUT + 50 then r.over = r.over + 1 end
      end
      f:close()
    end
    f = io.open(("%s/stats-%d"):format(dir, t))
    if f then
      local h, tk, d = f:read("a"):match("(%d+) (%d+) (%d+)")
      f:close()
      if tonumber(h) > best[1] then best = { tonumber(h), tonumber(tk), tonumber(d) } end
    end
  end
  local s = sb:stats()
  r.ecw_http, r.ecw_tokens, r.ecw_discovery = best[1], best[2], best[3]
  r.sb_requests = s.token_requests + s.fhir_requests + s.discovery_requests
  r.sb_tokens = s.token_requests
  return r
end)
sb:stop()
if not ok_all then
  io.stderr:write("soak: ", tostring(report), "\n")
  os.exit(2)
end

local r = report
print(("soak: %d s, %d threads of fresh states, deadline %d ms"):format(SECONDS, THREADS, TIMEOUT))
print("  host: " .. r.summary)
local names = {}
for k in pairs(r.tried) do names[#names + 1] = k end
table.sort(names)
for _, k in ipairs(names) do print(("  fault %-26s switched on %d times"):format(k, r.tried[k])) end
local codes = {}
for k, v in pairs(r.codes) do codes[#codes + 1] = k .. "=" .. v end
table.sort(codes)
print("  outcomes: " .. table.concat(codes, " "))
print(("  calls %d, over deadline+50ms %d, slowest %d ms"):format(r.calls, r.over, r.max_ms))
print(("  RSS after warm-up %d kB, at the end %d kB (%+d kB)"):format(r.rss_warm, r.rss_end,
  r.rss_end - r.rss_warm))
print(("  HTTP requests: ecw counted %d (%d token, %d discovery), the sandbox received %d")
  :format(r.ecw_http, r.ecw_tokens, r.ecw_discovery, r.sb_requests))

local failures = {}
if not r.host_ok or r.failed ~= 0 then failures[#failures + 1] = "calls failed or the host crashed" end
if r.over > 0 then failures[#failures + 1] = r.over .. " calls over their deadline" end
if r.calls == 0 then failures[#failures + 1] = "no calls" end
if r.rss_end - r.rss_warm > RSS_LIMIT_KB then failures[#failures + 1] = "RSS grew" end
if r.ecw_http ~= r.sb_requests then failures[#failures + 1] = "requests do not add up" end
if #failures > 0 then
  print("soak FAILED: " .. table.concat(failures, "; "))
  if not r.host_ok then print(r.out:sub(1, 3000)) end
  os.exit(1)
end
print("soak passed")
