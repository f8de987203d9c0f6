#!/usr/bin/env bash
# Schemathesis against a real `trio-mcp serve` on the default fleet, with a token: every
# operation, every check, a fixed seed, then the stateful phase (register -> get -> invoke ->
# delete through the document's links). Prints the totals; fails on any failure.
# Usage: .ci/schemathesis.sh [SEED] [MAX_EXAMPLES]
set -euo pipefail
cd "$(dirname "$0")/.."
seed="${1:-20261127}"
examples="${2:-30}"
port="$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
token="schemathesis-$$"
workdir="$(mktemp -d)"
.venv/bin/trio-mcp serve --port "$port" --token "$token" >"$workdir/serve.log" 2>&1 &
serve=$!
cleanup() {
    kill -TERM "$serve" 2>/dev/null || true
    wait "$serve" 2>/dev/null || true
    [ -n "${KEEP_REPORT:-}" ] || rm -rf "$workdir"
}
trap cleanup EXIT
status=0
.venv/bin/schemathesis --config-file .ci/schemathesis.toml run "http://127.0.0.1:$port/openapi.json" \
    --wait-for-schema 30 \
    -H "Authorization: Bearer $token" \
    --checks all --seed "$seed" --max-examples "$examples" --workers 1 --no-color \
    --report ndjson --report-dir "$workdir/report" >"$workdir/run.log" 2>&1 || status=$?
sed -n '/SUMMARY/,$p' "$workdir/run.log"
.venv/bin/python - "$workdir/report" <<'PY'
import json, pathlib, sys
counts = {"requests": 0, "server errors (500)": 0, "503/504 from an MCP server": 0}
for path in pathlib.Path(sys.argv[1]).glob("*.ndjson"):
    for line in path.read_text().splitlines():
        text = line
        for status in __import__("re").findall(r'"status_code": ?(\d{3})', text):
            counts["requests"] += 1
            if status == "500":
                counts["server errors (500)"] += 1
            elif status in ("503", "504"):
                counts["503/504 from an MCP server"] += 1
print("schemathesis totals:", ", ".join(f"{k}: {v}" for k, v in counts.items()))
PY
if [ "$status" -ne 0 ]; then
    cat "$workdir/run.log"
    echo "--- trio-mcp serve ---"
    tail -50 "$workdir/serve.log"
fi
exit "$status"
