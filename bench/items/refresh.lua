-- Bench item 4: calls at a steady rate (RATE per second from THREADS
-- threads, a fresh state per call) for DURATION seconds, with whatever
-- token lifetime the sandbox is set to (run.lua alternates blocks with 5 s
-- and 3600 s tokens and pools each configuration's blocks).  The token is warmed first (ecw.warm), so every token wait or
-- blocking fetch counted during the run is one a caller should not have had.
--
--   ecw-bench bench/items/refresh.lua CONFIG.json
local util = require "bench.lib.util"
local bench = require "bench"
local cfg = util.read_json(arg[1])
local ecw = require "ecw"
local core = require "ecw.core"

assert(ecw.configure(util.ecw_opts(cfg)))
assert(ecw.warm { "Patient" })
util.sandbox_reset(cfg.admin_url)

local ARG = util.literal {
  fhir_base = cfg.fhir_base, client_id = cfg.client_id, key_path = cfg.key_path,
  kid = cfg.kid, ca_file = cfg.ca_file, patient_id = cfg.patient_id,
}
local c0 = core.stats()
local r = bench.calls { script = "bench/calls/read.lua", threads = cfg.threads,
                        rate = cfg.rate, duration = cfg.duration, arg = ARG }
local c1 = core.stats()
local sb = util.sandbox_totals(cfg.admin_url)
local d = util.delta(c0, c1)
local out = {
  lifetime_s = cfg.lifetime, rate = cfg.rate, duration_s = cfg.duration,
  threads = cfg.threads, calls = r.calls, ok = r.ok, failed = r.failed,
  errors = r.errors, elapsed_us = r.elapsed_us,
  read = util.summary(r.value), wall = util.summary(r.wall), lag = util.summary(r.lag),
  token_waits = d.token_waits, token_blocking_fetches = d.token_blocking_fetches,
  waited = d.token_waits + d.token_blocking_fetches,
  token_requests = d.token_requests, token_refreshes_ahead = d.token_refreshes_ahead,
  token_failures = d.token_failures, retries_401 = d.retries_401,
  connections_opened = d.connections_opened,
  sandbox_expired_uses = sb.expired_uses, sandbox_min_remaining_ms = sb.min_remaining_ms,
  sandbox_token_requests = sb.token_requests, sandbox_connections = sb.connections,
  -- raw samples, so run.lua can pool the blocks of one configuration
  read_samples = r.value, wall_samples = r.wall,
}
-- The slowest calls, for the reading of p99: when they started (ms into
-- the run) and how long the read and the whole call took.
local idx = {}
for i = 1, r.calls do idx[i] = i end
table.sort(idx, function(a, b) return r.value[a] > r.value[b] end)
out.slowest = {}
for k = 1, math.min(15, #idx) do
  local i = idx[k]
  out.slowest[k] = { call = i, start_ms = math.floor(r.start[i] / 1000),
                     read_us = math.floor(r.value[i]), wall_us = math.floor(r.wall[i]),
                     setup_us = math.floor(r.value2[i]) }
end
util.log("item 4 (%s s tokens): %d calls, %d waited, %d refreshed ahead, read p99 %.0f us",
  tostring(cfg.lifetime), r.calls, out.waited, out.token_refreshes_ahead, out.read.p99)
util.result(out)
