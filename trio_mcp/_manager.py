"""``open_manager()``: the nursery that owns every server's supervisor."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

from ._backoff import RandomSource
from ._catalog import SharedItems
from ._client import ClientFeatures
from ._clock import TimeAnchor
from ._config import HttpTransport, ServerConfig, StdioTransport
from ._events import DEFAULT_EVENT_LOG_SIZE, ConnectionEvent, EventStream, InvocationEvent
from ._exceptions import (
    ConfigError,
    ManagerClosedError,
    ServerExistsError,
    TrioMcpError,
    UnknownServerError,
)
from ._invoke import Invoker, Routing
from ._session import Connection
from ._state import Freshness, ServerSnapshot, SessionInfo
from ._supervisor import ServerSupervisor
from ._transports import HttpPool

CONNECT_CONCURRENCY = 64
"""HTTP servers connecting (transport, handshake, first listing) at once."""
SPAWN_CONCURRENCY = max(2, os.cpu_count() or 1)
"""stdio servers starting at once: a process start costs CPU, and a machine flooded with
starting servers times their handshakes out, again and again."""


class Manager(Invoker):
    """A fleet of supervised MCP servers. Create it with :func:`open_manager`."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        rng: RandomSource | None,
        routing: Routing = "least_loaded",
        anchor: TimeAnchor,
        connection_log_size: int,
        invocation_log_size: int,
        session_options: dict[str, Any] | None,
        http_pool: HttpPool | None = None,
    ) -> None:
        self._nursery = nursery
        self._http_pool = http_pool
        self._shared_items = SharedItems()
        self._connect_slots = trio.CapacityLimiter(CONNECT_CONCURRENCY)
        self._spawn_slots = trio.CapacityLimiter(SPAWN_CONCURRENCY)
        self._rng: RandomSource = rng if rng is not None else random.Random()
        self._balanced = routing == "least_loaded"
        self.anchor = anchor
        self.stream = EventStream(
            anchor, connection_log_size=connection_log_size, invocation_log_size=invocation_log_size
        )
        """Every server's state changes and every invocation event, in order."""
        self.connection_log = self.stream.connection_log
        self.invocation_log = self.stream.invocation_log
        self._session_options = session_options
        self._supervisors: dict[str, ServerSupervisor] = {}
        self._closed = False
        self._active_scopes: set[trio.CancelScope] = set()
        self._equals = {}

    # -- registry ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ManagerClosedError()

    def supervisor(self, name: str) -> ServerSupervisor:
        """The supervisor of ``name``. Raises :class:`UnknownServerError`."""
        try:
            return self._supervisors[name]
        except KeyError:
            raise UnknownServerError(name) from None

    @property
    def names(self) -> list[str]:
        """Registered server names, in registration order."""
        return list(self._supervisors)

    def config(self, name: str) -> ServerConfig:
        return self.supervisor(name).config

    async def add_server(self, config: ServerConfig) -> ServerSnapshot:
        """Register ``config`` and start its supervisor (it connects in the background).

        Raises:
            ServerExistsError: the name is taken.
            ManagerClosedError: the manager is closed.
        """
        self._check_open()
        if not isinstance(config, ServerConfig):
            raise ConfigError("must be a ServerConfig", key="config")
        if config.name in self._supervisors:
            raise ServerExistsError(config.name)
        sup = self._register(config)
        await self._nursery.start(sup.run, name=f"supervise {config.name}")
        return sup.snapshot()

    def _register(self, config: ServerConfig) -> ServerSupervisor:
        transport = config.transport
        slots: trio.CapacityLimiter | None = None
        if isinstance(transport, StdioTransport):
            slots = self._spawn_slots
        elif isinstance(transport, HttpTransport):
            slots = self._connect_slots
        sup = ServerSupervisor(
            config,
            anchor=self.anchor,
            stream=self.stream,
            rng=self._rng,
            session_options=self._session_options,
            http_pool=self._http_pool,
            connect_slots=slots,
            shared_items=self._shared_items,
        )
        self._supervisors[config.name] = sup
        self._fleet_changed()
        return sup

    async def _start_fleet(self, configs: Sequence[ServerConfig]) -> None:
        """Register ``configs`` in order and start their supervisors concurrently: one after
        another, each start would wait a scheduling round behind every server already running."""
        sups = [self._register(config) for config in configs]
        async with trio.open_nursery() as starters:
            for sup in sups:
                starters.start_soon(
                    partial(self._nursery.start, sup.run, name=f"supervise {sup.name}"),
                    name=f"start {sup.name}",
                )

    async def remove_server(self, name: str) -> None:
        """Stop supervising ``name``: its session (and process) is closed before this returns."""
        sup = self.supervisor(name)
        del self._supervisors[name]
        self._fleet_changed()
        await sup.aclose()

    # -- state -------------------------------------------------------------------------------

    def server(self, name: str) -> ServerSnapshot:
        return self.supervisor(name).snapshot()

    def servers(self) -> list[ServerSnapshot]:
        return [sup.snapshot() for sup in self._supervisors.values()]

    def should_retry(self, name: str) -> bool:
        """Whether ``name``'s retry window is open."""
        return self.supervisor(name).should_retry()

    async def wait_for(self, name: str, predicate: Any) -> ServerSnapshot:
        """Wait until ``predicate(snapshot)`` holds for ``name``."""
        return await self.supervisor(name).wait_for(predicate)

    def sessions(
        self,
        *,
        server: str | None = None,
        active_only: bool = False,
        freshness: Freshness | str | None = None,
        limit: int | None = None,
    ) -> list[SessionInfo]:
        """Session diagnostics of every server, filtered."""
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        wanted = Freshness(freshness) if freshness is not None else None
        if server is not None:
            self.supervisor(server)
        out: list[SessionInfo] = []
        for sup in self._supervisors.values():
            info = sup.snapshot().session
            if server is not None and info.server != server:
                continue
            if active_only and not info.active:
                continue
            if wanted is not None and info.freshness is not wanted:
                continue
            out.append(info)
        return out[:limit] if limit is not None else out

    def connection_events(
        self, *, server: str | None = None, correlation_id: str | None = None, limit: int | None = None
    ) -> list[ConnectionEvent]:
        """Status changes, oldest first (the newest ``limit``).

        Raises:
            UnknownServerError: ``server`` is neither registered nor in the log (a removed
                server's history stays readable while the log keeps it).
        """
        events = self.connection_log.query(server=server, correlation_id=correlation_id, limit=limit)
        self._check_known(server, self.connection_log)
        return events

    def _check_known(self, server: str | None, log: Any) -> None:
        if server is not None and server not in self._supervisors and not log.query(server=server, limit=1):
            raise UnknownServerError(server)

    def invocation_events(
        self,
        *,
        server: str | None = None,
        method: str | None = None,
        request_id: str | None = None,
        correlation_id: str | None = None,
        limit: int | None = None,
    ) -> list[InvocationEvent]:
        """Invocation lifecycle events, oldest first (the newest ``limit``).

        Raises:
            UnknownServerError: ``server`` is neither registered nor in the log.
        """
        self._check_known(server, self.invocation_log)
        if correlation_id is not None:
            if request_id is not None and request_id != correlation_id:
                return []
            request_id = correlation_id
        return self.invocation_log.query(server=server, method=method, request_id=request_id, limit=limit)

    # -- controls ----------------------------------------------------------------------------

    async def acquire(self, name: str, *, correlation_id: str | None = None) -> Connection:
        """Borrow ``name``'s live connection (connecting first when needed)."""
        self._check_open()
        return await self.supervisor(name).acquire(correlation_id or self.stream.new_correlation_id())

    async def connect(self, name: str | None = None) -> list[ServerSnapshot]:
        """Probe and handshake now: one server, or all of them concurrently.

        Failures do not raise; they are in the returned snapshots.
        """
        self._check_open()
        names = [name] if name is not None else self.names
        sups = [self.supervisor(n) for n in names]
        correlation_id = self.stream.new_correlation_id()

        async def one(sup: ServerSupervisor) -> None:
            try:
                await sup.connect(correlation_id)
            except TrioMcpError:
                pass  # the outcome is in the snapshot

        async with trio.open_nursery() as nursery:
            for sup in sups:
                nursery.start_soon(one, sup)
        return [sup.snapshot() for sup in sups]

    async def initialize(self, name: str | None = None) -> list[ServerSnapshot]:
        """Run the handshake again now, fresh or not (connecting where there is no session):
        one server, or all of them concurrently. Failures are in the returned snapshots."""
        self._check_open()
        names = [name] if name is not None else self.names
        sups = [self.supervisor(n) for n in names]
        correlation_id = self.stream.new_correlation_id()

        async def one(sup: ServerSupervisor) -> None:
            try:
                await sup.rehandshake(correlation_id)
            except TrioMcpError:
                pass  # the outcome is in the snapshot

        async with trio.open_nursery() as nursery:
            for sup in sups:
                nursery.start_soon(one, sup)
        return [sup.snapshot() for sup in sups]

    async def health_check(self, name: str | None = None) -> list[ServerSnapshot]:
        """Probe now: one server, or all of them concurrently."""
        self._check_open()
        names = [name] if name is not None else self.names
        sups = [self.supervisor(n) for n in names]
        correlation_id = self.stream.new_correlation_id()
        async with trio.open_nursery() as nursery:
            for sup in sups:
                nursery.start_soon(sup.health_check, correlation_id)
        return [sup.snapshot() for sup in sups]

    def invalidate(self, name: str) -> bool:
        """Drop ``name``'s session; the next use reconnects. Returns whether one was active."""
        self._check_open()
        return self.supervisor(name).invalidate(self.stream.new_correlation_id())

    async def refresh(self, name: str) -> SessionInfo:
        """Drop ``name``'s session and open a new one now."""
        self._check_open()
        sup = self.supervisor(name)
        await sup.refresh(self.stream.new_correlation_id())
        return sup.snapshot().session

    def __repr__(self) -> str:
        return f"<Manager servers={self.names} closed={self._closed}>"


