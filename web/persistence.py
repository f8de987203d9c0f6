"""The state store behind the HTTP API: registrations that survive restarts, and the event
history, shared by every replica on the same PostgreSQL.

:func:`open_state` opens the store (``--state``) around the manager: the stored registrations
join the configured fleet, then :meth:`State.start` attaches the registry and the history to
the app. The route helpers below use them when they are there and the manager alone when
the API runs without a store (``--state memory``).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request

from trio_mcp import ConnectionEvent, InvocationEvent, Manager, ServerConfig, ServerSnapshot
from trio_mcp.store import (
    DEFAULT_RETENTION,
    Admit,
    EventWriter,
    History,
    HistoryCollector,
    LoadedRegistry,
    Registry,
    Retention,
    SecretBox,
    StateLocation,
    Store,
    load_registry,
    open_store,
    parse_state,
)

from . import schemas

SHUTDOWN_FLUSH_TIMEOUT = 5.0
"""Seconds the event history gets at shutdown to write what it holds."""

logger = logging.getLogger("trio_mcp.store")


def replica_id() -> str:
    """This process's id in the history: the host name and a random suffix."""
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"


class State:
    """What :func:`open_state` opened: a store (``None``: nothing is kept) and what it held."""

    def __init__(
        self,
        store: Store | None = None,
        *,
        nursery: trio.Nursery | None = None,
        loaded: LoadedRegistry | None = None,
        box: SecretBox | None = None,
        retention: Retention = DEFAULT_RETENTION,
        admit: Admit | None = None,
    ) -> None:
        self.store = store
        self._admit = admit
        self.replica = replica_id()
        self._nursery = nursery
        self._loaded = loaded
        self._box = box
        self._retention = retention
        self._started: dict[str, int] = {}
        self.writer: EventWriter | None = None
        self.registry: Registry | None = None

    def initial(self, servers: Sequence[ServerConfig]) -> list[ServerConfig]:
        """The stored registrations to start with ``servers`` (the configured fleet). A stored
        name that the configuration uses is left out: the configuration wins."""
        if self._loaded is None:
            return []
        configured = {c.name for c in servers}
        out: list[ServerConfig] = []
        for name, (revision, config) in self._loaded.configs.items():
            if name in configured:
                logger.warning("registry: the stored registration of %s is shadowed by the config file", name)
                continue
            out.append(config)
            self._started[name] = revision
        return out

    async def start(
        self, manager: Manager, app: Starlette, nursery: trio.Nursery, *, reserved: Collection[str]
    ) -> None:
        """Attach the registry and the history to ``app``: the history's writer runs until the
        state closes (after the manager: its last events are written), the registry follows
        the store in ``nursery`` (closed before the manager).

        Args:
            reserved: the config file's server names, read live (a reload changes them).
        """
        app.state.replica = self.replica
        if self.store is None or self._nursery is None or self._loaded is None:
            return
        self.writer = EventWriter(self.store, manager.stream, replica=self.replica, retention=self._retention)
        await self._nursery.start(self.writer.run, name="write the event history")
        self.registry = Registry(
            manager,
            self.store,
            parse=schemas.parse_registration,
            box=self._box,
            reserved=reserved,
            running=self._started,
            stored=self._loaded.stored,
            version=self._loaded.version,
            admit=self._admit,
        )
        app.state.registry = self.registry
        app.state.history = History(self.store, self.writer)
        app.state.metrics.register(HistoryCollector(self.writer))
        await nursery.start(self.registry.run, name="follow the registry")

    async def _write_the_rest(self) -> None:
        writer = self.writer
        if writer is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_FLUSH_TIMEOUT):
            await writer.flush()
        stats = writer.statistics()
        if stats.dropped:
            logger.warning(
                "event history: %d events written, %d dropped (%d: buffer full, %d: store unavailable)",
                stats.written,
                stats.dropped,
                stats.dropped_buffer_full,
                stats.dropped_unavailable,
            )

    def __repr__(self) -> str:
        return f"<State {self.store.location if self.store is not None else 'memory'}>"


@asynccontextmanager
async def open_state(
    location: StateLocation | str | None,
    *,
    retention: Retention = DEFAULT_RETENTION,
    environ: Mapping[str, str] | None = None,
    admit: Admit | None = None,
) -> AsyncIterator[State]:
    """Open the store at ``location`` (``None``: keep nothing) and read its registrations
    (those that ``admit`` refuses are skipped: this process's rules, see
    :class:`web.guard.Admission`).

    Leaving the block writes the events still held (at most :data:`SHUTDOWN_FLUSH_TIMEOUT`
    seconds), stops the writer and closes the store.

    Raises:
        StoreError: the store cannot be opened, or ``$TRIO_MCP_SECRET_KEY`` is not a Fernet key.
    """
    if isinstance(location, str):
        location = parse_state(location)
    if location is None:
        yield State()
        return
    box = SecretBox.from_environ(os.environ if environ is None else environ)
    async with open_store(location) as store, trio.open_nursery() as nursery:
        loaded = await load_registry(store, schemas.parse_registration, box, admit)
        state = State(store, nursery=nursery, loaded=loaded, box=box, retention=retention, admit=admit)
        try:
            yield state
        finally:
            await state._write_the_rest()
            nursery.cancel_scope.cancel()


# -- what the route handlers call ------------------------------------------------------------------


def _registry(request: Request) -> Registry | None:
    registry: Registry | None = getattr(request.app.state, "registry", None)
    return registry


def _history(request: Request) -> History | None:
    history: History | None = getattr(request.app.state, "history", None)
    return history


async def add_server(
    request: Request, manager: Manager, config: ServerConfig, body: Mapping[str, Any]
) -> ServerSnapshot:
    """Register ``config`` (from ``body``): stored first when there is a store."""
    registry = _registry(request)
    if registry is None:
        return await manager.add_server(config)
    return await registry.register(config, body)


async def remove_server(request: Request, manager: Manager, name: str) -> None:
    """Unregister ``name``: deleted from the store first when it is stored there."""
    registry = _registry(request)
    if registry is None:
        await manager.remove_server(name)
    else:
        await registry.unregister(name)


async def connection_events(
    request: Request,
    manager: Manager,
    *,
    server: str | None,
    correlation_id: str | None,
    limit: int | None,
) -> list[ConnectionEvent]:
    """Status changes, from the history when there is a store, else from the manager's log."""
    history = _history(request)
    if history is None:
        return manager.connection_events(server=server, correlation_id=correlation_id, limit=limit)
    return await history.connection_events(manager, server=server, correlation_id=correlation_id, limit=limit)


async def invocation_events(
    request: Request,
    manager: Manager,
    *,
    server: str | None,
    method: str | None,
    request_id: str | None,
    correlation_id: str | None,
    limit: int | None,
) -> list[InvocationEvent]:
    """Invocation events, from the history when there is a store, else from the manager's log."""
    history = _history(request)
    if history is None:
        return manager.invocation_events(
            server=server, method=method, request_id=request_id, correlation_id=correlation_id, limit=limit
        )
    return await history.invocation_events(
        manager,
        server=server,
        method=method,
        request_id=request_id,
        correlation_id=correlation_id,
        limit=limit,
    )
