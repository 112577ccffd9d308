#!/usr/bin/env bash
# End-to-end benchmark, on one machine: the service (release build) against a fresh database,
# with `iotpay-notify bench --pipeline` playing IOTPay's query API (sandbox) and the forwarding
# endpoint (sink). Measures notification sent -> confirmed -> delivered: events/s and latency
# percentiles, plus the service's peak RSS.
#
# Usage: scripts/bench-pipeline.sh [CONCURRENCY=64] [EVENTS=10000]
# Env:   BENCH_SERVER  Postgres server URL without database (default postgres://postgres@127.0.0.1:5432)
#        BENCH_PORT, SANDBOX_PORT, SINK_PORT  (defaults 18080, 18090, 18099)
#        Service knobs are passed through (CONFIRM_CONCURRENCY, FORWARD_CONCURRENCY_PER_ENDPOINT,
#        DATABASE_MAX_CONNECTIONS, INGEST_BATCH_*, ...).
set -euo pipefail
cd "$(dirname "$0")/.."

C="${1:-64}"
N="${2:-10000}"
SERVER="${BENCH_SERVER:-postgres://postgres@127.0.0.1:5432}"
DB="iotpay_pipeline_$$"
PORT="${BENCH_PORT:-18080}"
SANDBOX="127.0.0.1:${SANDBOX_PORT:-18090}"
SINK="127.0.0.1:${SINK_PORT:-18099}"

SERVE_PID=""
cleanup() {
    [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null || true
    [ -n "${KEEP_DB:-}" ] && echo "kept database $DB" >&2 && return 0
    psql "$SERVER/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

cargo build --release --quiet --bin iotpay-notify
BIN=target/release/iotpay-notify
psql "$SERVER/postgres" -qc "CREATE DATABASE $DB" >/dev/null

# A throwaway secret for this run only (32 random bytes).
FORWARD_SECRET="whsec_$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
export DATABASE_URL="$SERVER/$DB" IOTPAY_MERCHANTS="10000701:BENCHKEY000000000000000000000000" \
       LISTEN_ADDR="127.0.0.1:$PORT" RUST_LOG="${RUST_LOG:-warn}" FORWARD_SECRET \
       IOTPAY_V3_API_URL="http://$SANDBOX/v3" IOTPAY_V2_API_URL="http://$SANDBOX/v2" \
       FORWARD_URLS="http://$SINK/webhook"
$BIN serve >"/tmp/iotpay-pipeline-serve.log" 2>&1 &
SERVE_PID=$!

echo "== pipeline: iotpay-notify bench --pipeline -c $C -n $N (load: $(cut -d' ' -f1-3 /proc/loadavg))"
$BIN bench --pipeline --url "http://127.0.0.1:$PORT" -c "$C" -n "$N" --repeat-share 0.1 \
    --sandbox-listen "$SANDBOX" --sink-listen "$SINK" --json >/tmp/iotpay-pipeline.json
RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$SERVE_PID/status")
python3 - "$RSS_KB" <<'PY'
import json, sys
r = json.load(open("/tmp/iotpay-pipeline.json"))
i, l = r["ingest"], r["ingest"]["latency_ms"]
fmt = lambda p: f"p50 {p['p50']:.1f} p90 {p['p90']:.1f} p99 {p['p99']:.1f} max {p['max']:.1f}"
print(f"  ingest       {i['requests']} requests, {i['throughput']:.0f}/s; latency ms {fmt(l)}; answers {i['statuses']}")
print(f"  pipeline     {r['delivered']} of {r['events']} events delivered in {r['elapsed_secs']:.2f} s = {r['events_per_sec']:.0f} events/s")
print(f"  sent->delivered  ms {fmt(r['sent_to_delivered_ms'])}")
if r.get("sent_to_confirmed_ms"):
    print(f"  sent->confirmed  ms {fmt(r['sent_to_confirmed_ms'])}")
    print(f"  confirmed->deliv ms {fmt(r['confirmed_to_delivered_ms'])}")
    print(f"  event statuses   {r['statuses']}")
print(f"  repeat deliveries {r['repeat_deliveries']}")
print(f"  service peak RSS {int(sys.argv[1]) / 1024:.1f} MiB")
PY
