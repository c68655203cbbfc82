#!/usr/bin/env bash
# Habilitation benchmark on PostgreSQL with generated data: N professionals, N patients and 10 N
# relationships (default N = 1,000,000: 10,000,000 relationships). Measures
#  - in-process decision latency (relationship lookups + Cedar), p50/p99;
#  - the decision API over HTTP (POST /access/v1/evaluation), server on CPU 0, wrk on CPU 1;
#  - token issuance with two patient_access details vs a plain token (RFC 8693 exchanges of a
#    subject token with and without details: the same endpoint, the same signing, only the
#    habilitation evaluation differs).
#
# Usage: bench/habilitations.sh [PROFESSIONALS] [SECONDS]   (KEEP_SCHEMA=1 keeps the data)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000000}"
duration="${2:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/habilis-bench-target}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet -p habilis-idp --bin habilis
(cd bench && cargo build --release --quiet --bin habilitation)
bin="$CARGO_TARGET_DIR/release/habilis"
helper="$CARGO_TARGET_DIR/release/habilitation"
data="$(mktemp -d)"
port=18091
base="http://127.0.0.1:$port"
schema="${SCHEMA:-habbench_$n}"
psql_() { psql -q -h 127.0.0.1 -U postgres -d test -v ON_ERROR_STOP=1 "$@"; }
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  rm -rf "$data"
  if [ -z "${KEEP_SCHEMA:-}" ]; then psql_ -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null; fi
}
trap cleanup EXIT
export HABILIS_DATA_DIR="$data" HABILIS_SERVER__LISTEN="127.0.0.1:$port" HABILIS_LOG__LEVEL=warn
export HABILIS_STORAGE__DATABASE_URL="postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D$schema"
export HABILIS_CARD__MODE=off
# A fixed master key: the signing keys stored with a kept schema (KEEP_SCHEMA=1) stay readable.
export HABILIS_KEYS__MASTER_KEY="AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

fresh=0
if ! psql_ -tAc "SELECT 1 FROM information_schema.tables WHERE table_schema = '$schema' AND table_name = 'relationships'" | grep -q 1; then
  fresh=1
  psql_ -c "CREATE SCHEMA $schema" >/dev/null
fi
"$bin" migrate >/dev/null
if [ "$fresh" = 1 ] || [ "$(psql_ -tAc "SELECT count(*) FROM $schema.patients")" != "$n" ]; then
  echo "generating $n professionals, $n patients, $((n * 10)) relationships…"
  start=$(date +%s)
  psql_ <<SQL
SET search_path = $schema;
SET session_replication_role = replica; -- bulk load: foreign keys are consistent by construction
TRUNCATE relationships, patients, professionals CASCADE;
DELETE FROM accounts WHERE kind = 'professional' AND id LIKE 'p%';
INSERT INTO accounts (id, kind, login, id_nat, email, given_name, family_name, status, locale, created_at, updated_at)
  SELECT 'p' || i, 'professional', '8' || lpad(i::text, 11, '0'), '8' || lpad(i::text, 11, '0'), NULL, 'Given', 'Family' || i,
         'active', NULL, 0, 0 FROM generate_series(0, $n - 1) AS i;
INSERT INTO patients (id, ins_value, ins_oid, local_id, namespace, account_id, created_at)
  SELECT 'q' || j, '1' || lpad(j::text, 12, '0') || lpad((97 - ((1000000000000 + j) % 97))::text, 2, '0'),
         '1.2.250.1.213.1.4.8', NULL, NULL, NULL, 0 FROM generate_series(0, $n - 1) AS j;
DROP INDEX IF EXISTS relationships_professional_patient;
DROP INDEX IF EXISTS relationships_patient;
INSERT INTO relationships (id, professional_id, patient_id, kind, organisation_id, valid_from, valid_until, status,
                           source_client, source_actor, evidence, created_at, updated_at, revoked_at, revoked_by)
  SELECT 'r' || i || '_' || k, 'p' || i, 'q' || ((i * 7 + k) % $n), 'treating', NULL, 0, NULL, 'active',
         'bench', 'client:bench', '{}', 0, 0, NULL, NULL
  FROM generate_series(0, $n - 1) AS i, generate_series(0, 9) AS k;
CREATE INDEX relationships_professional_patient ON relationships (professional_id, patient_id);
CREATE INDEX relationships_patient ON relationships (patient_id);
ANALYZE;
SQL
  echo "generated in $(( $(date +%s) - start )) s"
fi
psql_ -tAc "SELECT 'rows: ' || (SELECT count(*) FROM $schema.accounts) || ' accounts, ' || (SELECT count(*) FROM $schema.patients) || ' patients, ' || (SELECT count(*) FROM $schema.relationships) || ' relationships'"

secret="bench-secret-0123456789-0123456789-0123456789"
cat > "$data/clients.json" <<JSON
[{"client_id":"bench","client_secret":"$secret","redirect_uris":["http://127.0.0.1:9/cb"],
  "grant_types":["authorization_code","refresh_token","client_credentials","urn:ietf:params:oauth:grant-type:token-exchange"],
  "scope":"openid offline_access decisions","token_endpoint_auth_method":"client_secret_basic","first_party":true}]
