#!/usr/bin/env bash
# Install the pinned reference MCP servers the integration tests run against into .tools/reference:
#   - @modelcontextprotocol/server-everything (npm)  -> .tools/reference/node_modules/.bin/mcp-server-everything
#   - mcp-server-time (PyPI), in its own virtualenv   -> .tools/reference/time-venv/bin/mcp-server-time
# Nothing is added to the project's own environment. Re-running is cheap (pinned versions are checked).
set -euo pipefail
cd "$(dirname "$0")/.."

EVERYTHING_VERSION=2026.8.31
TIME_VERSION=2026.10.19
DIR=$PWD/.tools/reference
mkdir -p "$DIR"

current=$(node -p "require('$DIR/node_modules/@modelcontextprotocol/server-everything/package.json').version" 2>/dev/null || true)
if [[ "$current" != "$EVERYTHING_VERSION" ]]; then
    echo "installing @modelcontextprotocol/server-everything@$EVERYTHING_VERSION into $DIR"
    [[ -f $DIR/package.json ]] || echo '{"name": "trio-mcp-reference-servers", "private": true}' >"$DIR/package.json"
    (cd "$DIR" && npm install --silent --no-audit --no-fund --save-exact \
        "@modelcontextprotocol/server-everything@$EVERYTHING_VERSION")
fi

current=$("$DIR/time-venv/bin/python" -c \
    "import importlib.metadata as m; print(m.version('mcp-server-time'))" 2>/dev/null || true)
if [[ "$current" != "$TIME_VERSION" ]]; then
    echo "installing mcp-server-time==$TIME_VERSION into $DIR/time-venv"
    rm -rf "$DIR/time-venv"
    python3 -m venv "$DIR/time-venv"
    "$DIR/time-venv/bin/pip" install -q "mcp-server-time==$TIME_VERSION"
fi
echo "reference servers ready in $DIR"
