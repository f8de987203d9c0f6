"""One supervisor task per server: it owns the server's session, probes and retry window.

The supervisor is the only task that enters and exits the transport and the SDK
``ClientSession`` (a cancel scope must exit in the task that entered it). Callers *borrow*
the live :class:`Connection` with :meth:`ServerSupervisor.acquire` and call the session in
their own task, under their own deadline. When a caller sees the connection die, it reports
the failure; the supervisor tears the connection down and reconnects with backoff.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import trio
from mcp.client.session import ClientSession
from mcp.client.subscriptions import listen
from mcp.shared.subscriptions import PromptsListChanged, ResourcesListChanged, ToolsListChanged
from mcp_types import (
    PromptListChangedNotification,
    ResourceListChangedNotification,
    ToolListChangedNotification,
)

from ._backoff import Backoff, RandomSource
from ._client import session_servers
from ._clock import TimeAnchor
from ._config import ServerConfig
from ._errors import Failure, classify, split_failures
from ._events import ConnectionEvent, EventLog, next_seq
from ._exceptions import (
    HandshakeError,
    HandshakeTimeoutError,
    ManagerClosedError,
    ServerUnavailableError,
    SessionError,
)
from ._session import Connection, capability_snapshot, handshake, probe, rediscover
from ._state import (
    CapabilitySnapshot,
    ConnectionState,
    ServerSnapshot,
    ServerStatus,
    SessionInfo,
    freshness_of,
    next_status,
)
from ._transports import Link, open_transport

logger = logging.getLogger("trio_mcp")

_LIST_CHANGED: dict[type, str] = {
    ToolListChangedNotification: "tools",
    ResourceListChangedNotification: "resources",
    PromptListChangedNotification: "prompts",
}

_EVENT_KINDS: dict[type, str] = {
    ToolsListChanged: "tools",
    ResourcesListChanged: "resources",
    PromptsListChanged: "prompts",
}

HandshakeObserver = Callable[[str, Failure | None], None]
"""Called with ``("start", None)``, ``("success", None)`` or ``("failure", failure)``."""


class _Ticket:
    """The outcome of one upcoming connect attempt, for every task waiting on it."""

    def __init__(self, correlation_id: str | None) -> None:
        self.correlation_id = correlation_id
        self.done = trio.Event()
        self.connection: Connection | None = None
        self.failure: Failure | None = None
        self.closed = False

    def resolve(self, connection: Connection | None, failure: Failure | None = None) -> None:
        self.connection = connection
        self.failure = failure
        self.done.set()

    async def wait(self) -> Connection:
        await self.done.wait()
        if self.closed:
            raise ManagerClosedError("the server's supervisor was closed")
        if self.connection is not None:
            return self.connection
        assert self.failure is not None
        if self.failure.category == "timeout":
            raise HandshakeTimeoutError(self.failure.message)
        raise HandshakeError(self.failure.message, category=self.failure.category)


class ServerSupervisor:
    """Owns one server's connection. Start it with ``await nursery.start(sup.run)``."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        anchor: TimeAnchor,
        connection_log: EventLog[ConnectionEvent],
        rng: RandomSource | None = None,
        session_options: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.policy = config.policy
        self._anchor = anchor
        self._log = connection_log
        self._session_options = session_options or {}
        self._backoff = Backoff(config.policy.backoff, rng)
        self.limiter = trio.Semaphore(config.policy.max_concurrency)
        """The bulkhead: at most ``max_concurrency`` invocations use this server at once."""

        self._status = ServerStatus.UNKNOWN
        self._state = ConnectionState.IDLE
        self._consecutive_failures = 0
        self._last_error: str | None = None
        self._last_category: str | None = None
        self._last_checked_at: float | None = None
        self._retry_at: float | None = None
        self._capabilities: CapabilitySnapshot | None = None
        self._handshaken_at: float | None = None
        self._last_activity_at: float | None = None
        self._conn: Connection | None = None
        self._session_counter = 0
        self.catalog: dict[str, dict[str, Any]] = {}
        """The last known tools / resources / prompts of this server, by name (or URI)."""

        self._auto = config.policy.connect_on_start
        self._forced = False
        self._demand = False
        self._wake = trio.Event()
        self._ticket: _Ticket | None = None
        self._changed = trio.Event()
        self._cancel_scope = trio.CancelScope()
        self._closed = False
        self._finished = trio.Event()

    # -----------------------------------------------------------------------------------------
    # reading state
    # -----------------------------------------------------------------------------------------

    @property
    def _handshake_expires_at(self) -> float | None:
        """When the current handshake goes stale (``None``: never)."""
        max_age = self.policy.handshake_max_age
        if self._handshaken_at is None or max_age is None:
            return None
        return self._handshaken_at + max_age

    def snapshot(self) -> ServerSnapshot:
        """A frozen view of this server's state now."""
        now = trio.current_time()
        conn = self._conn if self._conn is not None and self._conn.alive else None
        return ServerSnapshot(
            name=self.name,
            status=self._status,
            connection=self._state,
            consecutive_failures=self._consecutive_failures,
            retry_count=self._backoff.attempt,
            last_error=self._last_error,
            last_error_category=self._last_category,
            last_checked_at=self._last_checked_at,
            retry_at=self._retry_at,
            handshaken_at=self._handshaken_at,
            handshake_expires_at=self._handshake_expires_at,
            capabilities=self._capabilities,
            session=SessionInfo(
                server=self.name,
                active=conn is not None,
                session_id=conn.session_id if conn else None,
                handshaken=conn is not None,
                protocol_version=conn.session.protocol_version if conn else None,
                opened_at=conn.opened_at if conn else None,
                last_activity_at=self._last_activity_at,
                freshness=freshness_of(self._last_activity_at, now, self.policy.freshness_window),
                controls_available=True,
            ),
        )

    def should_retry(self) -> bool:
        """Whether the retry window is open (no failure pending, or its backoff has elapsed)."""
        return self._retry_at is None or trio.current_time() >= self._retry_at

    @property
    def status(self) -> ServerStatus:
        return self._status

    @property
    def connection(self) -> Connection | None:
        """The live connection, if any."""
        conn = self._conn
        return conn if conn is not None and conn.alive else None

    async def wait_for(self, predicate: Callable[[ServerSnapshot], bool]) -> ServerSnapshot:
        """Wait until ``predicate(snapshot)`` holds; returns that snapshot."""
        while True:
            snap = self.snapshot()
            if predicate(snap):
                return snap
            changed = self._changed
            await changed.wait()

    def __repr__(self) -> str:
        return f"<ServerSupervisor {self.name} {self._status.value}/{self._state.value}>"

    # -----------------------------------------------------------------------------------------
    # recording
    # -----------------------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _set_state(self, state: ConnectionState) -> None:
        if state is not self._state:
            self._state = state
            self._notify()

    def _set_status(
        self, status: ServerStatus, reason: str, category: str | None, correlation_id: str | None
    ) -> None:
        previous = self._status
        self._status = status
        if status is not previous:
            now = trio.current_time()
            stamp = self._anchor.at(now)
            self._log.append(
                ConnectionEvent(
                    seq=next_seq(),
                    server=self.name,
                    from_status=previous.value,
                    to_status=status.value,
                    reason=reason,
                    category=category,
                    correlation_id=correlation_id,
                    at=now,
                    timestamp=stamp,
                )
            )
        self._notify()

    def record_success(
        self,
        reason: str,
        correlation_id: str | None = None,
        *,
        activity: bool = False,
        now: float | None = None,
    ) -> None:
        if now is None:
            now = trio.current_time()
        self._last_checked_at = now
        if activity:
            self._last_activity_at = now
        if self._status is ServerStatus.HEALTHY and not self._consecutive_failures and self._retry_at is None:
            return  # the common case: nothing that waiters watch has changed
        self._consecutive_failures = 0
        self._retry_at = None
        self._set_status(
            next_status(
                self._status,
                success=True,
                consecutive_failures=0,
                unreachable_threshold=self.policy.unreachable_threshold,
            ),
            reason,
            None,
            correlation_id,
        )

    def record_failure(self, failure: Failure, reason: str, correlation_id: str | None = None) -> None:
        now = trio.current_time()
        self._consecutive_failures += 1
        self._last_error = failure.message
        self._last_category = failure.category
        self._last_checked_at = now
        self._retry_at = now + self._backoff.next_delay()
        self._set_status(
            next_status(
                self._status,
                success=False,
                consecutive_failures=self._consecutive_failures,
                unreachable_threshold=self.policy.unreachable_threshold,
                category=failure.category,
            ),
            f"{reason}: {failure.message}",
            failure.category,
            correlation_id,
        )

    def _client_session_options(self) -> dict[str, Any]:
        """The SDK session keyword arguments, with list-changed notifications hooked in."""
        options = dict(self._session_options)
        user_handler = options.get("message_handler")

        async def on_message(message: Any) -> None:
            kind = _LIST_CHANGED.get(type(message))
            if kind is not None:
                # The cached catalog no longer describes the server: forget it, so routing stops
                # filtering by it and the next listing fetches it anew.
                self.catalog.pop(kind, None)
            if user_handler is not None:
                await user_handler(message)
            else:
                await trio.lowlevel.checkpoint()

        options["message_handler"] = on_message
        return options

    def tool_info(self, name: str) -> Any:
        """The last listed ``Tool`` called ``name``, or ``None``."""
        return self.catalog.get("tools", {}).get(name)

    # -----------------------------------------------------------------------------------------
    # the supervisor task
    # -----------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[ServerSupervisor] = trio.TASK_STATUS_IGNORED) -> None:
        """Supervise the server until cancelled. Never raises anything but cancellation."""
        try:
            with self._cancel_scope:
                task_status.started(self)
                while True:
                    await self._wait_for_demand()
                    try:
                        await self._connect_and_serve()
                    except BaseException as exc:
                        # Nothing the transport, the session or the handshake raises may leave
                        # this task: the manager's nursery (and every other server) would die
                        # with it. Only cancellation (and KeyboardInterrupt and the like) goes
                        # on; a failure that arrives with it is the transport complaining while
                        # it is torn down, so it is not recorded.
                        passing, failure = split_failures(exc)
                        if passing is not None:
                            raise passing from None
                        assert failure is not None
                        logger.warning("supervisor of %r: unexpected failure", self.name, exc_info=failure)
                        self._auto = True
                        self._set_state(ConnectionState.BACKOFF)
                        self.record_failure(classify(failure), "supervisor error")
        finally:
            self._closed = True
            self._conn = None
            self._state = ConnectionState.CLOSED
            if self._ticket is not None:
                self._ticket.closed = True
                self._ticket.resolve(None)
                self._ticket = None
            self._notify()
            self._finished.set()

    async def _wait_for_demand(self) -> None:
        while True:
            if self._forced:
                self._forced = self._demand = False
                return
            if self._demand:
                self._demand = False
                if self.should_retry():
                    return
                # A caller asked for a session, but the server failed since and its retry window
                # is closed again: that caller fails fast instead of forcing a reconnect.
                ticket, self._ticket = self._ticket, None
                if ticket is not None:
                    ticket.resolve(None, Failure("unavailable", str(self._unavailable()), False))
            if self._auto and self.should_retry():
                return
            self._wake = trio.Event()
            deadline = self._retry_at if (self._auto and self._retry_at is not None) else math.inf
            with trio.move_on_at(deadline):
                await self._wake.wait()

    def _request_connect(self, correlation_id: str | None, *, force: bool) -> _Ticket:
        """The ticket of the next connect attempt. ``force`` ignores the retry window; otherwise
        the attempt is made only while the window is open."""
        if self._closed:
            raise ManagerClosedError(f"the supervisor of {self.name!r} is closed")
        if self._ticket is None:
            self._ticket = _Ticket(correlation_id)
        if self._state is not ConnectionState.CONNECTING:
            if force:
                self._forced = True
            else:
                self._demand = True
            self._wake.set()
        return self._ticket

    async def _connect_and_serve(self) -> None:
        ticket = self._ticket
        if ticket is None:
            ticket = self._ticket = _Ticket(None)
        self._set_state(ConnectionState.CONNECTING)
        self._session_counter += 1
        link = Link(self.name)
        conn: Connection | None = None
        stage = "connect"
        try:
            async with open_transport(self.config.transport, link) as (read, write):
                async with ClientSession(read, write, **self._client_session_options()) as session:
                    session_servers[session] = self.name  # client-feature handlers learn who asked
                    stage = "handshake"
                    try:
                        with trio.fail_after(self.policy.handshake_timeout):
                            await handshake(session, self.policy.protocol)
                    except trio.TooSlowError:
                        raise HandshakeTimeoutError(
                            f"handshake did not finish within {self.policy.handshake_timeout:g}s"
                        ) from None
                    now = trio.current_time()
                    conn = Connection(
                        server=self.name,
                        session=session,
                        session_id=self._session_counter,
                        link=link,
                        opened_at=now,
                    )
                    conn.capabilities = capability_snapshot(session, self._anchor)
                    conn.catalog = self.catalog
                    self._on_connected(conn, ticket)
                    stage = "serve"
                    await self._serve(conn, write)
        except Exception as exc:
            if conn is None:
                failure = classify(exc, link)
                if stage == "handshake" and failure.category in ("invalid_request", "rpc_error"):
                    failure = Failure("protocol_error", f"handshake refused: {failure.message}", True)
                self._on_connect_failed(failure, stage, ticket)
            elif conn.drop_reason is None:
                # The transport died under a live connection before anyone noticed.
                failure = classify(exc, link)
                self.record_failure(failure, "connection lost")
                conn.drop(failure.message, then="backoff")
            # else: the connection was already dropped and its failure recorded; the error
            # here is the transport complaining on its way down.
        finally:
            if self._conn is conn:
                self._conn = None
        if conn is not None:
            self._after_drop(conn)

    def _on_connected(self, conn: Connection, ticket: _Ticket) -> None:
        self._conn = conn
        self._backoff.reset()
        self._handshaken_at = conn.handshaken_at
        self._capabilities = conn.capabilities
        self._set_state(ConnectionState.READY)
        self.record_success("handshake succeeded", ticket.correlation_id, activity=True)
        if self._ticket is ticket:
            self._ticket = None
        ticket.resolve(conn)

    def _on_connect_failed(self, failure: Failure, stage: str, ticket: _Ticket) -> None:
        if failure.category in ("connect_error", "spawn_error"):
            stage = "connect"  # streamable HTTP connects lazily, during the handshake
        self._auto = True
        self._set_state(ConnectionState.BACKOFF)
        self.record_failure(failure, f"{stage} failed", ticket.correlation_id)
        if self._ticket is ticket:
            self._ticket = None
        ticket.resolve(None, failure)

    def _after_drop(self, conn: Connection) -> None:
        if conn.after_applied:
            return
        conn.after_applied = True
        then = conn.after_drop
        if then == "idle":
            self._auto = False
            self._set_state(ConnectionState.IDLE)
        elif then == "reconnect":
            self._forced = True
            self._set_state(ConnectionState.IDLE)
        else:
            self._auto = True
            self._set_state(ConnectionState.BACKOFF)

    async def _serve(self, conn: Connection, write: Any) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                conn.link.forward_cancel_notices, write.send_direct, name=f"{self.name}: cancel notices"
            )
            nursery.start_soon(self._watch_link, conn, name=f"{self.name}: watch connection")
            if self.policy.probe != "none":
                nursery.start_soon(self._probe_periodically, conn, name=f"{self.name}: health probes")
            if conn.era == "modern":
                nursery.start_soon(self._listen_for_list_changes, conn, name=f"{self.name}: listen")
            await conn.wait_dropped()
            # The session is no longer usable; say so before the (possibly slow) teardown.
            self._set_state(ConnectionState.CLOSING)
            nursery.cancel_scope.cancel()

    async def _watch_link(self, conn: Connection) -> None:
        await conn.link.dead.wait()
        if conn.drop_reason is None:
            category, reason = conn.link.exit_reason or ("transport_error", "connection closed")
            self.record_failure(Failure(category, reason, True), "connection lost")
            conn.drop(reason, then="backoff")

    async def _listen_for_list_changes(self, conn: Connection) -> None:
        """On a 2026-07-28 connection, list changes arrive only on a ``subscriptions/listen``
        stream: hold one open (for the lists the server says can change) and drop the cached
        catalog entries it announces. Best effort: without it, catalogs are refreshed on listing."""
        caps = conn.session.server_capabilities
        wanted = {
            "tools": bool(caps and caps.tools and caps.tools.list_changed),
            "prompts": bool(caps and caps.prompts and caps.prompts.list_changed),
            "resources": bool(caps and caps.resources and caps.resources.list_changed),
        }
        if not any(wanted.values()):
            return
        try:
            async with listen(
                conn.session,
                tools_list_changed=wanted["tools"],
                prompts_list_changed=wanted["prompts"],
                resources_list_changed=wanted["resources"],
            ) as subscription:
                async for event in subscription:
                    kind = _EVENT_KINDS.get(type(event))
                    if kind is not None:
                        self.catalog.pop(kind, None)
        except Exception as exc:
            logger.debug("%s: no list-change subscription: %s", self.name, exc)

    async def _probe_periodically(self, conn: Connection) -> None:
        interval = self.policy.health_interval
        next_at = trio.current_time() + interval
        while True:
            await trio.sleep_until(next_at)
            next_at = max(next_at + interval, trio.current_time())
            await self.probe_once(conn, None)

    async def probe_once(self, conn: Connection, correlation_id: str | None) -> Failure | None:
        """Run one health probe on ``conn`` and record its outcome."""
        try:
            with trio.fail_after(self.policy.probe_timeout):
                await probe(conn.session, self.policy.probe)
        except trio.TooSlowError:
            failure = Failure("timeout", f"probe timed out after {self.policy.probe_timeout:g}s", False)
        except Exception as exc:
            failure = classify(exc, conn.link)
            if failure.category == "invalid_request":
                failure = Failure("rpc_error", failure.message, False)
        else:
            self.record_success("probe succeeded", correlation_id)
            return None
        if conn.drop_reason is not None:
            return failure
        self.record_failure(failure, "probe failed", correlation_id)
        if failure.connection_dead or self._status is ServerStatus.UNREACHABLE:
            conn.drop(failure.message, then="backoff")
        return failure

    # -----------------------------------------------------------------------------------------
    # what callers use
    # -----------------------------------------------------------------------------------------

    def ready_connection(self, now: float | None = None) -> Connection | None:
        """The live connection if its handshake is fresh (usable without waiting), else ``None``."""
        conn = self._conn
        if conn is None or not conn.alive:
            return None
        expires = self._handshake_expires_at
        if expires is not None and (trio.current_time() if now is None else now) >= expires:
            return None
        return conn

    async def acquire(
        self,
        correlation_id: str | None = None,
        *,
        force: bool = False,
        observer: HandshakeObserver | None = None,
    ) -> Connection:
        """Borrow the live connection, connecting or re-handshaking first when needed.

        Args:
            correlation_id: recorded on the connection events this causes.
            force: connect even when the retry window is closed.
            observer: told when a handshake starts and how it ends.

        Raises:
            ServerUnavailableError: no session and the retry window is closed (not forced).
            HandshakeError: connecting or the handshake failed.
            ManagerClosedError: the supervisor was closed.
        """
        if self._closed:
            raise ManagerClosedError(f"the supervisor of {self.name!r} is closed")
        ready = self.ready_connection()
        if ready is not None:
            return ready
        conn = self.connection
        if conn is not None:  # alive, but its handshake is stale
            return await self._rehandshake(conn, correlation_id, observer)
        if not force and not self.should_retry():
            raise self._unavailable()
        ticket = self._request_connect(correlation_id, force=force)
        if observer is not None:
            observer("start", None)
        try:
            conn = await ticket.wait()
        except SessionError as exc:
            if observer is not None:
                observer("failure", ticket.failure)
            if exc.category == "unavailable":
                raise self._unavailable() from None
            raise
        if observer is not None:
            observer("success", None)
        return conn

    def _unavailable(self) -> ServerUnavailableError:
        return ServerUnavailableError(
            self.name,
            status=self._status.value,
            retry_at=self._retry_at,
            category=self._last_category,
            last_error=self._last_error,
        )

    async def _rehandshake(
        self, conn: Connection, correlation_id: str | None, observer: HandshakeObserver | None
    ) -> Connection:
        if observer is not None:
            observer("start", None)
        if conn.era == "modern":
            try:
                with trio.fail_after(self.policy.handshake_timeout):
                    await rediscover(conn.session)
            except trio.TooSlowError:
                failure = Failure(
                    "timeout", f"re-handshake did not finish within {self.policy.handshake_timeout:g}s", False
                )
            except Exception as exc:
                failure = classify(exc, conn.link)
            else:
                now = trio.current_time()
                conn.handshaken_at = now
                self._handshaken_at = now
                conn.capabilities = self._capabilities = capability_snapshot(conn.session, self._anchor)
                self._backoff.reset()
                self.record_success("re-handshake succeeded", correlation_id, activity=True)
                if observer is not None:
                    observer("success", None)
                return conn
            self.record_failure(failure, "re-handshake failed", correlation_id)
            if failure.connection_dead:
                conn.drop(failure.message, then="backoff")
            if observer is not None:
                observer("failure", failure)
            if failure.category == "timeout":
                raise HandshakeTimeoutError(failure.message)
            raise HandshakeError(failure.message, category=failure.category)
        # Legacy era: a handshake belongs to a session; re-handshaking means a new session.
        ticket = self._request_connect(correlation_id, force=True)
        conn.drop("handshake expired", then="reconnect")
        try:
            new = await ticket.wait()
        except SessionError:
            if observer is not None:
                observer("failure", ticket.failure)
            raise
        if observer is not None:
            observer("success", None)
        return new

    def report_failure(
        self, conn: Connection, exc: BaseException, reason: str, correlation_id: str | None = None
    ) -> Failure:
        """A caller's request on ``conn`` failed with ``exc``: record it; drop a dead connection."""
        failure = classify(exc, conn.link)
        if failure.is_caller_error:
            return failure
        if conn.drop_reason is None:
            self.record_failure(failure, reason, correlation_id)
            if failure.connection_dead:
                conn.drop(failure.message, then="backoff")
        return failure

    def invalidate(self, correlation_id: str | None = None) -> bool:
        """Drop the session; the next use opens a new one. Returns whether one was active."""
        if self._closed:
            raise ManagerClosedError(f"the supervisor of {self.name!r} is closed")
        conn = self.connection
        self._auto = False
        if conn is not None:
            conn.drop("invalidated", then="idle")
            return True
        return False

    async def refresh(self, correlation_id: str | None = None) -> Connection:
        """Drop the session and open a new one now; returns the new connection."""
        if self._closed:
            raise ManagerClosedError(f"the supervisor of {self.name!r} is closed")
        old = self.connection
        ticket = self._request_connect(correlation_id, force=True)
        if old is not None:
            # The supervisor reconnects once the old connection is down.
            self._forced = True
            old.drop("refreshed", then="reconnect")
        return await ticket.wait()

    async def connect(self, correlation_id: str | None = None) -> Connection:
        """Probe and handshake now, ignoring the retry window.

        Raises:
            SessionError: the handshake or the probe failed.
        """
        conn = await self.acquire(correlation_id, force=True)
        failure = await self.probe_once(conn, correlation_id)
        if failure is not None:
            raise SessionError(f"probe failed: {failure.message}", category=failure.category)
        return conn

    async def health_check(self, correlation_id: str | None = None) -> ServerSnapshot:
        """Check health now (probe a live session, or try to connect); never raises for a
        failing server: the outcome is in the snapshot."""
        conn = self.connection
        if conn is not None:
            await self.probe_once(conn, correlation_id)
        else:
            try:
                await self.acquire(correlation_id, force=True)
            except SessionError:
                pass
        return self.snapshot()

    async def aclose(self) -> None:
        """Stop supervising: close the session (and its process) and wait until it is down."""
        self._cancel_scope.cancel()
        await self._finished.wait()
