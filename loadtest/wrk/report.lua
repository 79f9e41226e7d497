-- report.lua: a machine-readable summary line for wrk runs.
--
-- Used two ways:
--
-- 1. Alone, for plain-URL runs (every request is the same GET):
--      wrk -t2 -c64 -d20s -s loadtest/wrk/report.lua http://127.0.0.1:8080/vod/hls/media_0.m3u8
--
-- 2. From another script (player-mix.lua, live-hls.lua):
--      local report = require("report")   -- after adding this directory to package.path
--      function setup(thread) report.setup(thread) end
--    and in each thread, count things in the global table `counts` (report.count("x")).
--
-- done() prints wrk's normal output untouched (wrk prints it before calling done) and then
-- one line, all values on it as key=value, latencies in milliseconds:
--
--   RESULT label=... rps=... mbps=... p50_ms=... p90_ms=... p99_ms=... p999_ms=... max_ms=...
--          mean_ms=... requests=... bytes=... errors=... err_connect=... err_read=...
--          err_write=... err_status=... err_timeout=... duration_s=... [per-script counters]
--
-- `errors` is the sum of wrk's socket errors, timeouts and HTTP statuses > 399. The label is
-- $RESULT_LABEL, else the script name. Counters from threads (e.g. playlist=, segment=,
-- status_200=, hit=) are summed over threads and appended in sorted order.
--
-- wrk's latency is measured per request on each connection (closed loop, no correction for
-- coordinated omission): read p99/p99.9 as "under this load", not as an open-loop SLO.

local M = {}

local threads = {}
local next_id = 0

-- The script that loaded us, for the default label.
local function script_name()
  for level = 2, 10 do
    local info = debug.getinfo(level, "S")
    if not info then break end
    local src = info.source or ""
    local name = src:match("^@.-([^/]+)%.lua$")
    if name and name ~= "report" then return name end
  end
  return "report"
end

local label = os.getenv("RESULT_LABEL") or script_name()

-- Called from the main Lua state, once per thread, before the threads start.
function M.setup(thread)
  next_id = next_id + 1
  thread:set("thread_id", next_id)
  thread:set("thread_count", 0) -- filled in below once all threads are known
  table.insert(threads, thread)
  for _, t in ipairs(threads) do t:set("thread_count", #threads) end
end

-- Thread side: increment a named counter (global `counts`, read back in done()).
counts = counts or {}
function M.count(name, n)
  counts[name] = (counts[name] or 0) + (n or 1)
end

-- Thread side: classify a response by its Cache-Status header (RFC 9211, the edge's own
-- member first) and count it:
--   hit          "streamedge; hit; ..." (fresh, or stale-while-revalidate)
--   revalidated  "fwd=stale; fwd-status=304": a stale copy confirmed by the origin
--   stale_error  "detail=stale-if-error": stale copy served because the origin failed
--   fwd_<reason> anything else forwarded: fwd_uri-miss, fwd_stale (origin sent a new 200),
--                fwd_miss, fwd_bypass, ...
--   collapsed    in addition, when the request joined another request's origin fetch
--   no_cache_status  no header at all (e.g. an error answered before the cache)
-- wrk passes header names as received (the edge sends them lower-case over HTTP/1.1).
function M.cache_status(headers)
  local cs = headers["cache-status"] or headers["Cache-Status"]
  if not cs then
    M.count("no_cache_status")
    return
  end
  if cs:match("^[^;,]*;%s*hit") then
    M.count("hit")
  elseif cs:find("stale-if-error", 1, true) then
    M.count("stale_error")
  elseif cs:find("fwd-status=304", 1, true) then
    M.count("revalidated")
  else
    M.count("fwd_" .. (cs:match("fwd=([%w%-]+)") or "other"))
  end
  if cs:find("collapsed", 1, true) then M.count("collapsed") end
end

local function ms(us) return us / 1000.0 end

function M.done(summary, latency, requests)
  local s = summary
  local e = s.errors
  local dur = s.duration / 1e6
  local errors = e.connect + e.read + e.write + e.status + e.timeout
  local line = string.format(
    "RESULT label=%s rps=%.1f mbps=%.2f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f "
      .. "max_ms=%.3f mean_ms=%.3f requests=%d bytes=%d errors=%d err_connect=%d err_read=%d "
      .. "err_write=%d err_status=%d err_timeout=%d duration_s=%.2f",
    label, s.requests / dur, s.bytes * 8 / dur / 1e6,
    ms(latency:percentile(50)), ms(latency:percentile(90)), ms(latency:percentile(99)),
    ms(latency:percentile(99.9)), ms(latency.max), ms(latency.mean),
    s.requests, s.bytes, errors, e.connect, e.read, e.write, e.status, e.timeout, dur)
  -- Per-thread counters, summed.
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    if type(c) == "table" then
      for k, v in pairs(c) do
        if type(v) == "number" then total[k] = (total[k] or 0) + v end
      end
    end
  end
  local keys = {}
  for k in pairs(total) do table.insert(keys, k) end
  table.sort(keys)
  for _, k in ipairs(keys) do line = line .. string.format(" %s=%d", k, total[k]) end
  io.write(line, "\n")
end

-- Used alone (`wrk -s report.lua URL`): these globals make wrk call us. A script that
-- requires this module may replace them.
setup = M.setup
done = M.done

-- Hand the module to require() through package.loaded instead of `return M`: when wrk runs
-- this file as the main script, a returned value would stay on the Lua stack of wrk's main
-- state, and wrk 4.1 builds done()'s summary table at fixed stack indices (the `errors`
-- field would land on the wrong table).
local modname = ...
if modname then package.loaded[modname] = M end
