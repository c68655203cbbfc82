#!/usr/bin/env bash
# Load test of the embedded server: start-to-ready time, idle RSS, then requests/s on discovery and
# JWKS with the server pinned to CPU 0 and wrk (32 connections) on CPU 1. Traffic goes to loopback
# only, is bounded in time, and the server is stopped at the end.
#
# Usage: bench/load.sh [DURATION_SECONDS]      (needs wrk: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/habilis-bench-target}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet -p habilis-idp --bin habilis
bin="$CARGO_TARGET_DIR/release/habilis"
data="$(mktemp -d)"
port=18080
base="http://127.0.0.1:$port"
pid=""
trap 'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; rm -rf "$data"' EXIT

start_server() { # starts the server, polls /readyz every millisecond; sets pid and elapsed_ms
  local t0 t1
  t0=$(date +%s%N)
  HABILIS_LOG__LEVEL=warn taskset -c 0 "$bin" serve --data-dir "$data" --listen "127.0.0.1:$port" >/dev/null 2>&1 &
  pid=$!
  until curl -sf -o /dev/null "$base/readyz"; do sleep 0.001; done
  t1=$(date +%s%N)
  elapsed_ms=$(( (t1 - t0) / 1000000 ))
}

start_server
first=$elapsed_ms
kill -TERM "$pid"; wait "$pid" || true
start_server
warm=$elapsed_ms
sleep 2
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
echo "start-to-ready: first start (empty dir, key generation) ${first} ms; later start ${warm} ms"
echo "idle RSS after start: $((rss_kb / 1024)) MiB (${rss_kb} kB)"
for path in /.well-known/openid-configuration /jwks; do
  taskset -c 1 wrk -t1 -c32 -d"${duration}s" --latency "$base$path" > /tmp/habilis-wrk.txt
  rps=$(awk '/Requests\/sec/ {print $2}' /tmp/habilis-wrk.txt)
  p99=$(awk '$1 == "99%" {print $2}' /tmp/habilis-wrk.txt)
  echo "GET $path: ${rps} requests/s, p99 ${p99} (server on 1 core, wrk 32 connections on the other)"
done
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
echo "RSS after load: $((rss_kb / 1024)) MiB"
