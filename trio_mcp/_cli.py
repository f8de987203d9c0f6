"""The ``trio-mcp`` command.

::

    trio-mcp serve [--config servers.json] [--host 127.0.0.1] [--port 8000]
                   [--allow-stdio-registration] [--token TOKEN] [--max-body-bytes N]

Without ``--config`` it serves the demo fleet (a ``primary`` and a ``backup`` demo server
over stdio). The token may also come from ``$TRIO_MCP_TOKEN``.
"""

from __future__ import annotations

import argparse
import errno
import functools
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from ._config import ServerConfig, parse_mcp_servers
from ._default_fleet import default_fleet
from ._exceptions import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_BYTES = 1_000_000
DEFAULT_SHUTDOWN_GRACE = 5.0


def _int_in(text: str, low: int, high: int | None, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"must be {expected}, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _int_in(text, 1, None, ">= 1")


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def _port(text: str) -> int:
    return _int_in(text, 0, 65535, "0-65535")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trio-mcp", description="Manage a fleet of MCP servers.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the HTTP API (hypercorn, trio worker)")
    serve.add_argument("--config", type=Path, help="an mcpServers JSON file (default: the demo fleet)")
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    serve.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    serve.add_argument(
        "--allow-stdio-registration",
        action="store_true",
        help="let POST /servers register stdio servers (runs commands on this host)",
    )
    serve.add_argument(
        "--token",
        default=os.environ.get("TRIO_MCP_TOKEN") or None,
        help="require 'Authorization: Bearer TOKEN' (default: $TRIO_MCP_TOKEN)",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_BODY_BYTES,
        help=f"refuse larger request bodies with 413 (default {DEFAULT_MAX_BODY_BYTES})",
    )
    serve.add_argument(
        "--shutdown-grace",
        type=_non_negative_float,
        default=DEFAULT_SHUTDOWN_GRACE,
        help="seconds in-flight invocations get after SIGINT/SIGTERM before they are abandoned "
        f"(default {DEFAULT_SHUTDOWN_GRACE:g})",
    )
    return parser


def load_fleet(path: Path | None) -> list[ServerConfig]:
    """The servers in the ``mcpServers`` file at ``path``, or the demo fleet."""
    if path is None:
        return default_fleet()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    return parse_mcp_servers(text)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        servers = load_fleet(args.config)
    except ConfigError as exc:
        print(f"trio-mcp: invalid configuration: {exc}", file=sys.stderr)
        return 2

    from web.serve import serve

    async def started_message() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                functools.partial(
                    serve,
                    servers,
                    host=args.host,
                    port=args.port,
                    allow_stdio=args.allow_stdio_registration,
                    token=args.token,
                    max_body_bytes=args.max_body_bytes,
                    shutdown_grace=args.shutdown_grace,
                )
            )
            names = ", ".join(s.name for s in servers) or "none"
            print(f"trio-mcp: serving on {', '.join(binds)} (servers: {names})", file=sys.stderr, flush=True)

    try:
        trio.run(started_message)
    except BaseException as exc:
        problem = _listen_problem(exc, args.host, args.port)
        if problem is None:
            raise
        print(f"trio-mcp: {problem}", file=sys.stderr)
        return 2
    return 0


def _listen_problem(exc: BaseException, host: str, port: int) -> str | None:
    """One line saying why the server could not listen, if that is what ``exc`` (possibly a
    group, from the server's nursery) is about."""
    leaves = [exc]
    while any(isinstance(e, BaseExceptionGroup) for e in leaves):
        leaves = [x for e in leaves for x in (e.exceptions if isinstance(e, BaseExceptionGroup) else [e])]
    if len(leaves) != 1 or not isinstance(leaves[0], OSError):
        return None
    error = leaves[0]
    if isinstance(error, socket.gaierror):
        return f"cannot listen on {host}:{port}: invalid address ({error.strerror})"
    if error.errno == errno.EADDRINUSE:
        return f"cannot listen on {host}:{port}: port {port} is in use"
    if error.errno in (errno.EACCES, errno.EADDRNOTAVAIL):
        return f"cannot listen on {host}:{port}: {error.strerror}"
    return None


if __name__ == "__main__":
    sys.exit(main())