@asynccontextmanager
async def open_manager(
    servers: Iterable[ServerConfig] | Sequence[ServerConfig] = (),
    *,
    rng: RandomSource | None = None,
    routing: Routing = "least_loaded",
    clock_anchor: float | None = None,
    connection_log_size: int = DEFAULT_EVENT_LOG_SIZE,
    invocation_log_size: int = DEFAULT_EVENT_LOG_SIZE,
    session_options: dict[str, Any] | None = None,
    client: ClientFeatures | None = None,
) -> AsyncIterator[Manager]:
    """Open a manager supervising ``servers``.

    Every server gets one supervisor task in the manager's nursery. Startup does not wait for
    servers to connect. Leaving the block cancels every supervisor and closes every session
    and subprocess before it returns.

    Args:
        servers: the initial fleet.
        rng: random source for backoff jitter and for choosing between equal servers (pass
            ``random.Random(seed)`` for exact tests).
        routing: among servers that are equally good (same status, none preferred):
            ``"least_loaded"`` (default) tries first the less loaded of two drawn at random (calls
            in flight times a moving average of latency); ``"ordered"`` tries them in
            registration order.
        clock_anchor: the Unix time that the manager's start corresponds to (default: now).
        connection_log_size: how many connection events are kept.
        invocation_log_size: how many invocation events are kept.
        session_options: extra keyword arguments for every SDK ``ClientSession`` (callbacks).
        client: elicitation / sampling / roots handlers (merged into ``session_options``;
            explicit ``session_options`` entries win).
    """
    if client is not None:
        if not isinstance(client, ClientFeatures):
            raise ConfigError("must be a ClientFeatures", key="client")
        session_options = {**client.session_options(), **(session_options or {})}
    if routing not in ("least_loaded", "ordered"):
        raise ConfigError("must be 'least_loaded' or 'ordered'", key="routing")
    configs = list(servers)
    names = [c.name for c in configs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ServerExistsError(duplicates[0])
    http_pool = HttpPool()
    try:
        async with trio.open_nursery() as nursery:
            http_pool.run_rounds_in(nursery)
            manager = Manager(
                nursery,
                rng=rng,
                routing=routing,
                anchor=TimeAnchor(clock_anchor),
                connection_log_size=connection_log_size,
                invocation_log_size=invocation_log_size,
                session_options=session_options,
                http_pool=http_pool,
            )
            try:
                await manager._start_fleet(configs)
                yield manager
            finally:
                manager._closed = True
                nursery.cancel_scope.cancel()
    finally:
        # After the nursery: every supervisor has closed its connections by now.
        await http_pool.aclose()
