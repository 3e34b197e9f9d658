-- Bench item 6a: memory per cached token.  Caches N distinct scope sets
-- (subsets of eight read scopes) on one client and measures what malloc
-- holds (mallinfo2) before, after, and after core.flush(); Lua's own heap
-- change (collectgarbage "count") is taken out.  RSS is reported too, but
-- moves in pages and arenas, so the malloc figure is the one to read.
--
--   ecw-bench bench/items/memory.lua CONFIG.json
local util = require "bench.lib.util"
local bench = require "bench"
local cfg = util.read_json(arg[1])
local ecw = require "ecw"
local core = require "ecw.core"

local N = cfg.tokens or 200
local TYPES = { "Patient", "Practitioner", "MedicationRequest", "AllergyIntolerance",
                "Coverage", "Encounter", "Observation", "Condition" }
assert(N <= 255, "at most 255 distinct subsets of 8 scopes")
core.set_cache_limit(N + 16)

local client = assert(ecw.configure(util.ecw_opts(cfg)))
local h = client.h

local function set_of(mask)
  local s = {}
  for i, t in ipairs(TYPES) do
    if mask & (1 << (i - 1)) ~= 0 then s[#s + 1] = "system/" .. t .. ".read" end
  end
  return s
end

local function settle()
  collectgarbage("collect")
  collectgarbage("collect")
  bench.trim()
  return { heap = bench.heap(), rss_kb = bench.rss_kb(), lua = collectgarbage("count") * 1024 }
end

-- Warm everything that is not per token: discovery, the connection, TLS,
-- OpenSSL's caches, the key, one token.  The warm-up set is the full one
-- (mask 255), which the measured sets (1..N) do not include.
assert(h:token(set_of(255)))
for _ = 1, 3 do assert(h:get("Patient/" .. cfg.patient_id, set_of(255))) end
local before = settle()
local entries0 = core.stats().cache_entries
local scope_chars = 0
for mask = 1, N do
  local set = set_of(mask)
  local t = assert(h:token(set))
  scope_chars = scope_chars + #table.concat(set, " ")
  assert(t.fetched, "scope set " .. mask .. " was already cached")
end
local after = settle()
local entries1 = core.stats().cache_entries
core.flush()
local flushed = settle()

local function per(a, b)
  return ((b.heap - a.heap) - (b.lua - a.lua)) / N
end
local out = {
  tokens = N, cache_entries_added = entries1 - entries0,
  mean_scope_chars = scope_chars / N,
  bytes_per_token = per(before, after),             -- growth while caching
  bytes_freed_per_token = -per(after, flushed),     -- what dropping them returns
  rss_kb_before = before.rss_kb, rss_kb_after = after.rss_kb, rss_kb_flushed = flushed.rss_kb,
  rss_bytes_per_token = (after.rss_kb - before.rss_kb) * 1024 / N,
  heap_before = before.heap, heap_after = after.heap, heap_flushed = flushed.heap,
}
util.log("item 6a: %d tokens cached: %.0f bytes each (malloc), %.0f freed by flush",
  N, out.bytes_per_token, out.bytes_freed_per_token)
util.result(out)
