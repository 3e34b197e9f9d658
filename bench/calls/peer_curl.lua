-- Bench item 5, the peer with the curl command line: two curl processes
-- per call (token, then read); the assertion is signed in-process.
local cfg = load("return " .. ARG)()
local bench = require "bench"
local now = bench.now_us

local t0 = now()
local peer = require "bench.lib.peer"
local t1 = now()
local p, err = peer.read_curl(cfg, "Patient", cfg.patient_id)
local t2 = now()
if not p then error("peer: " .. tostring(err), 0) end
if p.id ~= cfg.patient_id then error("wrong patient", 0) end
return t2 - t1, t1 - t0
