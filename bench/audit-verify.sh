#!/usr/bin/env bash
# Verification speed of the durable audit log (issue 10): generates RECORDS hash-chained records
# (default 10,000,000) with a signed checkpoint every million (bench/src/bin/auditgen.rs, through
# the store's own append), then times `habilis audit verify` on them and reports records/s.
#
# Usage: [STORAGE=sqlite|postgres] [VERIFY_RUNS=1] [KEEP_DATA=1] bench/audit-verify.sh [RECORDS]
#   sqlite (default): a data dir under /var/tmp (about 0.6 GB per million records). With
#   KEEP_DATA=1 it is kept (its path is printed) and reused by the next run with DATA=that path.
#   postgres: the schema audverify_RECORDS at 127.0.0.1:5432 (user postgres, db test), dropped at
#   the end unless KEEP_DATA=1, reused when it already holds RECORDS records.
# The verification runs on every core, reading from the database while hashing; the database
# file or tables are usually in the page cache right after generation (said as measured).
set -euo pipefail
cd "$(dirname "$0")/.."
records="${1:-10000000}"
storage="${STORAGE:-sqlite}"
verify_runs="${VERIFY_RUNS:-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/habilis-bench-target}"
cargo build --release --quiet -p habilis-idp --bin habilis
(cd bench && cargo build --release --quiet --bin auditgen)
bin="$CARGO_TARGET_DIR/release/habilis"
generator="$CARGO_TARGET_DIR/release/auditgen"
data="${DATA:-$(mktemp -d /var/tmp/habilis-audit-verify.XXXXXX)}"
mkdir -p "$data"
schema=""
psql_() { psql -q -h 127.0.0.1 -U postgres -d test -v ON_ERROR_STOP=1 "$@"; }
cleanup() {
  if [ -n "${KEEP_DATA:-}" ]; then
    echo "kept: DATA=$data${schema:+, schema $schema}"
    return
  fi
  rm -rf "$data"
  if [ -n "$schema" ]; then psql_ -c "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null; fi
}
trap cleanup EXIT

export HABILIS_DATA_DIR="$data" HABILIS_LOG__LEVEL=warn HABILIS_CARD__MODE=off
# The generator appends itself: no writer task of its own competing for the head.
export HABILIS_AUDIT__DURABLE=false
case "$storage" in
  sqlite)
    count_records() { sqlite3 "$data/habilis.db" "SELECT count(*) FROM audit_records" 2>/dev/null || echo 0; }
    size() { du -sh "$data/habilis.db" | cut -f1; }
    ;;
  postgres)
    schema="audverify_$records"
    psql_ -c "CREATE SCHEMA IF NOT EXISTS $schema" >/dev/null
    export HABILIS_STORAGE__DATABASE_URL="postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D$schema"
    # A fixed master key: the checkpoint keys of a kept schema stay verifiable from another data dir.
    export HABILIS_KEYS__MASTER_KEY="AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    count_records() { psql_ -tAc "SELECT count(*) FROM $schema.audit_records" 2>/dev/null || echo 0; }
    size() { psql_ -tAc "SELECT pg_size_pretty(pg_total_relation_size('$schema.audit_records'))"; }
    ;;
  *) echo "STORAGE must be sqlite or postgres, not $storage" >&2; exit 2 ;;
esac

present=$(count_records)
if [ "$present" != "$records" ]; then
  if [ "$present" != 0 ]; then echo "the log holds $present records, not $records: use a fresh DATA or schema" >&2; exit 1; fi
  echo "generating $records audit records ($storage)…"
  started=$(date +%s)
  "$generator" "$records"
  echo "generation took $(( $(date +%s) - started )) s"
else
  echo "reusing $records records already in the log"
fi
echo "audit_records: $(size) on disk"

for run in $(seq 1 "$verify_runs"); do
  started=$(date +%s%N)
  status=0
  out=$("$bin" audit verify 2>&1) || status=$?
  ended=$(date +%s%N)
  echo "verify run $run: $(printf '%s\n' "$out" | tail -1)"
  if [ "$status" != 0 ]; then echo "habilis audit verify failed (exit $status)" >&2; exit 1; fi
  awk -v n="$records" -v ns=$((ended - started)) \
    'BEGIN { printf "  wall time including process start: %.1f s, %.0f records/s\n", ns / 1e9, n / (ns / 1e9) }'
done
