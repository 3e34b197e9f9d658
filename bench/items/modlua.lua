-- Bench item 2: a fresh lua_State per call (the mod_lua pattern), 1,000
-- calls over HTTPS.
--   phase "concurrent": CALLS calls on THREADS threads, from a cold start:
--     connections and TLS handshakes (ecw's connections_opened and the
--     sandbox's accepted connections) against the pool size;
--   phase "sequential": CALLS more calls on one thread: per-call latency
--     (the read alone, and the whole state's life) without queueing.
--   phase "overflow" (optional): more threads than the pool holds.
--
--   ecw-bench bench/items/modlua.lua CONFIG.json
local util = require "bench.lib.util"
local bench = require "bench"
local cfg = util.read_json(arg[1])
local core = require "ecw.core"

local ARG = util.literal {
  fhir_base = cfg.fhir_base, client_id = cfg.client_id, key_path = cfg.key_path,
  kid = cfg.kid, ca_file = cfg.ca_file, patient_id = cfg.patient_id,
}

local function phase(threads, calls)
  local c0, s0 = core.stats(), util.sandbox_totals(cfg.admin_url)
  local r = bench.calls { script = "bench/calls/read.lua", threads = threads,
                          calls = calls, arg = ARG }
  local c1, s1 = core.stats(), util.sandbox_totals(cfg.admin_url)
  local d, sd = util.delta(c0, c1), util.delta(s0, s1)
  return {
    threads = threads, calls = calls, ok = r.ok, failed = r.failed, errors = r.errors,
    elapsed_us = r.elapsed_us,
    read = util.summary(r.value), setup = util.summary(r.value2),
    wall = util.summary(r.wall),
    connections_opened = d.connections_opened, http_requests = d.http_requests,
    token_requests = d.token_requests, discovery_requests = d.discovery_requests,
    sandbox_connections = sd.connections, sandbox_token_requests = sd.token_requests,
    sandbox_fhir_requests = sd.fhir_requests,
  }
end

local out = { pool_size = core.stats().pool_size }
out.concurrent = phase(cfg.threads or 8, cfg.calls or 1000)
util.log("item 2: %d calls on %d threads: %d connections (ecw), %d (sandbox), %d failed",
  out.concurrent.calls, out.concurrent.threads, out.concurrent.connections_opened,
  out.concurrent.sandbox_connections, out.concurrent.failed)
out.sequential = phase(1, cfg.calls or 1000)
util.log("item 2: sequential: read median %.0f us, whole call median %.0f us",
  out.sequential.read.median, out.sequential.wall.median)
if cfg.overflow_threads then
  out.overflow = phase(cfg.overflow_threads, cfg.calls or 1000)
  util.log("item 2: %d calls on %d threads: %d connections (ecw), %d (sandbox)",
    out.overflow.calls, out.overflow.threads, out.overflow.connections_opened,
    out.overflow.sandbox_connections)
end
util.result(out)
