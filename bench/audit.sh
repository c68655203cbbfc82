#!/usr/bin/env bash
# The durable audit log's cost on the token hot path (issue 10): client_credentials requests/s
# with `audit.durable` on and off, the server pinned to CPU 0 and wrk (32 connections, a Lua
# script POSTing the form with Basic auth) to CPU 1, loopback only, bounded in time.
#
# Runs alternate ON, OFF, ON, OFF… (RUNS of each, default 2), the server restarted for each, so
# that drift (other work on the machine, a warming page cache, a growing table) hits both sides
# alike; the script prints each run, the median of each side and the ratio ON/OFF (target ≥ 0.9).
# After every run it counts the rows the server added to audit_records: with the log on, at
# least one per token wrk received (each issuance is one `token_issued` record); with it off,
# none. At the end `habilis audit verify` checks the chain the ON runs wrote.
#
# Usage: [STORAGE=sqlite|postgres] [RUNS=2] bench/audit.sh [SECONDS]
#   STORAGE=postgres: PostgreSQL at 127.0.0.1:5432 (user postgres, db test), in a fresh schema
#   dropped at the end (KEEP_SCHEMA=1 keeps it). Needs wrk, and sqlite3 or psql to count rows.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10}"
storage="${STORAGE:-sqlite}"
runs="${RUNS:-2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/habilis-bench-target}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
case "$storage" in
  sqlite) command -v sqlite3 >/dev/null || { echo "sqlite3 is missing: apt-get install sqlite3" >&2; exit 1; } ;;
  postgres) command -v psql >/dev/null || { echo "psql is missing: apt-get install postgresql-client" >&2; exit 1; } ;;
  *) echo "STORAGE must be sqlite or postgres, not $storage" >&2; exit 2 ;;
esac
cargo build --release --quiet -p habilis-idp --bin habilis
bin="$CARGO_TARGET_DIR/release/habilis"
data="$(mktemp -d)"
port=18092
base="http://127.0.0.1:$port"
schema=""
psql_() { psql -q -h 127.0.0.1 -U postgres -d test -v ON_ERROR_STOP=1 "$@"; }
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  rm -rf "$data"
  if [ -n "$schema" ] && [ -z "${KEEP_SCHEMA:-}" ]; then psql_ -c "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null; fi
}
trap cleanup EXIT

export HABILIS_DATA_DIR="$data" HABILIS_SERVER__LISTEN="127.0.0.1:$port" HABILIS_LOG__LEVEL=warn
# Card login (demo PKI, second listener) has nothing to do with this measure.
export HABILIS_CARD__MODE=off
if [ "$storage" = postgres ]; then
  schema="audbench_$(date +%s)"
  psql_ -c "CREATE SCHEMA $schema" >/dev/null
  export HABILIS_STORAGE__DATABASE_URL="postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D$schema"
fi
count_records() {
  if [ "$storage" = postgres ]; then
    psql_ -tAc "SELECT count(*) FROM $schema.audit_records"
  else
    sqlite3 "$data/habilis.db" "SELECT count(*) FROM audit_records"
  fi
}

secret="bench-secret-0123456789-0123456789-0123456789"
cat > "$data/clients.json" <<JSON
[{"client_id":"bench","client_secret":"$secret","redirect_uris":["http://127.0.0.1:9/cb"],
  "grant_types":["client_credentials"],"scope":"api","token_endpoint_auth_method":"client_secret_basic"}]
JSON
"$bin" client import "$data/clients.json" >/dev/null
basic=$(printf 'bench:%s' "$secret" | base64 -w0)
cat > "$data/token.lua" <<LUA
wrk.method = "POST"
wrk.body = "grant_type=client_credentials&scope=api"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $basic"
LUA

start_server() { # durable: true|false
  HABILIS_AUDIT__DURABLE="$1" taskset -c 0 "$bin" serve >"$data/serve.log" 2>&1 &
  pid=$!
  until curl -sf -o /dev/null "$base/readyz"; do
    if ! kill -0 "$pid" 2>/dev/null; then echo "the server did not start:" >&2; cat "$data/serve.log" >&2; exit 1; fi
    sleep 0.05
  done
}
stop_server() { # SIGTERM: the server drains the audit queue and writes a last checkpoint first
  kill -TERM "$pid"
  wait "$pid" || true
  pid=""
}
wrk_run() { # seconds → $data/wrk.txt
  taskset -c 1 wrk -t1 -c32 -d"${1}s" --latency -s "$data/token.lua" "$base/token" > "$data/wrk.txt"
}

# One unmeasured start: first-start work (signing key generation) and cold caches stay out.
start_server true
wrk_run 2
stop_server

echo "storage: $storage; server on CPU 0, wrk on CPU 1 (32 connections), ${duration}s per run, $runs runs each"
on_rates=()
off_rates=()
failed=0
for run in $(seq 1 "$runs"); do
  for durable in true false; do
    before=$(count_records)
    start_server "$durable"
    wrk_run "$duration"
    stop_server
    added=$(( $(count_records) - before ))
    rps=$(awk '/Requests\/sec/ {print $2}' "$data/wrk.txt")
    p99=$(awk '$1 == "99%" {print $2}' "$data/wrk.txt")
    requests=$(awk '/requests in/ {print $1}' "$data/wrk.txt")
    non2xx=$(awk '/Non-2xx/ {print $5}' "$data/wrk.txt")
    if [ "$durable" = true ]; then label=ON; on_rates+=("$rps"); else label=OFF; off_rates+=("$rps"); fi
    # wrk counts the answers it received; requests in flight when it stopped may have been served
    # (and audited) too: at most one per connection.
    check="ok"
    if [ -n "$non2xx" ]; then check="NON-2XX: $non2xx"; failed=1; fi
    if [ "$durable" = true ] && { [ "$added" -lt "$requests" ] || [ "$added" -gt $((requests + 64)) ]; }; then
      check="MISMATCH: $added records for $requests tokens"; failed=1
    fi
    if [ "$durable" = false ] && [ "$added" -ne 0 ]; then check="MISMATCH: $added records with the log off"; failed=1; fi
    printf 'run %d audit %-3s: %10s req/s, p99 %8s, %8s tokens, %8s records added (%s)\n' \
      "$run" "$label" "$rps" "$p99" "$requests" "$added" "$check"
  done
done

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
on=$(median "${on_rates[@]}")
off=$(median "${off_rates[@]}")
ratio=$(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.3f", a / b }')
echo "median client_credentials req/s: audit ON $on, audit OFF $off; ratio ON/OFF $ratio (target >= 0.9)"
echo "audit log after the runs: $(count_records) records; $("$bin" audit verify 2>&1 | tail -1)"
exit "$failed"
