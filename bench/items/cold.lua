-- Bench item 3: a cold cache, CALLERS callers (fresh states) on THREADS
-- threads, released together by a barrier; the callers ask for SETS
-- different scope sets (call i uses set (i-1) % SETS + 1).  Counts token
-- requests (goal: one per scope set) and times from the release to the last
-- caller served.  Then the same again with the cache warm, as the baseline
-- for that time.
--
--   ecw-bench bench/items/cold.lua CONFIG.json
local util = require "bench.lib.util"
local bench = require "bench"
local cfg = util.read_json(arg[1])
local core = require "ecw.core"

local SETS = cfg.scope_sets
local ARG = util.literal {
  fhir_base = cfg.fhir_base, client_id = cfg.client_id, key_path = cfg.key_path,
  kid = cfg.kid, ca_file = cfg.ca_file, patient_id = cfg.patient_id, scopes = SETS,
}

local function run(label)
  local c0, s0 = core.stats(), util.sandbox_totals(cfg.admin_url)
  local r = bench.calls { script = "bench/calls/read.lua", threads = cfg.threads,
                          calls = cfg.callers, barrier = true, arg = ARG }
  local c1, s1 = core.stats(), util.sandbox_totals(cfg.admin_url)
  local d, sd = util.delta(c0, c1), util.delta(s0, s1)
  util.log("item 3 (%s): %d callers, %d token requests, all served in %.1f ms, %d failed",
    label, r.calls, d.token_requests, r.elapsed_us / 1000, r.failed)
  return {
    callers = r.calls, threads = cfg.threads, ok = r.ok, failed = r.failed,
    errors = r.errors, elapsed_us = r.elapsed_us,
    read = util.summary(r.value), wall = util.summary(r.wall),
    token_requests = d.token_requests, token_waits = d.token_waits,
    token_blocking_fetches = d.token_blocking_fetches,
    token_cache_hits = d.token_cache_hits, token_failures = d.token_failures,
    discovery_requests = d.discovery_requests,
    connections_opened = d.connections_opened,
    sandbox_token_requests = sd.token_requests,
    sandbox_discovery_requests = sd.discovery_requests,
    sandbox_connections = sd.connections,
  }
end

util.result { scope_sets = #SETS, cold = run("cold"), warm = run("warm") }
