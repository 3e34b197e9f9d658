-- Bench item 5: the peer -- the same lookup the way FreeSWITCH scripts do
-- it without ecw (bench/lib/peer.lua: luasec, a new TLS connection per
-- request, a token fetched per call; and the same with two curl processes)
-- -- against ecw, all in the mod_lua pattern (a fresh state per call, one
-- thread), in rounds of one block per arm with the order rotating.
-- Arms: ecw, luasec (as such scripts are usually written), curl (two
-- processes per call).
--
--   ecw-bench bench/items/peer.lua CONFIG.json
local util = require "bench.lib.util"
local bench = require "bench"
local cfg = util.read_json(arg[1])

local function literal(client_id)
  return util.literal {
    fhir_base = cfg.fhir_base, client_id = client_id, key_path = cfg.key_path,
    kid = cfg.kid, ca_file = cfg.ca_file, patient_id = cfg.patient_id,
    token_url = cfg.token_url,
  }
end

local arms = {
  { name = "ecw", script = "bench/calls/read.lua", arg = literal(cfg.client_id) },
  { name = "luasec", script = "bench/calls/peer_luasec.lua", arg = literal(cfg.peer_client_id) },
  { name = "curl", script = "bench/calls/peer_curl.lua", arg = literal(cfg.peer_client_id) },
}
local BLOCK, ROUNDS = cfg.block or 25, cfg.rounds or 8

for _, a in ipairs(arms) do
  a.wall, a.read, a.connections, a.token_requests, a.failed, a.calls = {}, {}, 0, 0, 0, 0
  a.cpu = 0
  local w = bench.calls { script = a.script, calls = a.name == "ecw" and 20 or 3, arg = a.arg }
  assert(w.failed == 0, a.name .. " warm-up failed: " .. tostring(w.errors[1]))
end

for r = 1, ROUNDS do
  for k = 0, #arms - 1 do
    local a = arms[(r - 1 + k) % #arms + 1]
    local s0 = util.sandbox_totals(cfg.admin_url)
    local u0 = bench.cpu_us() + bench.cpu_us("children")
    local res = bench.calls { script = a.script, calls = BLOCK, arg = a.arg }
    a.cpu = a.cpu + bench.cpu_us() + bench.cpu_us("children") - u0
    local s1 = util.sandbox_totals(cfg.admin_url)
    for i = 1, res.calls do
      a.wall[#a.wall + 1] = res.wall[i]
      a.read[#a.read + 1] = res.value[i]
    end
    a.calls = a.calls + res.calls
    a.failed = a.failed + res.failed
    if res.failed > 0 then a.error = res.errors[1] end
    a.connections = a.connections + (s1.connections - s0.connections)
    a.token_requests = a.token_requests + (s1.token_requests - s0.token_requests)
  end
end

local out = {}
for _, a in ipairs(arms) do
  out[a.name] = {
    calls = a.calls, failed = a.failed, error = a.error,
    wall = util.summary(a.wall), read = util.summary(a.read),
    connections = a.connections, token_requests = a.token_requests,
    -- CPU per call on the caller's side (this process and, for curl, its
    -- child processes): free of the sandbox's own latency.
    cpu_us = a.cpu / a.calls,
  }
  util.log("item 5: %-6s whole call median %.0f us, lookup median %.0f us, CPU %.0f us/call, %.2f connections/call",
    a.name, out[a.name].wall.median, out[a.name].read.median, out[a.name].cpu_us, a.connections / a.calls)
end
util.result(out)
