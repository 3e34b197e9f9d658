-- bench/run.lua: runs every benchmark item of issue 5 against the local
-- sandbox on loopback and prints one table (ratios against baselines
-- measured in the same run, counts, memory).  `make bench` runs it; see
-- docs/PERFORMANCE.md for what each row means.
--
--   lua5.4 bench/run.lua            full run (about 5 minutes)
--   BENCH_QUICK=1 lua5.4 bench/run.lua
--                                   item 4 over ~10 s, item 6 over 10,000 calls
--   BENCH_ONLY=1,4 ...              only some items (for work on one of them)
--
-- Run from the repository root after `make bench-build` (make bench does
-- both).  Each item runs in its own process (build/bench/ecw-bench, or
-- build/5.4/ecw-host for the 100,000 calls), so every item starts with a
-- cold token cache, an empty pool and zeroed counters.  Each item uses its
-- own practice code and client id in the sandbox.
--
-- Output: the table on stdout, build/bench/results.md (the same table in
-- Markdown, with the machine), build/bench/results.json (every number).
package.path = "./lua/?.lua;./?.lua;" .. package.path
package.cpath = "./build/5.4/?.so;" .. package.cpath

local sandbox = require "spec.support.sandbox"
local util = require "bench.lib.util"
local cjson = require "cjson"
local core = require "ecw.core"

local QUICK = os.getenv("BENCH_QUICK") == "1"
local ONLY = {}
for n in (os.getenv("BENCH_ONLY") or ""):gmatch("%d+") do ONLY[tonumber(n)] = true end
local function wanted(n) return next(ONLY) == nil or ONLY[n] end

local OUT_DIR = "build/bench"
local BIN = OUT_DIR .. "/ecw-bench"
local HOST = "build/5.4/ecw-host"
local ENV = "LUA_PATH='./lua/?.lua;./?.lua;;' LUA_CPATH='./build/5.4/?.so;;' "
local PATIENT = "p-1003"

-- Sizes.  BENCH_QUICK shortens items 4 and 6 only (and item 5 a little).
local P = {
  latency = { block = 100, rounds = 20, warmup = 200 },      -- 2,000 per arm
  modlua = { calls = 1000, threads = 8, overflow_threads = 32 },
  cold = { callers = 256, threads = 16 },
  refresh = { rate = 20, threads = 4, duration = QUICK and 10 or 60, blocks = 2 },
  peer = { block = 25, rounds = QUICK and 4 or 8 },
  memory = { tokens = 200 },
  host = { calls = QUICK and 10000 or 100000, threads = 4, warm = 1000 },
}

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function sh(cmd)
  local f = assert(io.popen(cmd .. " 2>/dev/null"))
  local s = f:read("a")
  f:close()
  return (s:gsub("%s+$", ""))
end

for _, f in ipairs({ BIN, HOST, "build/5.4/ecw/core.so" }) do
  if not io.open(f, "rb") then
    io.stderr:write("bench: ", f, " is missing: run `make bench` (or make bench-build)\n")
    os.exit(2)
  end
end
os.execute("mkdir -p " .. OUT_DIR)

---------------------------------------------------------------- the machine
local function machine()
  local m = {}
  m.cpu = sh("lscpu | sed -n 's/^Model name: *//p' | head -1")
  m.cpus = tonumber(sh("nproc"))
  m.mem = sh("free -h | awk '/^Mem:/ {print $2}'")
  m.kernel = sh("uname -r")
  m.debian = sh("cat /etc/debian_version")
  m.virt = sh("lscpu | sed -n 's/^Hypervisor vendor: *//p'")
  m.libcurl = sh("curl-config --version"):match("[%d%.]+")
    or sh("dpkg-query -W -f '${Version}' libcurl4")
  m.openssl = sh("openssl version"):match("^(OpenSSL %S+)") or sh("openssl version")
  m.lua = sh("lua5.4 -v"):match("^(Lua %S+)") or "Lua 5.4"
  m.cc = sh("cc --version | head -1")
  m.commit = sh("git rev-parse --short HEAD")
  m.dirty = sh("git --no-optional-locks status --porcelain -- csrc lua | head -1") ~= ""
  m.date = os.date("!%Y-%m-%d %H:%M UTC")
  m.load_end = sh("cut -d' ' -f1-3 /proc/loadavg")
  return m
