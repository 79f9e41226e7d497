-- player-mix.lua: a weighted request mix resembling video players, for wrk.
--
--   wrk -t2 -c64 -d20s -s loadtest/wrk/player-mix.lua http://127.0.0.1:8080/
--   wrk -t2 -c64 -d20s -s loadtest/wrk/player-mix.lua http://127.0.0.1:8080/ -- paths.txt
--
-- The URL given to wrk supplies scheme, host and port; its path is ignored. The request
-- paths come from, in order of precedence:
--
-- 1. A paths file: the first script argument (after `--`) or $PATHS_FILE. One absolute path
--    per line (/vod/hls/seg-0-001.m4s, optionally with a query); blank lines and lines
--    starting with # are skipped. A path ending in .m3u8 or .mpd (before any query) is a
--    playlist, anything else a segment. README.md shows how to make one from a playlist.
--
-- 2. Otherwise, generated from a pattern:
--      $PLAYLISTS  comma-separated playlist paths      (/vod/hls/media_0.m3u8,/vod/hls/media_1.m3u8)
--      $SEGMENT    segment path with one %d format     (/vod/hls/seg-0-%03d.m4s)
--      $START      first segment number                (1)
--      $COUNT      number of segments                  (6)
--    i.e. segments /vod/hls/seg-0-001.m4s .. seg-0-006.m4s: the demo's VOD video rendition.
--
-- The mix: $SEGS_PER_PLAYLIST segments per playlist request (default 1.5, i.e. playlist,
-- segment, playlist, segment, segment, ...: a player reloading its playlist every one or two
-- segments, which is what live players do at a 2 s target duration). Playlists and segments
-- each rotate in order; every thread starts at a different offset, so the threads do not
-- request the same object in lockstep. Requests are pre-built in init() (wrk's advice for a
-- fast server).
--
-- $HOSTS spreads the threads over several servers: a comma-separated list of host:port
-- (127.0.0.2:8080,127.0.0.3:8080,127.0.0.4:8080), thread i connecting to server i modulo
-- their number (use a multiple of their number of threads). Every request keeps the Host of
-- the URL given to wrk. Without it, every thread connects to that URL.
--
-- $TRACK=1 also counts statuses and Cache-Status hits in the RESULT line (status_200=,
-- hit=, miss=, ...). It defines response(), which makes wrk hand every response's headers
-- and body to Lua: slower, so it is off by default.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = dir .. "?.lua;" .. package.path
local report = require("report")

local function env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return v
end

local function is_playlist(path)
  local p = path:gsub("[?#].*$", ""):lower()
  return p:match("%.m3u8$") ~= nil or p:match("%.mpd$") ~= nil or p:match("%.m3u$") ~= nil
end

local function read_paths(file)
  local fh, err = io.open(file, "r")
  if not fh then
    io.stderr:write("player-mix.lua: cannot open paths file: ", tostring(err), "\n")
    os.exit(2)
  end
  local playlists, segments = {}, {}
  for line in fh:lines() do
    line = line:gsub("^%s+", ""):gsub("%s+$", "")
    if line ~= "" and line:sub(1, 1) ~= "#" then
      if line:sub(1, 1) ~= "/" then line = "/" .. line end
      table.insert(is_playlist(line) and playlists or segments, line)
    end
  end
  fh:close()
  return playlists, segments
end

local function generated_paths()
  local playlists = {}
  for p in env("PLAYLISTS", "/vod/hls/media_0.m3u8,/vod/hls/media_1.m3u8"):gmatch("[^,%s]+") do
    table.insert(playlists, p)
  end
  local segments = {}
  local pattern = env("SEGMENT", "/vod/hls/seg-0-%03d.m4s")
  local start = tonumber(env("START", "1"))
  local count = tonumber(env("COUNT", "6"))
  for i = start, start + count - 1 do
    table.insert(segments, string.format(pattern, i))
  end
  return playlists, segments
end

-- Main state: the servers of $HOSTS, resolved once.
local hosts = nil
local function host_addrs(list)
  local addrs = {}
  for h in list:gmatch("[^,%s]+") do
    local host, port = h:match("^(.+):(%d+)$")
    local found = host and wrk.lookup(host, port)
    if not found or #found == 0 then
      io.stderr:write("player-mix.lua: cannot resolve ", h, " (HOSTS wants host:port)\n")
      os.exit(2)
    end
    table.insert(addrs, found[1])
  end
  return addrs
end

-- Main state: number the threads (for the rotation offsets), collect them for the report, and
-- give each its server when $HOSTS says.
local threads_set = 0
function setup(thread)
  report.setup(thread)
  local list = env("HOSTS", "")
  if list ~= "" then
    hosts = hosts or host_addrs(list)
    thread.addr = hosts[threads_set % #hosts + 1]
  end
  threads_set = threads_set + 1
end

local playlist_reqs, segment_reqs = {}, {}
local pi, si = 1, 1
local credit = 0
local ratio = tonumber(env("SEGS_PER_PLAYLIST", "1.5"))
local track = env("TRACK", "0") ~= "0"

function init(args)
  local file = args[1] or os.getenv("PATHS_FILE")
  local playlists, segments
  if file and file ~= "" then
    playlists, segments = read_paths(file)
  else
    playlists, segments = generated_paths()
  end
  if #playlists + #segments == 0 then
    io.stderr:write("player-mix.lua: no paths\n")
    os.exit(2)
  end
  for _, p in ipairs(playlists) do table.insert(playlist_reqs, wrk.format("GET", p)) end
  for _, p in ipairs(segments) do table.insert(segment_reqs, wrk.format("GET", p)) end
  -- Spread the threads over the rotation.
  local id = (thread_id or 1) - 1
  local n = math.max(thread_count or 1, 1)
  if #playlist_reqs > 0 then pi = (math.floor(id * #playlist_reqs / n) % #playlist_reqs) + 1 end
  if #segment_reqs > 0 then si = (math.floor(id * #segment_reqs / n) % #segment_reqs) + 1 end
  if ratio <= 0 then ratio = 1.5 end
  credit = 1 -- start like a player: with a playlist
  if not track then response = nil end
end

function request()
  -- `credit` grows by 1/ratio per segment; a playlist is due when it reaches 1.
  if (credit >= 1 and #playlist_reqs > 0) or #segment_reqs == 0 then
    credit = credit - 1
    local r = playlist_reqs[pi]
    pi = pi % #playlist_reqs + 1
    if track then report.count("playlist") end
    return r
  end
  credit = credit + 1 / ratio
  local r = segment_reqs[si]
  si = si % #segment_reqs + 1
  if track then report.count("segment") end
  return r
end

function response(status, headers, body)
  report.count("status_" .. tostring(status))
  report.cache_status(headers)
end

done = report.done
