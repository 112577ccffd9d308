#!/usr/bin/env bash
# Fuzzes the admin API of a running service from its own OpenAPI document with schemathesis
# (https://schemathesis.readthedocs.io/). Optional: not part of `cargo test`.
#   ADMIN_URL=http://127.0.0.1:8081 ADMIN_TOKEN=... scripts/schemathesis.sh
# Needs Python 3; installs schemathesis into a throwaway virtualenv. It sends many requests,
# redrives included: point it at a development database only. GET /api/v1/orders/...?wait=N
# long-polls for up to 30 s by design, hence the 35 s timeouts.
set -euo pipefail
: "${ADMIN_TOKEN:?set ADMIN_TOKEN to one of the ADMIN_TOKENS of the service}"
url="${ADMIN_URL:-http://127.0.0.1:8081}"
venv="$(mktemp -d)"
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install -q schemathesis
"$venv/bin/schemathesis" run "$url/api/v1/openapi.json" \
    --header "Authorization: Bearer $ADMIN_TOKEN" \
    --url "$url" \
    --checks all \
    --request-timeout 35 --max-response-time 35 \
    "$@"
