"""``trio-mcp serve``: the HTTP API and a manager of the fleet in one trio run."""

from __future__ import annotations

import errno
import functools
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ._cli_common import EXIT_OK, EXIT_USAGE, load_fleet
from ._exceptions import ConfigError
from .store._location import DEFAULT_RETENTION, Retention


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    """What ``trio-mcp serve`` was told."""

    config: Path | None
    host: str
    port: int
    allow_stdio_registration: bool
    token: str | None
    max_body_bytes: int
    shutdown_grace: float
    ready_min: int = 1
    log_level: str = "info"
    log_format: str = "text"
    allow_private_urls: bool = False
    allow_stdio_commands: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    rate_limit: str | None = None
    max_invocations: int = 256
    body_timeout: float = 10.0
    state: str | None = None
    """``--state`` as given (``None``: the default SQLite file)."""
    event_retention: Retention = DEFAULT_RETENTION


OPEN_FILES_WANTED = 65536
"""The soft limit on open files ``trio-mcp serve`` asks for (within the hard limit)."""


def raise_open_files_limit(wanted: int = OPEN_FILES_WANTED) -> tuple[int, int]:
    """Raise this process's soft limit on open files to ``wanted``, or to the hard limit if that
    is lower; never lower it. Each HTTP server holds a socket or two and each stdio server three
    pipes, so a fleet of a thousand needs more than the 1,024 that many systems start a process
    with. Returns the soft limit before and after (the same when it could not be raised)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, target


def run(options: ServeOptions) -> int:
    """Serve until SIGINT / SIGTERM; returns the exit code. Startup problems (a bad config, a
    port in use, an address that cannot be bound) are one line on stderr and exit code 2."""
    if options.host in ("0.0.0.0", "::", "") and not options.token:
        print(
            f"trio-mcp: refusing to listen on {options.host or 'every address'} without --token: anyone "
            "who can reach this machine could call your MCP servers",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if options.rate_limit is not None:
        from web.middleware import RateLimit

        try:
            RateLimit.parse(options.rate_limit)
        except ValueError as exc:
            print(f"trio-mcp: --rate-limit: {exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        servers = load_fleet(options.config)
    except ConfigError as exc:
        print(f"trio-mcp: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE

    from web.serve import serve

    from .logs import configure
    from .store import parse_state

    try:
        state = parse_state(options.state or "")
    except ValueError as exc:
        print(f"trio-mcp: --state: {exc}", file=sys.stderr)
        return EXIT_USAGE

    configure(options.log_level, options.log_format)
    if sys.platform != "win32":
        raise_open_files_limit()
    path = options.config
    reload_from = functools.partial(load_fleet, path) if path is not None else None

    # Without --allowed-host, serve() answers for the --host it listens on and the loopback names.
    extra: dict[str, Any] = {"allowed_hosts": options.allowed_hosts} if options.allowed_hosts else {}

    async def started_message() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                functools.partial(
                    serve,
                    servers,
                    host=options.host,
                    port=options.port,
                    allow_stdio=options.allow_stdio_registration,
                    token=options.token,
                    max_body_bytes=options.max_body_bytes,
                    shutdown_grace=options.shutdown_grace,
                    ready_min=options.ready_min,
                    access_log=options.log_format == "text",
                    reload_from=reload_from,
                    allow_private_urls=options.allow_private_urls,
                    allow_stdio_commands=options.allow_stdio_commands,
                    allowed_origins=options.allowed_origins,
                    rate_limit=options.rate_limit,
                    max_invocations=options.max_invocations,
                    body_timeout=options.body_timeout,
                    state=state,
                    event_retention=options.event_retention,
                    **extra,
                )
            )
            names = ", ".join(s.name for s in servers) or "none"
            print(
                f"trio-mcp: serving on {', '.join(binds)} (servers: {names}; state: {state or 'memory'})",
                file=sys.stderr,
                flush=True,
            )

    try:
        trio.run(started_message)
    except BaseException as exc:
        problem = _listen_problem(exc, options.host, options.port) or _store_problem(exc)
        if problem is None:
            raise
        print(f"trio-mcp: {problem}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _leaves(exc: BaseException) -> list[BaseException]:
    leaves = [exc]
    while any(isinstance(e, BaseExceptionGroup) for e in leaves):
        leaves = [x for e in leaves for x in (e.exceptions if isinstance(e, BaseExceptionGroup) else [e])]
    return leaves


def _store_problem(exc: BaseException) -> str | None:
    """One line saying why the state store could not be opened, if that is what ``exc`` is about."""
    from .store import StoreError

    leaves = _leaves(exc)
    if len(leaves) != 1 or not isinstance(leaves[0], StoreError):
        return None
    return f"state store: {leaves[0]}"


def _listen_problem(exc: BaseException, host: str, port: int) -> str | None:
    """One line saying why the server could not listen, if that is what ``exc`` (possibly a
    group, from the server's nursery) is about."""
    leaves = _leaves(exc)
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
