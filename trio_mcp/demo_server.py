"""A small MCP server to try trio_mcp with (built with the SDK's ``MCPServer``, run under trio).

Run it over stdio (the default) or streamable HTTP (served by hypercorn's trio worker)::

    python -m trio_mcp.demo_server --name primary
    python -m trio_mcp.demo_server --name backup --http 8001     # http://127.0.0.1:8001/mcp

Tools: ``echo(text)``, ``add(a, b)``, ``sleep(seconds)``, ``whoami()``, ``pid()`` and
``charge(amount)``, a side effect: when ``TRIO_MCP_DEMO_LEDGER`` names a file, every charge appends
a line to it. Resource ``demo://readme``; prompt ``greet(name)``.

``--spawn-child`` starts a long-sleeping child process at startup (to check that a manager
cleans up a server's whole process group); its pid goes to stderr and, when
``TRIO_MCP_DEMO_CHILD_PIDFILE`` is set, to that file.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from functools import partial

import trio
from mcp.server.mcpserver import MCPServer

LEDGER_ENV = "TRIO_MCP_DEMO_LEDGER"
CHILD_PIDFILE_ENV = "TRIO_MCP_DEMO_CHILD_PIDFILE"


def build_server(server_name: str = "demo") -> MCPServer:
    """The demo server called ``server_name`` (its ``serverInfo.name`` and ``whoami()`` answer)."""
    server = MCPServer(server_name, instructions=f"The trio_mcp demo server {server_name!r}.")

    @server.tool(description="Echo the text back.")
    async def echo(text: str) -> str:
        return text

    @server.tool(description="Add two integers.")
    async def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Sleep for a number of seconds, then answer.")
    async def sleep(seconds: float) -> str:
        await trio.sleep(seconds)
        return f"slept {seconds:g}"

    @server.tool(description="The name of this server.")
    async def whoami() -> str:
        return server_name

    @server.tool(description="The process id of this server.")
    async def pid() -> int:
        return os.getpid()

    @server.tool(description="Charge an amount. A side effect: never run it twice.")
    async def charge(amount: int) -> str:
        ledger = os.environ.get(LEDGER_ENV)
        if ledger:
            async with await trio.open_file(ledger, "a") as f:
                await f.write(f"{server_name} {amount}\n")
        return f"{server_name} charged {amount}"

    @server.resource("demo://readme", description="What this server is.")
    async def readme() -> str:
        return f"This is {server_name}, a trio_mcp demo server."

    @server.prompt(description="Greet someone.")
    async def greet(name: str) -> str:
        return f"Please greet {name} warmly."

    return server


async def serve_http(
    server: MCPServer,
    port: int,
    host: str = "127.0.0.1",
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``server`` over streamable HTTP at ``http://host:port/mcp`` until cancelled.

    ``task_status.started()`` receives the bound addresses once the socket listens.
    """
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.5
    app = server.streamable_http_app(host=host)
    await serve(app, config, task_status=task_status)  # type: ignore[arg-type]


def spawn_child() -> subprocess.Popen[bytes]:
    """Start a long-sleeping child process and announce its pid."""
    child = subprocess.Popen(
        ["sleep", "1000"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    print(f"demo_server: spawned child pid {child.pid}", file=sys.stderr, flush=True)
    pidfile = os.environ.get(CHILD_PIDFILE_ENV)
    if pidfile:
        with open(pidfile, "w") as f:
            f.write(f"{child.pid}\n")
    return child


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m trio_mcp.demo_server", description="A small MCP server to try trio_mcp with."
    )
    parser.add_argument("--name", default="demo", help="the server's name (default: demo)")
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on PORT (path /mcp)")
    parser.add_argument("--host", default="127.0.0.1", help="the HTTP host to bind (default: 127.0.0.1)")
    parser.add_argument("--spawn-child", action="store_true", help="start a long-sleeping child process")
    args = parser.parse_args(argv)

    server = build_server(args.name)
    if args.spawn_child:
        spawn_child()
    try:
        if args.http is not None:
            trio.run(partial(serve_http, server, args.http, args.host))
        else:
            trio.run(server.run_stdio_async)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