JSON
"$bin" client import "$data/clients.json" >/dev/null
cat > "$data/profiles.json" <<JSON
[{"name":"bench-treating","kinds":["treating"],"actions":["read","write"],"datatypes":["report"],"clients":["bench"],"min_acr":"eidas1"}]
JSON
"$bin" profile put "$data/profiles.json" >/dev/null

echo "in process (CPU 0):"
taskset -c 0 "$helper" inprocess "$n" 20000

taskset -c 0 "$bin" serve >/dev/null 2>&1 &
pid=$!
until curl -sf -o /dev/null "$base/readyz"; do sleep 0.05; done
token=$(curl -s -u "bench:$secret" -d grant_type=client_credentials -d scope=decisions "$base/token" | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
report() {
  local rps p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' "$data/wrk.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$data/wrk.txt")
  non2xx=$(awk '/Non-2xx/ {print $5}' "$data/wrk.txt")
  echo "$1: ${rps} req/s, p99 ${p99}${non2xx:+, NON-2XX: $non2xx}"
}
cat > "$data/decision.lua" <<LUA
math.randomseed(42)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
local n = $n
request = function()
  local i = math.random(0, n - 1)
  local j
  if math.random() < 0.5 then j = (i * 7 + math.random(0, 9)) % n else j = math.random(0, n - 1) end
  local key = 97 - ((1000000000000 + j) % 97)
  local ins = string.format("1%012d%02d", j, key)
  local body = string.format('{"subject":{"type":"professional","id":"8%011d"},"action":{"name":"read"},' ..
    '"resource":{"type":"patient","properties":{"ins":{"value":"%s","oid":"1.2.250.1.213.1.4.8"}}},' ..
    '"context":{"acr":"eidas1"}}', i, ins)
  return wrk.format(nil, nil, nil, body)
end
LUA
echo "over HTTP (server on CPU 0, wrk on CPU 1, 32 connections, ${duration}s each):"
taskset -c 1 wrk -t1 -c32 -d"${duration}s" --latency -s "$data/decision.lua" "$base/access/v1/evaluation" > "$data/wrk.txt"
report "POST /access/v1/evaluation (half granted)"
cat > "$data/batch.lua" <<LUA
math.randomseed(7)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
local n = $n
local function ins(j)
  return string.format("1%012d%02d", j, 97 - ((1000000000000 + j) % 97))
end
request = function()
  local i = math.random(0, n - 1)
  local items = {}
  for k = 0, 9 do
    local j
    if k < 5 then j = (i * 7 + k) % n else j = math.random(0, n - 1) end
    items[#items + 1] = string.format('{"resource":{"type":"patient","properties":{"ins":{"value":"%s","oid":"1.2.250.1.213.1.4.8"}}}}', ins(j))
  end
  local body = string.format('{"subject":{"type":"professional","id":"8%011d"},"action":{"name":"read"},' ..
    '"context":{"acr":"eidas1"},"evaluations":[%s]}', i, table.concat(items, ","))
  return wrk.format(nil, nil, nil, body)
end
LUA
taskset -c 1 wrk -t1 -c32 -d"${duration}s" --latency -s "$data/batch.lua" "$base/access/v1/evaluations" > "$data/wrk.txt"
report "POST /access/v1/evaluations (10 questions about one professional per request, half granted)"
echo "  = $(awk '/Requests\/sec/ {printf "%.0f", $2 * 10}' "$data/wrk.txt") decisions/s"
curl -s -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$base/access/v1/evaluation" \
  -d "{\"subject\":{\"type\":\"professional\",\"id\":\"800000000001\"},\"action\":{\"name\":\"read\"},\"resource\":{\"type\":\"patient\",\"properties\":{\"ins\":{\"value\":\"1$(printf %012d 7)$(printf %02d $((97 - (1000000000007 % 97))))\",\"oid\":\"1.2.250.1.213.1.4.8\"}}},\"context\":{\"acr\":\"eidas1\"}}"
echo

for variant in plain details; do
  taskset -c 1 "$helper" refresh "$base" "$secret" 32 "$duration" "$variant"
done

mapfile -t subjects < <("$helper" subject_tokens)
basic=$(printf 'bench:%s' "$secret" | base64 -w0)
# Plain and detailed exchanges alternate (RUNS rounds, default 3) so that a noisy stretch of the
# machine weighs on both; the ratio is of the medians.
rates=("" "")
for run in $(seq 1 "${RUNS:-3}"); do
  for which in 0 1; do
    cat > "$data/exchange.lua" <<LUA
wrk.method = "POST"
wrk.body = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token&subject_token=${subjects[$which]}"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $basic"
LUA
    taskset -c 1 wrk -t1 -c32 -d"${duration}s" --latency -s "$data/exchange.lua" "$base/token" > "$data/wrk.txt"
    if [ "$which" = 0 ]; then report "token exchange, plain token (run $run)"; else report "token exchange, two patient_access details (run $run)"; fi
    rates[$which]="${rates[$which]} $(awk '/Requests\/sec/ {print $2}' "$data/wrk.txt")"
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
plain=$(echo "${rates[0]}" | median)
detailed=$(echo "${rates[1]}" | median)
echo "token exchange medians: plain $plain req/s, two details $detailed req/s -> cost ratio $(awk -v p="$plain" -v d="$detailed" 'BEGIN {printf "%.2f", p / d}') (target <= 1.5)"
