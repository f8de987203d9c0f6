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
.venv/bin/trio-mcp serve --port "$port" --token "$token" --state "sqlite:///$workdir/state.db" >"$workdir/serve.log" 2>&1 &
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
    --checks all --generation-database none --seed "$seed" --max-examples "$examples" --workers 1 --no-color \
    --report ndjson --report-dir "$workdir/report" >"$workdir/run.log" 2>&1 || status=$?
sed -n '/SUMMARY/,$p' "$workdir/run.log"
.venv/bin/python - "$workdir/report" <<'PY'
# Totals from the run's NDJSON events: every interaction and every check result.
import collections, json, pathlib, sys

statuses = collections.Counter()
failed = collections.Counter()
checks = 0
for path in pathlib.Path(sys.argv[1]).glob("*.ndjson"):
    for line in path.read_text().splitlines():
        event = json.loads(line).get("ScenarioFinished")
        if not event:
            continue
        recorder = event["recorder"]
        for interaction in recorder.get("interactions", {}).values():
            response = interaction.get("response") or {}
            if "status_code" in response:
                statuses[response["status_code"]] += 1
        for results in recorder.get("checks", {}).values():
            for result in results:
                checks += 1
                if result["status"] != "success":
                    failed[result["name"]] += 1
requests = sum(statuses.values())
server_errors = sum(n for status, n in statuses.items() if status >= 500 and status not in (503, 504))
print(f"schemathesis totals: {requests} requests, {checks} check results")
print(f"  server errors (5xx other than an MCP server's 503/504): {server_errors}")
print(f"  503/504 (an MCP server could not answer): {statuses[503] + statuses[504]}")
print(f"  schema violations: {failed['response_schema_conformance']}")
print(f"  failed checks: {sum(failed.values())} {dict(failed) if failed else ''}")
print("  statuses:", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))
PY
if [ "$status" -ne 0 ]; then
    cat "$workdir/run.log"
    echo "--- trio-mcp serve ---"
    tail -50 "$workdir/serve.log"
fi
exit "$status"
