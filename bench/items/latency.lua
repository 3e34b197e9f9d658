-- Bench item 1: ecw.read of a Patient with a warm token, against the C
-- baseline (bench/baseline.c: one reused libcurl handle, keep-alive, a fixed
-- Authorization header), in one long-lived Lua state.
--
-- Four arms, timed the same way (bench.now_us around one Lua call):
--   baseline  b:get()                       libcurl, nothing else
--   baseline_json  b:get(), b:body(), cjson.decode
--                                           the least a Lua caller must add
--                                           to get a table (informational)
--   core      h:get("Patient/<id>", scope)  ecw.core: token cache, pool,
--                                           response table (no JSON)
--   ecw       ecw.read("Patient", id)       the public API: + Lua checks,
--                                           JSON decode, null stripping
-- Warm-up first, then rounds of one block per arm, the arm order rotating
-- every round (ABC, BCA, CAB, ...), so drift hits every arm alike.
--
--   ecw-bench bench/items/latency.lua CONFIG.json
local util = require "bench.lib.util"
local bench = require "bench"
local cfg = util.read_json(arg[1])
local ecw = require "ecw"
local core = require "ecw.core"
local peer = require "bench.lib.peer"

local now = bench.now_us
local ID = cfg.patient_id
local SCOPE = "system/Patient.read"
local BLOCK, ROUNDS, WARM = cfg.block or 100, cfg.rounds or 20, cfg.warmup or 200

local client = assert(ecw.configure(util.ecw_opts(cfg)))
local h = client.h

-- The baseline's token: fetched once, outside ecw, for the same scope.
local token = assert(peer.token(cfg))
local url = cfg.fhir_base .. "/Patient/" .. ID
local b = bench.baseline { url = url, token = token, ca_file = cfg.ca_file,
                           accept = "application/fhir+json" }

local cjson = require "cjson"
local arms = {
  { name = "baseline", run = function()
      local t0 = now()
      local st = b:get()
      local t = now() - t0
      if st ~= 200 then error("baseline: HTTP " .. tostring(st)) end
      return t
    end },
  { name = "baseline_json", run = function()
      local t0 = now()
      local st = b:get()
      local p = cjson.decode(b:body())
      local t = now() - t0
      if st ~= 200 or p.id ~= ID then error("baseline_json: HTTP " .. tostring(st)) end
      return t
    end },
  { name = "core", run = function()
      local t0 = now()
      local res = h:get("Patient/" .. ID, SCOPE)
      local t = now() - t0
      if not res or res.status ~= 200 then
        error("core: " .. tostring(res and res.status or select(2, h:get("Patient/" .. ID, SCOPE))))
      end
      return t
    end },
  { name = "ecw", run = function()
      local t0 = now()
      local p, err = ecw.read("Patient", ID)
      local t = now() - t0
      if not p or p.id ~= ID then error("ecw.read: " .. tostring(err)) end
      return t
    end },
}

-- Same bytes on both sides?
assert(b:get() == 200)
local res = assert(h:get("Patient/" .. ID, SCOPE))
local same_body = res.body == b:body()

for _, a in ipairs(arms) do
  for _ = 1, WARM do a.run() end
end

local s0, c0 = core.stats(), b:connects()
local samples, cpu = {}, {}
for _, a in ipairs(arms) do samples[a.name], cpu[a.name] = {}, 0 end
for r = 1, ROUNDS do
  for k = 0, #arms - 1 do
    local a = arms[(r - 1 + k) % #arms + 1]
    local t = samples[a.name]
    local u0 = bench.cpu_us()
    for _ = 1, BLOCK do t[#t + 1] = a.run() end
    cpu[a.name] = cpu[a.name] + bench.cpu_us() - u0
  end
end
local s1, c1 = core.stats(), b:connects()
local d = util.delta(s0, s1)

local out = { same_body = same_body, body_bytes = #res.body, block = BLOCK, rounds = ROUNDS }
for name, t in pairs(samples) do
  out[name] = util.summary(t)
  -- This process's CPU time per request (user + system), the time's less
  -- noisy cousin: what ecw adds is CPU work on the caller's thread.
  out[name].cpu_us = cpu[name] / #t
end

-- Where ecw.read's extra time goes, without the network: the JSON decode
-- ecw.read does on the body (ecw.fhir: cjson, then nulls stripped and
-- integral floats made integers), and cjson.decode alone.
local ok_fhir, fhir = pcall(require, "ecw.fhir")
local function time(f)
  local t = {}
  for i = 1, 200 do f() end
  for i = 1, 2000 do
    local t0 = now()
    f()
    t[i] = now() - t0
  end
  return util.summary(t).median
end
local body = res.body
out.cjson_decode_us = time(function() cjson.decode(body) end)
if ok_fhir and fhir.resource then
  out.fhir_resource_us = time(function() fhir.resource(body, "Patient", "ecw.read") end)
end
out.ecw_connections = d.connections_opened
out.ecw_token_requests = d.token_requests
out.ecw_http_requests = d.http_requests
out.baseline_connections = c1 - c0
util.log("item 1: baseline median %.0f us, core %.0f us, ecw.read %.0f us",
  out.baseline.median, out.core.median, out.ecw.median)
util.result(out)
