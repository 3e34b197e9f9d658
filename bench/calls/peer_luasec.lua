-- Bench item 5, the peer, one call in the mod_lua pattern: luasocket +
-- luasec, a token fetched per call (assertion signed per call), a new TLS
-- connection for the token and another for the read (bench/lib/peer.lua).
-- Returns the lookup's own time and the time spent loading modules (us).
local cfg = load("return " .. ARG)()
local bench = require "bench"
local now = bench.now_us

local t0 = now()
local peer = require "bench.lib.peer"
local t1 = now()
local p, err = peer.read(cfg, "Patient", cfg.patient_id)
local t2 = now()
if not p then error("peer: " .. tostring(err), 0) end
if p.id ~= cfg.patient_id then error("wrong patient", 0) end
return t2 - t1, t1 - t0
