"""The echo server ``bench/invoke_overhead.py`` measures against: one tool, ``echo(text)``.

In process, :func:`build_server` is the server itself. As a subprocess it speaks MCP over stdio
(the default) or, with ``--http PORT``, streamable HTTP at ``http://127.0.0.1:PORT/mcp`` (served
by hypercorn's trio worker, as ``trio_mcp.demo_server --http`` does); ``--http 0`` binds a free
port and writes the bound URL as the first line of stdout, once the socket listens::

    python bench/_echo_server.py
    python bench/_echo_server.py --http 0

``--cpu N`` runs it on CPU ``N`` only (``invoke_overhead.py --pin`` keeps the servers off the
CPU its callers run on).
"""

from __future__ import annotations

import argparse
import os
import sys

import trio
from mcp.server.mcpserver import MCPServer

from trio_mcp.demo_server import serve_http


def build_server() -> MCPServer:
    """The echo server, named ``bench``. It logs warnings and worse only, so that nothing it
    logs (nor the HTTP client's request lines, in the process it is built in) costs a call."""
    server = MCPServer("bench", log_level="WARNING")

    @server.tool()
    async def echo(text: str) -> str:
        return text

    return server


async def _serve_http(server: MCPServer, port: int) -> None:
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(serve_http, server, port)
        print(f"{binds[0]}/mcp", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on PORT (0: any)")
    parser.add_argument("--cpu", type=int, metavar="N", help="run on CPU N only")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    server = build_server()
    try:
        if args.http is not None:
            trio.run(_serve_http, server, args.http)
        else:
            trio.run(server.run_stdio_async)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
