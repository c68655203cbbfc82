#!/usr/bin/env bash
# Load test of the OIDC endpoints: client_credentials, introspection, userinfo (wrk), refresh-token
# rotation and full code flows (bench/src/bin/loadgen.rs). The server is pinned to CPU 0, the load
# to CPU 1, 32 connections, loopback only, bounded in time.
#
# Usage: bench/oidc.sh [sqlite|postgres] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
backend="${1:-sqlite}"
duration="${2:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/habilis-bench-target}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet -p habilis-idp --bin habilis
(cd bench && cargo build --release --quiet --bin loadgen)
bin="$CARGO_TARGET_DIR/release/habilis"
loadgen="$CARGO_TARGET_DIR/release/loadgen"
data="$(mktemp -d)"
port=18090
base="http://127.0.0.1:$port"
pid=""
trap 'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; rm -rf "$data"' EXIT

export HABILIS_DATA_DIR="$data" HABILIS_SERVER__LISTEN="127.0.0.1:$port" HABILIS_LOG__LEVEL=warn
if [ "$backend" = postgres ]; then
  schema="bench_$(date +%s)"
  psql -q -h 127.0.0.1 -U postgres -d test -c "CREATE SCHEMA $schema" >/dev/null
  export HABILIS_STORAGE__DATABASE_URL="postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D$schema"
  trap 'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; rm -rf "$data"; psql -q -h 127.0.0.1 -U postgres -d test -c "DROP SCHEMA $schema CASCADE" >/dev/null' EXIT
fi
secret="bench-secret-0123456789-0123456789-0123456789"
cat > "$data/clients.json" <<JSON
[{"client_id":"bench","client_secret":"$secret","redirect_uris":["http://127.0.0.1:9/cb"],
  "grant_types":["authorization_code","refresh_token","client_credentials"],"scope":"openid profile email offline_access api",
  "token_endpoint_auth_method":"client_secret_basic","first_party":true}]
JSON
"$bin" client import "$data/clients.json" >/dev/null
password="bench password long enough"
# Patient accounts bench0@… bench699@… (second factor by email code, read back from the outbox):
# 0–31 for the refresh workers, the rest one per code flow (the email-code throttle allows one code
# a minute per account). Created through SQL-free CLI calls, each hashing its password once.
accounts=${ACCOUNTS:-700}
for i in $(seq 0 $((accounts - 1))); do
  echo "$password" | "$bin" user add --kind patient --email "bench$i@example.org" --password-stdin >/dev/null
done
export OUTBOX="$data/outbox"
taskset -c 0 "$bin" serve >/dev/null 2>&1 &
pid=$!
until curl -sf -o /dev/null "$base/readyz"; do sleep 0.05; done

basic=$(printf 'bench:%s' "$secret" | base64 -w0)
lua="$data/post.lua"
post() { # path body [extra header]
  cat > "$lua" <<LUA
wrk.method = "POST"
wrk.body = "$2"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $basic"
LUA
  taskset -c 1 wrk -t1 -c32 -d"${duration}s" --latency -s "$lua" "$base$1" > "$data/wrk.txt"
  report "$1" "$2"
}
report() {
  local rps p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' "$data/wrk.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$data/wrk.txt")
  non2xx=$(awk '/Non-2xx/ {print $5}' "$data/wrk.txt")
  echo "$1 ($2): ${rps} req/s, p99 ${p99}${non2xx:+, NON-2XX: $non2xx}"
}
echo "backend: $backend; server on CPU 0, load on CPU 1, 32 connections, ${duration}s each"
post /token "grant_type=client_credentials&scope=api"
token=$(curl -s -u "bench:$secret" -d grant_type=client_credentials -d scope=api "$base/token" | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
post /introspect "token=$token"
# A user access token for userinfo, from one code flow.
user_token=$(FIRST_ACCOUNT=32 taskset -c 1 "$loadgen" print_access_token "$base" bench "$secret" "bench{}@example.org" "$password")
cat > "$lua" <<LUA
wrk.headers["Authorization"] = "Bearer $user_token"
LUA
taskset -c 1 wrk -t1 -c32 -d"${duration}s" --latency -s "$lua" "$base/userinfo" > "$data/wrk.txt"
report /userinfo "GET, Bearer"
taskset -c 1 "$loadgen" refresh "$base" bench "$secret" "bench{}@example.org" "$password" 32 "$duration"
FIRST_ACCOUNT=33 taskset -c 1 "$loadgen" code_flow "$base" bench "$secret" "bench{}@example.org" "$password" 8 "$duration"