end

-- Other work on the machine shows in every latency figure: note it.
local LOAD_START = sh("cut -d' ' -f1-3 /proc/loadavg")

------------------------------------------------------------------- sandbox
io.stderr:write("bench: starting the sandbox (TLS, 3600 s tokens)\n")
local sb = sandbox.start { tls = true, token_lifetime = 3600 }
local dir = sandbox.tmpdir("ecw-bench")
local key = sandbox.keygen(dir, "RS384")
local kid = assert(core.jwk(key.path)).kid
local clients = {}
for _, id in ipairs({ "bench-1", "bench-2", "bench-3", "bench-4s", "bench-4l",
                      "bench-5", "bench-5p", "bench-6", "bench-6h" }) do
  clients[#clients + 1] = { client_id = id, kid = kid, key = key }
end
sb:register(clients)

local ok_all = true
local function config(practice, client_id, extra)
  local c = {
    fhir_base = sb:fhir_base_for(practice), client_id = client_id,
    key_path = key.path, kid = kid, ca_file = sb.ca_file,
    token_url = sb.token_url, admin_url = sb.admin_url, patient_id = PATIENT,
  }
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end

-- CPU placement.  On this kind of machine (a few vCPUs) a loopback request
-- costs far less when client and server share a CPU than when every
-- wake-up crosses CPUs, and the kernel flips between the two from run to
-- run.  Item 1 therefore pins both explicitly and measures both placements;
-- the other items run unpinned, as a host would.
local NCPU = tonumber(sh("nproc")) or 1
local HAVE_TASKSET = os.execute("command -v taskset >/dev/null 2>&1") == true
local function pin_sandbox(cpus)
  if HAVE_TASKSET then
    os.execute("taskset -a -p -c " .. cpus .. " " .. sb.pid .. " >/dev/null 2>&1")
  end
end
local function pinned(cpu)
  return HAVE_TASKSET and ("taskset -c " .. cpu .. " ") or ""
end

-- Runs one driver in its own ecw-bench process; its decoded RESULT, or nil.
local function driver(name, cfg, prefix)
  local path = dir .. "/" .. name .. ".json"
  util.write_file(path, cjson.encode(cfg))
  local f = assert(io.popen(ENV .. (prefix or "") .. q(BIN) .. " bench/items/" .. name .. ".lua " .. q(path)))
  local out = f:read("a")
  local ok = f:close()
  local line = out:match("RESULT (%b{})")
  if not ok or not line then
    io.stderr:write("bench: item ", name, " failed:\n", out, "\n")
    ok_all = false
    return nil
  end
  return cjson.decode(line)
end

-- ecw-host: the summary line's fields, or nil.
local function host(script, calls, cfg)
  local cmd = ENV .. q(HOST) .. " -t " .. P.host.threads .. " -n " .. calls ..
    " -w " .. P.host.warm .. " -m './build/5.4/?.so' -s './lua/?.lua;./?.lua'"
  if cfg then
    for k, v in pairs { bench_fhir_base = cfg.fhir_base, bench_client_id = cfg.client_id,
                        bench_key = cfg.key_path, bench_kid = cfg.kid,
                        bench_ca = cfg.ca_file, bench_patient = cfg.patient_id } do
      cmd = cmd .. " -g " .. q(k .. "=" .. v)
    end
  end
  local t0 = os.time()
  local f = assert(io.popen(cmd .. " " .. q(script) .. " 2>&1"))
  local out = f:read("a")
  f:close()
  local r = {}
  for k, v in out:gmatch("([%w_]+)=(%-?%d+)") do r[k] = tonumber(v) end
  if not r.calls then
    io.stderr:write("bench: ecw-host failed:\n", out, "\n")
    ok_all = false
    return nil
  end
  r.seconds = os.time() - t0
  if r.failed > 0 then
    io.stderr:write("bench: ecw-host: ", r.failed, " calls failed:\n", out, "\n")
    ok_all = false
  end
  return r
end

local R = {}
local t_start = os.time()

if wanted(1) then
  io.stderr:write("bench: item 1: ecw.read vs the libcurl baseline, client and sandbox on one CPU\n")
  pin_sandbox("0")
  R.latency = driver("latency", config("BENCH1", "bench-1", P.latency), pinned(0))
  if NCPU > 1 then
    io.stderr:write("bench: item 1: the same, client and sandbox on separate CPUs\n")
    pin_sandbox("1")
    R.latency_split = driver("latency", config("BENCH1", "bench-1", P.latency), pinned(0))
  end
  pin_sandbox("0-" .. (NCPU - 1))
end
if wanted(2) then
  io.stderr:write("bench: item 2: a fresh lua_State per call, 1,000 calls\n")
  R.modlua = driver("modlua", config("BENCH2", "bench-2", P.modlua))
end
if wanted(3) then
  io.stderr:write("bench: item 3: cold cache, 256 callers on 16 threads\n")
  R.cold = driver("cold", config("BENCH3", "bench-3", {
    callers = P.cold.callers, threads = P.cold.threads,
    scope_sets = { { "system/Patient.read" }, { "system/Patient.rs" },
                   { "system/Patient.read", "system/Practitioner.read" },
                   { "system/*.read" } },
  }))
end
if wanted(4) then
  -- 60 s of each configuration, in alternating blocks (5 s tokens, 3600 s
  -- tokens, 5 s, 3600 s) so that other load on the machine falls on both.
  -- Each block is a new process: cold cache, warmed by ecw.warm, then paced.
  local blocks = P.refresh.blocks
  local dur = P.refresh.duration / blocks
  io.stderr:write(string.format("bench: item 4: 5 s vs 3600 s tokens, %d calls/s, %d blocks of %g s each\n",
    P.refresh.rate, 2 * blocks, dur))
  local acc = {}
  local SUM = { "calls", "ok", "failed", "waited", "token_waits", "token_blocking_fetches",
                "token_requests", "token_refreshes_ahead", "token_failures", "retries_401",
                "connections_opened", "sandbox_expired_uses", "sandbox_token_requests",
                "sandbox_connections" }
  for blk = 1, blocks do
    for _, kind in ipairs { "short", "long" } do
      local life = kind == "short" and 5 or 3600
      sb:config { token_lifetime = life }
      local r = driver("refresh", config(kind == "short" and "BENCH4S" or "BENCH4L",
        kind == "short" and "bench-4s" or "bench-4l",
        { rate = P.refresh.rate, threads = P.refresh.threads, duration = dur, lifetime = life }))
      if r then
        local a = acc[kind] or { lifetime_s = life, rate = r.rate, threads = r.threads,
                                 duration_s = 0, read_samples = {}, wall_samples = {},
                                 slowest = {}, errors = {} }
        acc[kind] = a
        a.duration_s = a.duration_s + r.duration_s
        for _, k in ipairs(SUM) do a[k] = (a[k] or 0) + (r[k] or 0) end
        if type(r.sandbox_min_remaining_ms) == "number" then
          a.sandbox_min_remaining_ms = math.min(a.sandbox_min_remaining_ms or math.huge,
                                                r.sandbox_min_remaining_ms)
        end
        for _, v in ipairs(r.read_samples) do a.read_samples[#a.read_samples + 1] = v end
        for _, v in ipairs(r.wall_samples) do a.wall_samples[#a.wall_samples + 1] = v end
        for _, v in ipairs(r.slowest or {}) do v.block = blk; a.slowest[#a.slowest + 1] = v end
        for _, v in ipairs(r.errors or {}) do a.errors[#a.errors + 1] = v end
      end
    end
  end
  sb:config { token_lifetime = 3600 }
  for kind, a in pairs(acc) do
    a.read, a.wall = util.summary(a.read_samples), util.summary(a.wall_samples)
    a.read_samples, a.wall_samples = nil, nil
    table.sort(a.slowest, function(x, y) return x.read_us > y.read_us end)
    for i = #a.slowest, 16, -1 do a.slowest[i] = nil end
  end
  R.refresh_short, R.refresh_long = acc.short, acc.long
end
if wanted(5) then
  io.stderr:write("bench: item 5: the peer (luasec / curl, a token and TLS connections per call)\n")
  R.peer = driver("peer", config("BENCH5", "bench-5",
    { peer_client_id = "bench-5p", block = P.peer.block, rounds = P.peer.rounds }))
end
if wanted(6) then
  io.stderr:write("bench: item 6: memory per cached token\n")
  R.memory = driver("memory", config("BENCH6", "bench-6", P.memory))
  io.stderr:write(string.format("bench: item 6: %d calls through ecw-host (%d threads)\n",
    P.host.calls, P.host.threads))
  local s0 = util.sandbox_totals(sb.admin_url)
  R.host = host("bench/calls/host_read.lua", P.host.calls, config("BENCH6H", "bench-6h"))
  local s1 = util.sandbox_totals(sb.admin_url)
  if R.host then
    R.host.sandbox_connections = s1.connections - s0.connections
    R.host.sandbox_token_requests = s1.token_requests - s0.token_requests
  end
  R.host_noop = host("bench/calls/host_noop.lua", P.host.calls)
end
sb:stop()
os.execute("rm -rf " .. q(dir))

--------------------------------------------------------------------- table
local rows = {}
local function ratio(a, b)
  if type(a) ~= "number" or type(b) ~= "number" or b == 0 then return nil end
  return a / b
end
-- row{ item, measure, value, baseline, ratio, goal, met }: value and
-- baseline are display strings; met is true/false/nil (no goal).
local function row(t) rows[#rows + 1] = t end
local function us(v) return v and string.format("%.0f µs", v) or "n/a" end
local function ms(v) return v and string.format("%.1f ms", v / 1000) or "n/a" end
local function n(v) return v and string.format("%d", v) or "n/a" end

local L, LS = R.latency, R.latency_split
local function latency_rows(X, where)
  local r = ratio(X.ecw.median, X.baseline.median)
  row { "1", "ecw.read median, warm token (p99), " .. where,
        us(X.ecw.median) .. " (" .. us(X.ecw.p99) .. ")",
        us(X.baseline.median) .. " (" .. us(X.baseline.p99) .. ") libcurl keep-alive GET",
        r, "≤ 1.10", r and r <= 1.10 }
  row { "1", "ecw.core h:get median (no JSON decode), " .. where, us(X.core.median),
        us(X.baseline.median) .. " libcurl", ratio(X.core.median, X.baseline.median), "–" }
  if X.baseline_json then
    row { "1", "ecw.read median vs libcurl + cjson.decode, " .. where, us(X.ecw.median),
          us(X.baseline_json.median) .. " libcurl + body to Lua + cjson.decode",
          ratio(X.ecw.median, X.baseline_json.median), "–" }
  end
end
if L then
  latency_rows(L, "one CPU")
  row { "1", "client CPU per request: ecw.read / h:get / libcurl + cjson, one CPU",
        us(L.ecw.cpu_us) .. " / " .. us(L.core.cpu_us) .. " / " .. us(L.baseline_json and L.baseline_json.cpu_us),
        us(L.baseline.cpu_us) .. " libcurl",
        ratio(L.ecw.cpu_us, L.baseline.cpu_us), "–" }
  if L.fhir_resource_us then
    row { "1", string.format("JSON decode of the %d-byte Patient: ecw.fhir (cjson + null/number pass)", L.body_bytes),
          us(L.fhir_resource_us), us(L.cjson_decode_us) .. " cjson.decode alone",
          ratio(L.fhir_resource_us, L.cjson_decode_us), "–" }
  end
end
if LS then latency_rows(LS, "separate CPUs") end
if L then
  row { "1", "new connections while measuring (ecw / baseline)",
        n(L.ecw_connections) .. " / " .. n(L.baseline_connections),
        string.format("%d + %d requests", L.rounds * L.block * 2, L.rounds * L.block * 2), nil, "0",
        L.ecw_connections == 0 and L.baseline_connections == 0 }
end
local M2 = R.modlua
if M2 then
  local c = M2.concurrent
  local conns = math.max(c.connections_opened or 0, c.sandbox_connections or 0)
  row { "2", string.format("%d calls on %d threads: connections = TLS handshakes (ecw / sandbox)", c.calls, c.threads),
        n(c.connections_opened) .. " / " .. n(c.sandbox_connections),
        "pool size " .. n(M2.pool_size), nil, "≤ pool size", conns <= M2.pool_size and c.failed == 0 }
  local s = M2.sequential
  row { "2", "fresh state per call, 1 thread: ecw.read median",
        us(s.read.median), us(L and L.ecw.median) .. " item 1 ecw.read", ratio(s.read.median, L and L.ecw.median), "–" }
  row { "2", "fresh state per call: whole call median (require+configure+read+close)",
        us(s.wall.median), us(L and L.baseline.median) .. " item 1 libcurl", ratio(s.wall.median, L and L.baseline.median), "–" }
  if M2.overflow then
    local o = M2.overflow
    row { "2", string.format("%d calls on %d threads (more than the pool): connections (ecw / sandbox)", o.calls, o.threads),
          n(o.connections_opened) .. " / " .. n(o.sandbox_connections), "pool size " .. n(M2.pool_size), nil, "–" }
  end
end
local C3 = R.cold
if C3 then
  local c, w = C3.cold, C3.warm
  row { "3", string.format("cold cache, %d callers/%d threads, %d scope sets: token requests (ecw / sandbox)",
          c.callers, c.threads, C3.scope_sets),
        n(c.token_requests) .. " / " .. n(c.sandbox_token_requests),
        string.format("%d scope sets; %d callers waited on a fetch; %d discovery requests",
          C3.scope_sets, c.token_waits or -1, c.discovery_requests or -1), nil, "one per scope set",
        c.token_requests == C3.scope_sets and c.sandbox_token_requests == C3.scope_sets and c.failed == 0 }
  row { "3", "time until all callers are served (cold)", ms(c.elapsed_us),
        ms(w.elapsed_us) .. " same callers, warm cache", ratio(c.elapsed_us, w.elapsed_us), "–" }
  row { "3", "slowest single ecw.read (cold: discovery + token wait)", ms(c.read.max),
        ms(w.read.max) .. " warm cache", ratio(c.read.max, w.read.max), "–" }
end
local S, LL = R.refresh_short, R.refresh_long
if S then
  row { "4", string.format("5 s tokens, %g s at %d calls/s: calls that waited on a token fetch",
          S.duration_s, S.rate),
        n(S.waited), string.format("%d calls, %d refreshed ahead, %d expired uses",
          S.calls, S.token_refreshes_ahead, S.sandbox_expired_uses or -1), nil, "0",
        S.waited == 0 and S.failed == 0 and (S.sandbox_expired_uses or 0) == 0 }
end
if S and LL then
  local r = ratio(S.read.p99, LL.read.p99)
  row { "4", "p99 ecw.read latency, 5 s tokens vs 3600 s tokens", us(S.read.p99),
        us(LL.read.p99) .. " 3600 s tokens", r, "≤ 1.2", r and r <= 1.2 }
  row { "4", "p99 whole call, 5 s vs 3600 s tokens", us(S.wall.p99), us(LL.wall.p99),
        ratio(S.wall.p99, LL.wall.p99), "–" }
end
local PE = R.peer
if PE then
  row { "5", "peer luasec: whole call median (token + 2 TLS connections per call)",
        us(PE.luasec.wall.median), us(PE.ecw.wall.median) .. " ecw, fresh state",
        ratio(PE.luasec.wall.median, PE.ecw.wall.median), "–" }
  row { "5", "peer curl processes: whole call median", us(PE.curl.wall.median),
        us(PE.ecw.wall.median) .. " ecw, fresh state", ratio(PE.curl.wall.median, PE.ecw.wall.median), "–" }
  row { "5", "caller's CPU per call: peer luasec / curl (incl. the curl processes)",
        us(PE.luasec.cpu_us) .. " / " .. us(PE.curl.cpu_us), us(PE.ecw.cpu_us) .. " ecw, fresh state",
        ratio(PE.luasec.cpu_us, PE.ecw.cpu_us), "–" }
  row { "5", "connections per call (peer luasec / ecw)",
        string.format("%.2f / %.2f", PE.luasec.connections / PE.luasec.calls,
          PE.ecw.connections / PE.ecw.calls),
        string.format("%d / %d calls", PE.luasec.calls, PE.ecw.calls), nil, "–" }
end
local ME = R.memory
if ME then
  row { "6", string.format("memory per cached token (%d scope sets, malloc)", ME.tokens),
        string.format("%.0f B", ME.bytes_per_token),
        string.format("%.0f B freed by flush; RSS %+d kB", ME.bytes_freed_per_token,
          ME.rss_kb_after - ME.rss_kb_before), nil, "–" }
end
local H, H0 = R.host, R.host_noop
if H then
  row { "6", string.format("RSS after %d calls (ecw-host, %d threads)", H.calls, P.host.threads),
        string.format("%.1f MiB", H.rss_end_kb / 1024),
        string.format("%.1f MiB after %d calls", H.rss_warm_kb / 1024, P.host.warm),
        ratio(H.rss_end_kb, H.rss_warm_kb), "–" }
  if H0 then
    row { "6", "RSS, same host without ecw (for scale)", string.format("%.1f MiB", H0.rss_end_kb / 1024),
          string.format("%.1f MiB after %d calls", H0.rss_warm_kb / 1024, P.host.warm),
          ratio(H0.rss_end_kb, H0.rss_warm_kb), "–" }
  end
end

local function fmt_ratio(r) return r and string.format("%.2f", r) or "" end
local function fmt_met(r) if r[7] == nil then return "" end return r[7] and "yes" or "NO" end

local m = machine()
m.load_start = LOAD_START
local header = { "item", "measure", "value", "baseline (same run)", "ratio", "goal", "met" }
local function cells(r)
  return { r[1], r[2], r[3], r[4], fmt_ratio(r[5]), r[6], fmt_met(r) }
end

-- Plain table for the terminal.
local widths = {}
for i, h in ipairs(header) do widths[i] = utf8.len(h) end
for _, r in ipairs(rows) do
  for i, c in ipairs(cells(r)) do widths[i] = math.max(widths[i], utf8.len(c) or #c) end
end
local function line(cs)
  local parts = {}
  for i, c in ipairs(cs) do parts[i] = c .. string.rep(" ", widths[i] - (utf8.len(c) or #c)) end
  return table.concat(parts, "  ")
end
local mode = (QUICK and "BENCH_QUICK=1" or "full") ..
  (next(ONLY) and (", BENCH_ONLY=" .. os.getenv("BENCH_ONLY")) or "")
print(string.format("ecw bench (%s), %s, %s x%d, %s, Debian %s, kernel %s, load %s -> %s",
  mode, m.date, m.cpu, m.cpus, m.mem, m.debian, m.kernel, m.load_start, m.load_end))
print(line(header))
for _, r in ipairs(rows) do print(line(cells(r))) end
print(string.format("(%d s; details in %s/results.json)", os.time() - t_start, OUT_DIR))

-- Markdown.
local md = {}
md[#md + 1] = "| " .. table.concat(header, " | ") .. " |"
md[#md + 1] = "|" .. string.rep(" --- |", #header)
for _, r in ipairs(rows) do
  md[#md + 1] = "| " .. table.concat(cells(r), " | "):gsub("\n", " ") .. " |"
end
md[#md + 1] = ""
md[#md + 1] = string.format("Run: `make bench` (%s), %s, commit %s%s.", mode, m.date,
  m.commit, m.dirty and " with uncommitted changes in csrc/ or lua/" or "")
md[#md + 1] = string.format("Machine: %s, %d CPUs (%s), %s RAM, Debian %s, kernel %s; libcurl %s, %s, %s.",
  m.cpu, m.cpus, m.virt ~= "" and (m.virt .. " guest") or "bare metal", m.mem, m.debian,
  m.kernel, m.libcurl, m.openssl, m.lua)
md[#md + 1] = string.format("Load average (1, 5, 15 min) at the start: %s; at the end: %s.",
  m.load_start, m.load_end)
util.write_file(OUT_DIR .. "/results.md", table.concat(md, "\n") .. "\n")
util.write_file(OUT_DIR .. "/results.json", cjson.encode { machine = m, quick = QUICK, params = P, results = R })
os.exit(ok_all and 0 or 1)
