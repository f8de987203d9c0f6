"""The demo server (``trio_mcp.demo_server``) over streamable HTTP, run the way the SDK runs a
server itself: ``MCPServer.run("streamable-http")``, that is uvicorn, with its logging at
WARNING (no access log). ``python bench/_uvicorn_backend.py PORT [--host HOST] [--name NAME]``.

A backend for the benchmarks beside ``python -m trio_mcp.demo_server --http PORT`` (hypercorn's
trio worker): the same server behind the HTTP stack most deployed SDK servers use.
"""

from __future__ import annotations

import argparse

from trio_mcp.demo_server import build_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", default="demo")
    args = parser.parse_args()
    server = build_server(args.name)
    server.settings.log_level = "WARNING"
    server.run("streamable-http", host=args.host, port=args.port)


if __name__ == "__main__":
    main()
