#!/bin/bash
# User-space instructions per 1 KB hit, counted exactly by valgrind's callgrind: unlike req/s
# or CPU time on a shared machine, the count does not move with the load of other processes,
# so two builds can be compared with one run each (loadtest/README.md, "Instructions per hit").
#
#   loadtest/instructions.sh [-n REQUESTS] [BINARY ...]
#
# BINARY: streamedge binaries to measure (default: target/release/streamedge), and/or the bare
# server (a path ending in "bare"), which is measured the same way. The origin is the bare
# server itself (it serves /vod/bench/1k.m3u8 with Cache-Control: max-age=3600), so every
# measured request to an edge is a hit. Needs valgrind and h2load (Debian: valgrind,
# nghttp2-client) and the release binaries (cargo build --release). Loopback ports 127.0.0.1:
# 28080 (measured), 28090 (admin), 29000 (origin).
set -euo pipefail

n=20000
if [ "${1:-}" = "-n" ]; then
  n=$2
  shift 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=("$root/target/release/streamedge")
bare="$root/target/release/bare"
path=/vod/bench/1k.m3u8
for tool in valgrind callgrind_control h2load curl; do
  command -v $tool >/dev/null || { echo "instructions.sh: $tool not found" >&2; exit 1; }
done
[ -x "$bare" ] || { echo "instructions.sh: $bare not built (cargo build --release)" >&2; exit 1; }

dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# A streamedge config, of which the bare server reads listen (origins: required, unused).
cat > "$dir/origin.yaml" <<EOF
listen: { http: "127.0.0.1:29000" }
origins:
  - url: "http://127.0.0.1:9"
EOF
cat > "$dir/edge.yaml" <<EOF
listen: { http: "127.0.0.1:28080" }
admin: { listen: "127.0.0.1:28090" }
cache: { max_size: 256MiB }
origins:
  - url: "http://127.0.0.1:29000"
    name: origin
log: { level: warn, access: "off" }
EOF

up() {
  for _ in $(seq 150); do
    curl -sf -o /dev/null "http://$1$path" && return 0
    sleep 0.2
  done
  echo "instructions.sh: nothing answers on $1" >&2
  return 1
}

"$bare" --config "$dir/origin.yaml" > "$dir/origin.log" 2>&1 &
pids+=($!)
up 127.0.0.1:29000

echo "user-space instructions per request: GET $path, $n keep-alive requests (h2load --h1 -c 8), after 2000 unmeasured"
for bin in "${bins[@]}"; do
  out="$dir/callgrind.out"
  rm -f "$out"*
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out.%p" \
    "$bin" --config "$dir/edge.yaml" > "$dir/measured.log" 2>&1 &
  pid=$!
  pids+=($pid)
  up 127.0.0.1:28080
  h2load --h1 -n 2000 -c 8 "http://127.0.0.1:28080$path" > /dev/null
  callgrind_control -i on $pid > /dev/null 2>&1
  done_line=$(h2load --h1 -n "$n" -c 8 "http://127.0.0.1:28080$path" | grep -E '^requests:')
  callgrind_control -i off $pid > /dev/null 2>&1
  callgrind_control -d $pid > /dev/null 2>&1
  sleep 1
  total=$(cat "$out".* | awk '/^totals:/ { s += $2 } END { print s + 0 }')
  kill $pid
  wait $pid 2>/dev/null || true
  case "$done_line" in
    *"$n succeeded"*) ;;
    *) echo "instructions.sh: not every request succeeded: $done_line" >&2; exit 1 ;;
  esac
  printf '%-60s %8d\n' "$bin" $((total / n))
done
