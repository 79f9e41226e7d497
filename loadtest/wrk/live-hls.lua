-- live-hls.lua: live HLS load at the live edge, for wrk.
--
--   wrk -t2 -c64 -d30s -s loadtest/wrk/live-hls.lua http://127.0.0.1:8080/live/hls/media_0.m3u8
--   wrk -t2 -c64 -d30s -s loadtest/wrk/live-hls.lua http://127.0.0.1:8080/live/hls/master.m3u8
--
-- The URL is a live media playlist, or a multivariant playlist (then the first variant is
-- used). Every response that starts with #EXTM3U is parsed here, in response():
--
--   - a multivariant playlist switches this thread to its first variant's media playlist;
--   - a media playlist updates the thread's view of the live window: the newest $LIVE_EDGE
--     segments (default 3, where players start: hls.js' liveSyncDurationCount), identified
--     by media sequence number. Segments new since the previous reload are queued first, so
--     every new segment is requested as soon as it is seen (on many connections at once:
--     the thundering herd the edge collapses into one origin fetch). The init segment
--     (#EXT-X-MAP) is requested when it first appears.
--
-- Between the new segments, requests cycle through the live window with one playlist
-- reload every $SEGS_PER_PLAYLIST segment requests (default 2). The connections of one wrk
-- thread share that thread's state, so each thread behaves like a crowd of players at the
-- live edge (wrk cannot tell its connections apart in Lua). This is a closed-loop stress
-- test of the live working set (playlist revalidation every target duration, misses that
-- collapse, hits), not a model of paced players: use loadtest/k6/live-hls.js for that.
--
-- URIs in playlists are resolved against the playlist's path (RFC 3986: absolute path,
-- relative path with dot segments, or an absolute URL on the same host:port; other hosts
-- are skipped: wrk talks to one server). A non-200 answer or an unparsable playlist leaves
-- the state as it was, so the run continues through origin errors; statuses are counted in
-- the RESULT line (status_200=, status_503=, ...), as are playlist=, segment=, init=,
-- new_segments=, and the Cache-Status results (hit=, fwd_miss=, fwd_stale=, ...).

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = dir .. "?.lua;" .. package.path
local report = require("report")

local function env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return v
end

local LIVE_EDGE = tonumber(env("LIVE_EDGE", "3"))
local SEGS_PER_PLAYLIST = tonumber(env("SEGS_PER_PLAYLIST", "2"))

function setup(thread)
  report.setup(thread)
end

-- ------------------------------------------------------------------------------------------
-- URI resolution against a base path (same server only).

local function remove_dot_segments(path)
  local out = {}
  local parts = {}
  -- Split on "/": "/a/b" -> "", "a", "b"; "/a/b/" -> "", "a", "b", "".
  for seg in (path .. "/"):gmatch("([^/]*)/") do table.insert(parts, seg) end
  for i, seg in ipairs(parts) do
    local last = (i == #parts)
    if seg == "." then
      if last then table.insert(out, "") end
    elseif seg == ".." then
      if #out > 1 then table.remove(out) end
      if last then table.insert(out, "") end
    else
      table.insert(out, seg)
    end
  end
  return table.concat(out, "/")
end

local authority = nil -- "host:port" as wrk connects, for absolute URLs in playlists

-- Returns the path (+query) to request for `ref` found in the playlist at `base`, or nil if
-- it points at another server.
local function resolve(base, ref)
  ref = ref:gsub("#.*$", "")
  local scheme, auth, rest = ref:match("^(%a[%w+.-]*)://([^/?#]*)(.*)$")
  if scheme then
    if auth ~= authority and auth ~= wrk.host then return nil end
    if rest == "" then rest = "/" end
    return remove_dot_segments(rest:match("^[^?]*")) .. (rest:match("%?.*$") or "")
  end
  if ref:sub(1, 2) == "//" then return nil end
  local path, query = ref:match("^([^?]*)(.*)$")
  if path:sub(1, 1) ~= "/" then
    local base_path = base:match("^[^?]*")
    if path == "" then
      return base_path .. query
    end
    path = base_path:match("^(.*/)") .. path
  end
  return remove_dot_segments(path) .. query
end

-- ------------------------------------------------------------------------------------------
-- Thread state.

local playlist_path = nil   -- media (or, at first, multivariant) playlist path
local playlist_req = nil    -- pre-built request for it
local window = {}           -- requests for the newest LIVE_EDGE segments
local wi = 1
local fresh = {}            -- requests for segments not requested yet (FIFO)
local last_msn = nil        -- highest media sequence number seen
local maps = {}             -- init segment paths already queued
local since_playlist = 0
local kinds = {}            -- request string -> "playlist" | "segment" | "init"

local function build(path, kind)
  local r = wrk.format("GET", path)
  kinds[r] = kind
  return r
end

function init(args)
  authority = wrk.host .. (wrk.port and (":" .. wrk.port) or "")
  playlist_path = wrk.path
  if not playlist_path or playlist_path == "" or playlist_path == "/" then
    playlist_path = args[1] or "/live/hls/master.m3u8"
  end
  playlist_req = build(playlist_path, "playlist")
end

function request()
  local r
  if #fresh > 0 then
    r = table.remove(fresh, 1)
    since_playlist = since_playlist + 1
  elseif #window == 0 or since_playlist >= SEGS_PER_PLAYLIST then
    r = playlist_req
    since_playlist = 0
  else
    if wi > #window then wi = 1 end
    r = window[wi]
    wi = wi + 1
    since_playlist = since_playlist + 1
  end
  report.count(kinds[r] or "other")
  return r
end

local function parse_attributes(s)
  local attrs = {}
  for k, v in s:gmatch('([%u%d-]+)=("[^"]*")') do attrs[k] = v:sub(2, -2) end
  for k, v in s:gmatch('([%u%d-]+)=([^",]+)') do attrs[k] = attrs[k] or v end
  return attrs
end

local function on_multivariant(body)
  local want = false
  for line in body:gmatch("[^\r\n]+") do
    line = line:gsub("^%s+", ""):gsub("%s+$", "")
    if line:match("^#EXT%-X%-STREAM%-INF:") then
      want = true
    elseif want and line ~= "" and line:sub(1, 1) ~= "#" then
      local p = resolve(playlist_path, line)
      if p then
        playlist_path = p
        playlist_req = build(p, "playlist")
      end
      return
    end
  end
end

local function on_media(body)
  local msn = 0
  local segs = {} -- { {msn, path}, ... }
  local map = nil
  local n = nil
  for line in body:gmatch("[^\r\n]+") do
    line = line:gsub("^%s+", ""):gsub("%s+$", "")
    if line:match("^#EXT%-X%-MEDIA%-SEQUENCE:") then
      msn = tonumber(line:match(":(%d+)")) or 0
    elseif line:match("^#EXT%-X%-MAP:") then
      local uri = parse_attributes(line:sub(12)).URI
      map = uri and resolve(playlist_path, uri)
      if map and not maps[map] then
        maps[map] = true
        table.insert(fresh, 1, build(map, "init"))
      end
    elseif line ~= "" and line:sub(1, 1) ~= "#" then
      n = n and (n + 1) or msn
      local p = resolve(playlist_path, line)
      if p then table.insert(segs, { n, p }) end
    end
  end
  if #segs == 0 then return end
  local newest = segs[#segs][1]
  -- First load, or the sequence restarted (origin restart): start at the live edge.
  if last_msn == nil or newest < last_msn - #segs then last_msn = newest - LIVE_EDGE end
  local w = {}
  for i = math.max(1, #segs - LIVE_EDGE + 1), #segs do
    local s = segs[i]
    local r = build(s[2], "segment")
    table.insert(w, r)
    if s[1] > last_msn then
      table.insert(fresh, r)
      report.count("new_segments")
    end
  end
  last_msn = math.max(last_msn, newest)
  window = w
  wi = 1
end

function response(status, headers, body)
  report.count("status_" .. tostring(status))
  report.cache_status(headers)
  if status ~= 200 or not body or body:sub(1, 7) ~= "#EXTM3U" then return end
  if body:find("#EXT-X-STREAM-INF", 1, true) then
    on_multivariant(body)
  elseif body:find("#EXTINF", 1, true) then
    on_media(body)
  end
end

done = report.done
