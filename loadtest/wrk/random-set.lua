-- random-set.lua: every request for an object chosen at random from a set, for wrk.
--
--   wrk -t2 -c64 -d10s -s loadtest/wrk/random-set.lua http://127.0.0.1:8080/ -- paths.txt
--   PATTERN=/disk/obj-%05d.bin COUNT=256 wrk -t2 -c64 -d10s -s loadtest/wrk/random-set.lua http://127.0.0.1:8080/
--
-- The URL given to wrk supplies scheme, host and port; its path is ignored. The set comes
-- from, in order of precedence:
--
-- 1. A paths file: the first script argument (after `--`) or $PATHS_FILE, one absolute path
--    per line; blank lines and lines starting with # are skipped.
-- 2. A pattern: $PATTERN with one %d format, numbers $START .. $START + $COUNT - 1
--    (defaults: /disk/obj-%05d.bin, 0, 256).
--
-- Each request picks one object of the set uniformly at random (with replacement), so a set
-- larger than a cache's memory is read all over, not in an order a read-ahead could follow.
-- Every thread has its own generator, seeded from $SEED (default 1) and its thread number,
-- so runs with the same -t and -c ask for the same sequence per thread.
--
-- $TRACK=1 also counts statuses and Cache-Status outcomes (status_200=, hit=, ..., and
-- disk= for streamedge's `detail=disk`) in the RESULT line; it makes wrk hand every response
-- to Lua, which is slow with large bodies, so it is off by default.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = dir .. "?.lua;" .. package.path
local report = require("report")

local function env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return v
end

local function read_paths(file)
  local fh, err = io.open(file, "r")
  if not fh then
    io.stderr:write("random-set.lua: cannot open paths file: ", tostring(err), "\n")
    os.exit(2)
  end
  local paths = {}
  for line in fh:lines() do
    line = line:gsub("^%s+", ""):gsub("%s+$", "")
    if line ~= "" and line:sub(1, 1) ~= "#" then
      if line:sub(1, 1) ~= "/" then line = "/" .. line end
      table.insert(paths, line)
    end
  end
  fh:close()
  return paths
end

local function generated_paths()
  local paths = {}
  local pattern = env("PATTERN", "/disk/obj-%05d.bin")
  local start = tonumber(env("START", "0"))
  local count = tonumber(env("COUNT", "256"))
  for i = start, start + count - 1 do
    table.insert(paths, string.format(pattern, i))
  end
  return paths
end

function setup(thread)
  report.setup(thread)
end

local reqs = {}
local track = env("TRACK", "0") ~= "0"

function init(args)
  local file = args[1] or os.getenv("PATHS_FILE")
  local paths
  if file and file ~= "" then
    paths = read_paths(file)
  else
    paths = generated_paths()
  end
  if #paths == 0 then
    io.stderr:write("random-set.lua: no paths\n")
    os.exit(2)
  end
  for _, p in ipairs(paths) do table.insert(reqs, wrk.format("GET", p)) end
  math.randomseed(tonumber(env("SEED", "1")) * 7919 + (thread_id or 1))
  if not track then response = nil end
end

function request()
  return reqs[math.random(#reqs)]
end

function response(status, headers, body)
  report.count("status_" .. tostring(status))
  report.cache_status(headers)
  local cs = headers["cache-status"] or headers["Cache-Status"] or ""
  if cs:find("detail=disk", 1, true) then report.count("disk") end
end

done = report.done
