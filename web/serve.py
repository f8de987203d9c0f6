"""``serve()``: a manager and hypercorn's trio server in one nursery.

The manager's nursery owns every supervisor (and every stdio subprocess); hypercorn runs in
its body. SIGINT / SIGTERM trigger hypercorn's graceful shutdown; then leaving the manager's
block closes every session and reaps every subprocess before ``serve`` returns.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from trio_mcp import ConfigError, ServerConfig, open_manager
from trio_mcp.logs import attach_logging
from trio_mcp.store import DEFAULT_RETENTION, Retention, StateLocation

from .app import DEFAULT_MAX_BODY_BYTES, create_app
from .guard import Admission
from .persistence import open_state
from .reload import Reloader

DEFAULT_SHUTDOWN_GRACE = 5.0


logger = logging.getLogger("web.serve")


def _signal_trigger(receiver: AsyncIterator[int]) -> Callable[[], Awaitable[None]]:
    async def wait_for_signal() -> None:
        async for signum in receiver:
            print(f"trio-mcp: {signal.Signals(signum).name} received, shutting down", file=sys.stderr)
            logger.info("shutdown: %s received", signal.Signals(signum).name)
            return

    return wait_for_signal


def default_hosts(host: str) -> frozenset[str] | None:
    """The ``Host`` names to answer for when listening on ``host``: it and the loopback names
    (``None``, any, when listening on every address)."""
    if host in ("", "0.0.0.0", "::"):
        return None
    return frozenset({host.strip("[]").lower(), "localhost", "127.0.0.1", "::1"})


async def _reload_on_hangup(reloader: Reloader, hangups: AsyncIterator[int]) -> None:
    async for _ in hangups:
        try:
            plan = await reloader.reload()
        except (ConfigError, OSError) as exc:
            logger.error("reload (SIGHUP) refused, nothing changed: %s", exc)
        else:
            logger.info("reload (SIGHUP): %s", plan.summary())


async def serve(
    servers: Sequence[ServerConfig],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    allow_stdio: bool = False,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ready_min: int = 1,
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
    access_log: bool = False,
    reload_from: Callable[[], Sequence[ServerConfig]] | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    state: StateLocation | str | None = None,
    event_retention: Retention = DEFAULT_RETENTION,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    **api: Any,
) -> None:
    """Serve the HTTP API over a manager of ``servers`` until shut down.

    Args:
        servers: the initial fleet.
        host, port: where to listen (``port=0`` picks a free port).
        allow_stdio, token, max_body_bytes, ready_min: see :func:`web.app.create_app`.
        shutdown_grace: seconds in-flight invocations get after the shutdown signal; then they
            end with a 503 whose attempts say ``shutdown`` (and whether the request was sent).
        access_log: log every request through the ``hypercorn.access`` logger.
        reload_from: reads the config file again (``POST /reload`` and SIGHUP); ``servers`` are
            the ones it gave at startup.
        shutdown_trigger: returns to shut down gracefully (default: SIGINT or SIGTERM).
        state: where registrations and the event history are kept (a SQLite file or a
            PostgreSQL URL; ``None``: nothing is kept). Its registrations join ``servers``.
        event_retention: how much event history the store keeps.
        api: more options of :func:`web.app.create_app` (``allow_private_urls``, ``rate_limit``,
            ...). ``allowed_hosts`` defaults to ``host`` and the loopback names when ``host`` is
            one address.
        task_status: ``started(binds)`` once listening, e.g. ``["http://127.0.0.1:8000"]``.
    """
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = logging.getLogger("hypercorn.access") if access_log else None
    config.errorlog = "-"
    # hypercorn waits for in-flight requests a little longer than the manager lets them run, so
    # every one of them gets its answer.
    config.graceful_timeout = shutdown_grace + 2.0
    with (
        trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
        trio.open_signal_receiver(signal.SIGHUP) as hangups,
    ):
        trigger = shutdown_trigger or _signal_trigger(signals)
        # The servers this process agrees to run, stored ones included (another replica, with
        # other flags, may have stored them): the API's own rules.
        admission = Admission.from_flags(
            allow_stdio=allow_stdio,
            allow_stdio_commands=api.get("allow_stdio_commands", ()),
            allow_private_urls=api.get("allow_private_urls", False),
        )
        async with (
            open_state(state, retention=event_retention, admit=admission.admit) as persisted,
            open_manager([*servers, *persisted.initial(servers)]) as manager,
            trio.open_nursery() as nursery,
        ):
            attach_logging(manager)
            api.setdefault("allowed_hosts", default_hosts(host))
            app = create_app(
                manager,
                allow_stdio=allow_stdio,
                token=token,
                max_body_bytes=max_body_bytes,
                ready_min=ready_min,
                **api,
            )
            file_names = {c.name for c in servers}
            if reload_from is not None:
                reloader = Reloader(manager=manager, read=reload_from, from_file=file_names)
                app.state.reloader = reloader
                nursery.start_soon(_reload_on_hangup, reloader, hangups)
            await persisted.start(manager, app, nursery, reserved=file_names)
            # hypercorn's ASGI type is stricter than Starlette's (equivalent) signature.

            async def trigger_then_drain() -> None:
                await trigger()
                in_flight = sum(
                    manager.config(n).policy.max_concurrency - manager.supervisor(n).limiter.value
                    for n in manager.names
                )
                logger.info(
                    "shutdown: no new connections; in-flight invocations get %.1f s (%d in flight)",
                    shutdown_grace,
                    in_flight,
                )
                manager.drain(shutdown_grace)

            await hypercorn_serve(
                cast(Any, app), config, shutdown_trigger=trigger_then_drain, task_status=task_status
            )
            logger.info("shutdown: HTTP server stopped; closing %d servers", len(manager.names))
            nursery.cancel_scope.cancel()
        logger.info("shutdown: every server closed")
