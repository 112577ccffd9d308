#!/usr/bin/env bash
# Ingest benchmark, side by side, on one machine:
#   1. the service (release build, group commit) driven by `iotpay-notify bench` at concurrency C;
#   2. pgbench running what a one-transaction-per-notification receiver would do, at the same C;
# then both rates, their ratio, and the service's peak RSS.
#
# Usage: scripts/bench.sh [CONCURRENCY=64] [COUNT=30000]
# Env:   BENCH_SERVER  Postgres server URL without database (default postgres://postgres@127.0.0.1:5432)
#        PGBENCH_SECS  pgbench duration (default 15)
set -euo pipefail
cd "$(dirname "$0")/.."

C="${1:-64}"
N="${2:-30000}"
SERVER="${BENCH_SERVER:-postgres://postgres@127.0.0.1:5432}"
SECS="${PGBENCH_SECS:-15}"
DB="iotpay_bench_$$"
PORT="${BENCH_PORT:-18080}"
PGBENCH="$(command -v pgbench || ls -d /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -n 1)"
[ -x "$PGBENCH" ] || { echo "pgbench not found (install the postgresql package)" >&2; exit 1; }

SERVE_PID=""
cleanup() {
    [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null || true
    psql "$SERVER/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

cargo build --release --quiet --bin iotpay-notify
BIN=target/release/iotpay-notify
psql "$SERVER/postgres" -qc "CREATE DATABASE $DB" >/dev/null

# The confirmation worker runs as in production, but its queries go to a closed local port (they
# fail at once and the event is rescheduled): nothing leaves the machine, and the ingest figures
# include the worker's claims and decisions competing for the same database.
export DATABASE_URL="$SERVER/$DB" IOTPAY_MERCHANTS="10000701:BENCHKEY000000000000000000000000" \
       LISTEN_ADDR="127.0.0.1:$PORT" RUST_LOG=warn DATABASE_MAX_CONNECTIONS="${DATABASE_MAX_CONNECTIONS:-16}" \
       IOTPAY_V3_API_URL="${IOTPAY_V3_API_URL:-http://127.0.0.1:9/v3}" IOTPAY_V2_API_URL="${IOTPAY_V2_API_URL:-http://127.0.0.1:9/v2}"
$BIN serve >"/tmp/iotpay-bench-serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done

echo "== service: iotpay-notify bench -c $C -n $N (load: $(cut -d' ' -f1-3 /proc/loadavg))"
$BIN bench --url "http://127.0.0.1:$PORT" -c "$C" -n "$N" --json >/tmp/iotpay-bench.json
python3 - <<'PY'
import json
r = json.load(open("/tmp/iotpay-bench.json"))
l = r["latency_ms"]
print(f"  {r['throughput']:.0f} notifications/s; latency ms p50 {l['p50']:.2f} p90 {l['p90']:.2f} p99 {l['p99']:.2f} max {l['max']:.2f}; answers {r['statuses']}")
PY
RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$SERVE_PID/status")
kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true; SERVE_PID=""

echo "== pgbench: one transaction per notification, -c $C -T $SECS"
PG_OUT=$("$PGBENCH" -n -c "$C" -j 2 -T "$SECS" -f scripts/pgbench-one-tx.sql "$SERVER/$DB" 2>&1)
PG_TPS=$(echo "$PG_OUT" | awk -F'= ' '/^tps/ {print $2+0; exit}')
echo "$PG_OUT" | grep -E "latency average|^tps" | sed 's/^/  /'
# The same without the table's triggers (session_replication_role = replica skips them): the
# pending-event NOTIFY serializes commits of one-event transactions, so this stricter baseline is
# what plain WAL flushing allows, and the headline ratio is taken against the higher of the two.
echo "== pgbench: the same, triggers off (no NOTIFY), -c $C -T $SECS"
PG_OUT=$(PGOPTIONS="-c session_replication_role=replica" "$PGBENCH" -n -c "$C" -j 2 -T "$SECS" \
    -f scripts/pgbench-one-tx.sql "$SERVER/$DB" 2>&1)
PG_TPS_NT=$(echo "$PG_OUT" | awk -F'= ' '/^tps/ {print $2+0; exit}')
echo "$PG_OUT" | grep -E "latency average|^tps" | sed 's/^/  /'

python3 - "$PG_TPS" "$RSS_KB" "$PG_TPS_NT" <<'PY'
import json, sys
r = json.load(open("/tmp/iotpay-bench.json"))
pg, rss, pg_nt = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
print("== summary")
print(f"  service ingest        {r['throughput']:8.0f} /s")
print(f"  pgbench one-tx/notif  {pg:8.0f} /s  (schema as is, NOTIFY per transaction)")
print(f"  pgbench, triggers off {pg_nt:8.0f} /s  (WAL flushing only)")
print(f"  ratio                 {r['throughput'] / max(pg, pg_nt):8.2f} x  (vs the higher pgbench rate)")
print(f"  service p99           {r['latency_ms']['p99']:8.2f} ms")
print(f"  service peak RSS      {rss / 1024:8.1f} MiB")
PY
