"""One supervisor per server: the single writer of that server's state.

A supervisor runs two tasks in its own nursery:

- the **writer** (the supervisor task itself) is the only task that changes the server's
  :class:`~trio_mcp._state.ServerState`. It takes *reports* from an inbox, applies the pure
  transitions of ``_state.py`` and publishes the new value (readers call :meth:`snapshot` or
  wait with :meth:`wait_for`) and each change on the manager's state-change stream.
- the **connection task** enters and exits the transport and the SDK ``ClientSession`` (a
  cancel scope must exit in the task that entered it), runs the handshake, the health probes
  and re-handshakes, and reports what happened. It decides when to connect by reading the
  published state (retry window, demands), never by writing it.

Callers *borrow* the live :class:`Connection` and call the session in their own task, under
their own deadline; they report what they saw (a call that succeeded, a connection that
died) with methods that only enqueue. Commands (connect now, invalidate, refresh) are reports
too: the writer decides, the connection task acts.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, replace
from typing import Any, cast

import httpx2
import trio
from mcp.client.session import ClientSession
from mcp.client.subscriptions import listen
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import PromptsListChanged, ResourcesListChanged, ToolsListChanged
from mcp_types import (
    CONNECTION_CLOSED,
    REQUEST_TIMEOUT,
    DiscoverResult,
    InitializeResult,
    PromptListChangedNotification,
    ResourceListChangedNotification,
    ToolListChangedNotification,
)
from pydantic import BaseModel

from ._backoff import RandomSource
from ._catalog import (
    Pages,
    SharedItems,
    fetch_catalog,
    list_kind,
    listened_kinds,
    listing,
    offered_kinds,
    session_pages,
)
from ._client import session_servers
from ._clock import TimeAnchor
from ._config import HttpTransport, MemoryTransport, ServerConfig, StdioTransport
from ._errors import classify, split_failures
from ._events import EventStream
from ._exceptions import (
    HandshakeError,
    HandshakeTimeoutError,
    ManagerClosedError,
    ServerUnavailableError,
    SessionError,
    TrioMcpError,
)
from ._failure import Failure
from ._load import Load, LoadGauge
from ._publish import Published
from ._session import (
    Connection,
    FleetSession,
    capability_snapshot,
    discover_without_session,
    handshake,
    prime_tool_listing,
    probe,
    probe_in_rounds,
    probes_without_session,
    rediscover,
)
from ._state import (
    AfterDrop,
    CapabilitySnapshot,
    Catalog,
    ConnectionState,
    ServerSnapshot,
    ServerState,
    ServerStatus,
    handshake_expires_at,
    on_catalog,
    on_closed,
    on_connect_demanded,
    on_connected,
    on_connecting,
    on_dropping,
    on_failure,
    on_invalidated,
    on_parked,
    on_rehandshake_demanded,
    on_rehandshaken,
    on_resume_demanded,
    on_resumed,
    on_stopped,
    on_success,
    probe_can_wait,
    snapshot_of,
)
from ._transports import HttpPool, Link, open_transport
from ._transports.base import SessionlessRequests
from ._transports.http import plain_http
from ._transports.http_probe import PlainDiscoverProbe
from ._transports.memory import direct_server, open_direct
from ._transports.probe_rounds import RoundEntry
from ._transports.stdio import StdioPipes, spawn
from ._transports.wire import stream_event

logger = logging.getLogger("trio_mcp")

_LIST_CHANGED: dict[type[BaseModel], str] = {
    ToolListChangedNotification: "tools",
    ResourceListChangedNotification: "resources",
    PromptListChangedNotification: "prompts",
}

_EVENT_KINDS: dict[type, str] = {
    ToolsListChanged: "tools",
    ResourcesListChanged: "resources",
    PromptsListChanged: "prompts",
}

_NOTIFICATIONS: dict[str, type[Any]] = {kind.model_fields["method"].default: kind for kind in _LIST_CHANGED}
"""The list-changed notification types by their method name."""


async def _tee(handler: Callable[[Any], Awaitable[None]], message: Mapping[str, Any]) -> None:
    """Give ``handler`` (the user's message handler) a list-changed notification read outside
    the SDK session, typed as the session would have given it."""
    try:
        notification = _NOTIFICATIONS[message["method"]].model_validate(
            {"method": message["method"], "params": message.get("params")}
        )
        await handler(notification)
    except Exception:
        logger.exception("message handler failed on %r", message.get("method"))


async def _deliver_notification(session: ClientSession, method: str, params: Any) -> None:
    """Hand a notification read outside ``session`` (on an answer's event stream) to the
    session's own routing: validated for its protocol version, then to its logging callback
    and message handler, which contain what they raise."""
    try:
        await session._on_notify(cast(Any, None), method, params if isinstance(params, dict) else None)
    except Exception:
        logger.exception("notification %r could not be delivered", method)


HandshakeObserver = Callable[[str, Failure | None], None]
"""Called with ``("start", None)``, ``("success", None)`` or ``("failure", failure)``."""


def _offered(state: ServerState) -> list[str]:
    """The catalog kinds the server said it has in its last handshake."""
    return offered_kinds(state.capabilities.capabilities) if state.capabilities is not None else []


def _stale(state: ServerState) -> bool:
    """Whether a catalog kind the server offers is unknown (to be listed)."""
    return any(state.catalog.of(kind) is None for kind in _offered(state))


UNWATCHED_SECONDS = 1.0
"""A list-change stream held this long after it was asked for (after the catalogs were listed)
leaves a gap in which a change may have gone unannounced: the catalogs are listed again."""


UNWATCHED_RELIST_SPREAD = 20.0
"""That listing comes at a point of this many seconds after the stream was held, set by the
server's name and session, so that the servers of a fleet whose streams were held together
(coming back after their origin restarted, say) do not list together, in front of the
handshakes of the ones not back yet."""
UNWATCHED_RELIST_WAIT = 20.0
"""Then it waits for the handshakes to the origin to end, this long at most."""


LISTEN_REFUSED_MAX_WAIT = 300.0
"""The longest wait before a list-change stream that the server refused is asked for again."""


def listen_wait(interval: float, refusals: int) -> float:
    """How long to wait before asking for a list-change stream again after one ended: the
    health interval, doubled for each refusal in a row after the first (a server that says its
    lists can change but refuses the stream), up to :data:`LISTEN_REFUSED_MAX_WAIT` (never
    below the interval)."""
    if refusals <= 1:
        return interval
    return max(interval, min(interval * 2.0 ** min(refusals - 1, 32), LISTEN_REFUSED_MAX_WAIT))


def _refusal(exc: Exception) -> bool:
    """Whether a list-change stream ended with the server's answer to it, an error: a refusal
    (not a connection that closed, nor a request that timed out)."""
    if isinstance(exc, MCPError):
        return exc.code not in (CONNECTION_CLOSED, REQUEST_TIMEOUT)
    return isinstance(exc, httpx2.HTTPStatusError)


def unwatched_too_long(asked_at: float, held_at: float) -> bool:
    """Whether a list-change stream asked for at ``asked_at`` and held at ``held_at`` left the
    catalogs unwatched for too long (see :data:`UNWATCHED_SECONDS`)."""
    return held_at - asked_at > UNWATCHED_SECONDS


class _Ticket:
    """The outcome of a demanded connection (or re-handshake), for the task waiting on it."""

    __slots__ = (
        "closed",
        "connection",
        "correlation_id",
        "decided",
        "done",
        "failure",
        "force",
        "fresh",
        "handshaking",
    )

    def __init__(self, correlation_id: str | None, *, force: bool = False, fresh: bool = False) -> None:
        self.correlation_id = correlation_id
        self.force = force
        self.fresh = fresh
        """A new handshake is wanted even if the current one is fresh."""
        self.done = trio.Event()
        self.connection: Connection | None = None
        self.failure: Failure | None = None
        self.closed = False
        self.handshaking = False
        """It waits for a handshake (a connection, or ``server/discover`` again), not only for
        a parked connection's session to be opened again."""
        self.decided = trio.Event()
        """Set once it waits for a handshake, or is resolved."""

    def handshake(self, tickets: list[_Ticket]) -> None:
        """Wait in ``tickets`` (those of a connection attempt or of a re-handshake)."""
        self.handshaking = True
        self.decided.set()
        tickets.append(self)

    def resolve(self, connection: Connection | None, failure: Failure | None = None) -> None:
        if not self.done.is_set():
            if connection is not None:
                # Lent now: not parked before its waiter has used it.
                connection.lent_at = trio.current_time()
            self.connection = connection
            self.failure = failure
            self.done.set()
            self.decided.set()

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


# -- reports: what the writer is told ---------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class _Report:
    done: trio.Event | None = None
    """Set once the report has been applied (for senders that wait for it)."""


@dataclass(slots=True, kw_only=True)
class _Connecting(_Report):
    pass


@dataclass(slots=True, kw_only=True)
class _Connected(_Report):
    conn: Connection
    capabilities: CapabilitySnapshot
    catalog: Catalog
    parked: bool = False
    """Handshaken without a session: it starts parked."""
    resume_seen: int = 0
    """Set by the writer: the resume demands it had answered once this was applied."""


@dataclass(slots=True, kw_only=True)
class _ConnectFailed(_Report):
    failure: Failure
    stage: str


@dataclass(slots=True, kw_only=True)
class _Outcome(_Report):
    """A probe or a call on ``conn`` ended (``failure is None``: it succeeded)."""

    conn: Connection
    failure: Failure | None
    reason: str
    correlation_id: str | None
    at: float
    activity: bool = False
    drop_when_unreachable: bool = False
    listing: tuple[str, Mapping[str, Any]] | None = None
    """A complete listing that came with a successful call: (kind, items by key)."""


@dataclass(slots=True, kw_only=True)
class _Rehandshook(_Report):
    conn: Connection
    capabilities: CapabilitySnapshot | None
    failure: Failure | None


@dataclass(slots=True, kw_only=True)
class _Closed(_Report):
    conn: Connection


@dataclass(slots=True, kw_only=True)
class _Parking(_Report):
    """The connection task found ``conn`` idle: may it close the session? The writer answers
    in ``approved`` (and ``resume_seen``: the resume demands it has answered so far)."""

    conn: Connection
    approved: bool = False
    resume_seen: int = 0


@dataclass(slots=True, kw_only=True)
class _Resumed(_Report):
    conn: Connection


@dataclass(slots=True, kw_only=True)
class _Inbound(_Report):
    """The server of a parked stdio connection sent what needs a session."""


@dataclass(slots=True, kw_only=True)
class _CatalogListed(_Report):
    conn: Connection | None
    """``None``: whichever connection is live (a list-changed notice)."""
    kind: str
    items: Mapping[str, Any] | None


@dataclass(slots=True, kw_only=True)
class _Demand(_Report):
    ticket: _Ticket


@dataclass(slots=True, kw_only=True)
class _Invalidate(_Report):
    correlation_id: str | None


@dataclass(slots=True, kw_only=True)
class _Refresh(_Report):
    ticket: _Ticket


class ServerSupervisor:
    """Owns one server's state and connection. Start it with ``await nursery.start(sup.run)``."""

    __slots__ = (
        "_anchor",
        "_attempt_correlation",
        "_cancel_scope",
        "_closed",
        "_connect_slots",
        "_connect_tickets",
        "_finished",
        "_fresh_until",
        "_http_pool",
        "_inbox",
        "_inbox_send",
        "_live",
        "_quiet",
        "_rehandshake_tickets",
        "_rehandshakes_handled",
        "_requests_handled",
        "_resume_tickets",
        "_rng",
        "_session_options",
        "_state",
        "_stream",
        "config",
        "latency",
        "limiter",
        "name",
        "policy",
        "shared_items",
    )

    def __init__(
        self,
        config: ServerConfig,
        *,
        anchor: TimeAnchor,
        stream: EventStream,
        rng: RandomSource,
        session_options: dict[str, Any] | None = None,
        http_pool: HttpPool | None = None,
        connect_slots: trio.CapacityLimiter | None = None,
        shared_items: SharedItems | None = None,
    ) -> None:
        """The supervisor of ``config``; it does nothing until started.

        Args:
            http_pool: keep-alive pools shared with the manager's other HTTP servers.
            shared_items: catalog items held once for the manager's servers that describe
                them alike.
            connect_slots: held from opening the transport until the handshake is done, so a
                fleet connects with bounded concurrency (no thundering herd).
        """
        self.config = config
        self.name = config.name
        self.policy = config.policy
        self._anchor = anchor
        self._stream = stream
        self._rng = rng
        self._session_options = session_options or {}
        self._http_pool = http_pool
        self._connect_slots = connect_slots
        self.shared_items = shared_items if shared_items is not None else SharedItems()
        self.limiter = trio.Semaphore(config.policy.max_concurrency)
        """The bulkhead: at most ``max_concurrency`` invocations use this server at once."""
        self.latency = LoadGauge()
        """The moving average of this server's call latency (see :mod:`trio_mcp._load`)."""

        self._state = Published(ServerState(auto=config.policy.connect_on_start))
        self._fresh_until = math.inf
        """When the published state's handshake goes stale (kept with each publication)."""
        self._quiet = False
        """Whether the published state is healthy with nothing pending (kept with each
        publication): a success then changes nothing but the connection's stamp."""
        self._inbox_send, self._inbox = trio.open_memory_channel[_Report](math.inf)
        # The writer's own bookkeeping (written by the writer only).
        self._live: Connection | None = None
        self._connect_tickets: list[_Ticket] = []
        self._rehandshake_tickets: list[_Ticket] = []
        self._resume_tickets: list[_Ticket] = []
        self._attempt_correlation: str | None = None
        # The connection task's own bookkeeping: the demands its attempts have answered.
        self._requests_handled = 0
        self._rehandshakes_handled = 0
        self._cancel_scope = trio.CancelScope()
        self._closed = False
        self._finished = trio.Event()

    # -----------------------------------------------------------------------------------------
    # reading state
    # -----------------------------------------------------------------------------------------

    def load(self) -> Load:
        """Calls in flight now and the latency average, for choosing between equal servers."""
        return Load(self.policy.max_concurrency - self.limiter.value, self.latency.latency)

    @property
    def state(self) -> ServerState:
        """The published state now."""
        return self._state.value

    def _snapshot_of(self, state: ServerState, now: float) -> ServerSnapshot:
        caps = state.capabilities
        live = self._live
        if live is not None and live.session_id != state.session_id:
            live = None
        return snapshot_of(
            self.name,
            state,
            now=now,
            handshake_max_age=self.policy.handshake_max_age,
            freshness_window=self.policy.freshness_window,
            protocol_version=caps.protocol_version if caps is not None else None,
            used_at=live.used_at if live is not None else None,
            checked_at=live.checked_at if live is not None else None,
        )

    def snapshot(self) -> ServerSnapshot:
        """A frozen view of this server's state now."""
        return self._snapshot_of(self._state.value, trio.current_time())

    def should_retry(self) -> bool:
        """Whether the retry window is open (no failure pending, or its backoff has elapsed)."""
        return self._state.value.window_open(trio.current_time())

    @property
    def status(self) -> ServerStatus:
        return self._state.value.status

    @property
    def connection(self) -> Connection | None:
        """The live connection, if any."""
        conn = self._live
        return conn if conn is not None and conn.alive else None

    @property
    def catalog(self) -> Any:
        """The last known tools / resources / prompts of this server (a ``Catalog``)."""
        return self._state.value.catalog

    def tool_info(self, name: str) -> Any:
        """The last listed ``Tool`` called ``name``, or ``None``."""
        tools = self._state.value.catalog.tools
        return tools.get(name) if tools is not None else None

    async def wait_for(self, predicate: Callable[[ServerSnapshot], bool]) -> ServerSnapshot:
        """Wait until ``predicate(snapshot)`` holds; returns that snapshot.

        The predicate sees every published state (checked when it is published), so a
        change cannot be missed however briefly it held.

        Raises:
            ManagerClosedError: the supervisor was closed (server removed, manager closed)
                before the predicate held.
        """
        state = await self._state.wait_value(
            lambda s: (
                s.connection is ConnectionState.CLOSED or predicate(self._snapshot_of(s, trio.current_time()))
            ),
            stamps=True,  # a snapshot reads the connection's stamps (when it was last checked)
        )
        snapshot = self._snapshot_of(state, trio.current_time())
        if state.connection is ConnectionState.CLOSED and not predicate(snapshot):
            raise ManagerClosedError(f"the supervisor of {self.name!r} was closed")
        return snapshot

    def __repr__(self) -> str:
        state = self._state.value
        return f"<ServerSupervisor {self.name} {state.status.value}/{state.connection.value}>"

    # -----------------------------------------------------------------------------------------
    # reporting (any task): these only enqueue
    # -----------------------------------------------------------------------------------------

    def _send(self, report: _Report) -> None:
        try:
            self._inbox_send.send_nowait(report)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ManagerClosedError(f"the supervisor of {self.name!r} is closed") from None

    def _inbound(self) -> None:
        """The stdio server sent what needs a session while none is open: one is opened."""
        with suppress(ManagerClosedError):
            self._send(_Inbound())

    async def _send_and_wait(self, report: _Report) -> None:
        report.done = trio.Event()
        self._send(report)
        await report.done.wait()

    def note_success(self, conn: Connection, start: float, end: float) -> bool:
        """A call on ``conn`` that started at ``start`` succeeded at ``end``: its latency goes
        into the load gauge. When that changes nothing but the connection's usage stamp (a
        healthy server, nothing pending), stamp it and return ``True``; otherwise return
        ``False``: the caller must :meth:`report_outcome`."""
        self.latency.observe(end - start, end)
        if self._quiet and conn is self._live:
            conn.stamp(end)
            return True
        return False

    async def report_outcome(
        self,
        conn: Connection,
        failure: Failure | None,
        reason: str,
        correlation_id: str | None = None,
        *,
        at: float | None = None,
        listing: tuple[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """A caller's request on ``conn`` succeeded (``failure is None``) or failed; a
        successful listing brings the server's new catalog of that kind.

        Returns once the supervisor has applied it, so the caller reads its own outcome in
        the next snapshot. Cancellation does not withdraw the report.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        report = _Outcome(
            conn=conn,
            failure=failure,
            reason=reason,
            correlation_id=correlation_id,
            at=trio.current_time() if at is None else at,
            activity=True,
            listing=listing,
        )
        with trio.CancelScope(shield=True):  # bounded: the writer never blocks
            await self._send_and_wait(report)

    # -----------------------------------------------------------------------------------------
    # the writer
    # -----------------------------------------------------------------------------------------

    def _publish(
        self,
        new: ServerState,
        reason: str,
        *,
        category: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        old = self._state.value
        if new == replace(old, version=new.version):
            return  # nothing a reader could see has changed
        self._state.set(new)
        expires = handshake_expires_at(new, self.policy.handshake_max_age)
        self._fresh_until = math.inf if expires is None else expires
        self._quiet = (
            new.status is ServerStatus.HEALTHY and not new.consecutive_failures and new.retry_at is None
        )
        self._stream.state_changed(
            self.name,
            old,
            new,
            reason=reason,
            category=category,
            correlation_id=correlation_id,
            at=trio.current_time(),
        )

    def _fail(
        self,
        failure: Failure,
        reason: str,
        correlation_id: str | None,
        *,
        now: float,
        connect_failed: bool = False,
    ) -> None:
        state = self._state.value
        delay = self.policy.backoff.delay(state.retry_count, self._rng)
        self._publish(
            on_failure(
                state,
                failure,
                now=now,
                retry_delay=delay,
                unreachable_threshold=self.policy.unreachable_threshold,
                connect_failed=connect_failed,
            ),
            f"{reason}: {failure.message}",
            category=failure.category,
            correlation_id=correlation_id,
        )

    def _drop(self, conn: Connection, reason: str, then: AfterDrop) -> None:
        if conn.drop_reason is None:
            conn.drop(reason, then=then)
            if conn is self._live:
                self._publish(on_dropping(self._state.value), f"session dropped: {reason}")

    def _resolve_connect_tickets(self, conn: Connection | None, failure: Failure | None) -> None:
        tickets, self._connect_tickets = self._connect_tickets, []
        for ticket in tickets:
            ticket.resolve(conn, failure)

    def _apply(self, report: _Report) -> None:
        now = trio.current_time()
        state = self._state.value
        if isinstance(report, _Outcome):
            conn = report.conn
            if conn is not self._live or conn.drop_reason is not None:
                return  # about a connection that is already gone
            failure = report.failure
            if failure is None:
                self._publish(
                    on_success(state, now=report.at, activity=report.activity),
                    f"{report.reason} succeeded",
                    correlation_id=report.correlation_id,
                )
                if report.listing is not None:
                    kind, items = report.listing
                    self._publish(on_catalog(self._state.value, kind, items), f"{kind} listed")
                return
            said = "connection lost" if report.reason == "connection" else f"{report.reason} failed"
            self._fail(failure, said, report.correlation_id, now=report.at)
            if failure.connection_dead or (
                report.drop_when_unreachable and self._state.value.status is ServerStatus.UNREACHABLE
            ):
                self._drop(conn, failure.message, "backoff")
        elif isinstance(report, _Connecting):
            self._attempt_correlation = next(
                (t.correlation_id for t in self._connect_tickets if t.correlation_id), None
            )
            self._publish(on_connecting(state), "connecting")
        elif isinstance(report, _Connected):
            self._live = report.conn
            self._publish(
                on_connected(
                    state,
                    now=now,
                    capabilities=report.capabilities,
                    catalog=report.catalog,
                    parked=report.parked,
                ),
                "handshake succeeded",
                correlation_id=self._attempt_correlation,
            )
            report.resume_seen = self._state.value.resume_requests
            if not report.parked:
                self._resolve_connect_tickets(report.conn, None)
                return
            # Those waiting for it need its session: it is opened for them (no round trip).
            tickets, self._connect_tickets = self._connect_tickets, []
            for ticket in tickets:
                ticket.fresh = False  # its handshake has just run
                self._on_demand(ticket, now)
        elif isinstance(report, _ConnectFailed):
            self._fail(
                report.failure,
                f"{report.stage} failed",
                self._attempt_correlation,
                now=now,
                connect_failed=True,
            )
            self._resolve_connect_tickets(None, report.failure)
        elif isinstance(report, _Closed):
            conn = report.conn
            if conn is self._live:
                self._live = None
            self._publish(on_closed(self._state.value, conn.after_drop), "session closed")
            tickets, self._resume_tickets = self._resume_tickets, []
            for ticket in tickets:
                ticket.handshake(self._connect_tickets)
            if self._connect_tickets and conn.after_drop != "reconnect":
                self._demand_connect(now)
            tickets, self._rehandshake_tickets = self._rehandshake_tickets, []
            for ticket in tickets:
                ticket.resolve(None, Failure("transport_error", "the session closed", True))
        elif isinstance(report, _Rehandshook):
            if report.conn is not self._live:
                return
            tickets, self._rehandshake_tickets = self._rehandshake_tickets, []
            correlation_id = next((t.correlation_id for t in tickets if t.correlation_id), None)
            if report.failure is None:
                assert report.capabilities is not None
                self._publish(
                    on_rehandshaken(state, now=now, capabilities=report.capabilities),
                    "re-handshake succeeded",
                    correlation_id=correlation_id,
                )
                for ticket in tickets:
                    ticket.resolve(report.conn)
            else:
                self._fail(report.failure, "re-handshake failed", correlation_id, now=now)
                if report.failure.connection_dead:
                    self._drop(report.conn, report.failure.message, "backoff")
                for ticket in tickets:
                    ticket.resolve(None, report.failure)
        elif isinstance(report, _Parking):
            conn = report.conn
            report.resume_seen = state.resume_requests
            park_after = self.policy.park_after
            if (
                conn is self._live
                and conn.drop_reason is None
                and not conn.pinned
                and park_after is not None
                and not (self._connect_tickets or self._rehandshake_tickets or self._resume_tickets)
                and self.limiter.value == self.policy.max_concurrency
                and now >= max(conn.used_at, conn.lent_at) + park_after
            ):
                report.approved = True
                self._publish(on_parked(state), "session parked: idle")
        elif isinstance(report, _Resumed):
            if report.conn is self._live:
                self._publish(on_resumed(state), "session resumed")
            tickets, self._resume_tickets = self._resume_tickets, []
            for ticket in tickets:
                self._on_demand(ticket, now)
        elif isinstance(report, _CatalogListed):
            if report.conn is None or report.conn is self._live:
                self._publish(on_catalog(state, report.kind, report.items), f"{report.kind} listed")
        elif isinstance(report, _Demand):
            self._on_demand(report.ticket, now)
        elif isinstance(report, _Refresh):
            report.ticket.handshake(self._connect_tickets)
            live = self._live
            if live is not None and live.drop_reason is None:
                self._drop(live, "refreshed", "reconnect")
            elif state.connection is not ConnectionState.CONNECTING and (
                live is None or live.after_drop != "reconnect"
            ):
                self._publish(on_connect_demanded(state), "refresh demanded")
        elif isinstance(report, _Inbound):
            live = self._live
            if live is not None and live.drop_reason is None and state.parked and not self._resume_tickets:
                self._publish(on_resume_demanded(state), "resume demanded: the server sent a message")
        elif isinstance(report, _Invalidate):
            live = self._live
            if live is not None and live.drop_reason is None:
                self._drop(live, "invalidated", "idle")
            else:
                self._publish(on_invalidated(state), "invalidated")

    def _on_demand(self, ticket: _Ticket, now: float) -> None:
        """Someone needs a usable session: decide how they get one."""
        live = self._live
        if live is not None and live.alive and live.drop_reason is None:
            if self._state.value.parked:
                # Its session is opened again first (no round trip); then this is decided anew.
                if not self._resume_tickets:
                    self._publish(on_resume_demanded(self._state.value), "resume demanded")
                self._resume_tickets.append(ticket)
                return
            if self.ready_connection(now) is not None and not ticket.fresh:
                ticket.resolve(live)
                return
            # Alive, but its handshake is stale.
            if live.era == "modern":
                if not self._rehandshake_tickets:
                    self._publish(on_rehandshake_demanded(self._state.value), "re-handshake demanded")
                ticket.handshake(self._rehandshake_tickets)
                return
            # Legacy era: a handshake belongs to a session; re-handshaking means a new session.
            ticket.handshake(self._connect_tickets)
            self._drop(live, "handshake expired", "reconnect")
            return
        state = self._state.value
        if state.connection in (ConnectionState.CONNECTING, ConnectionState.CLOSING):
            ticket.handshake(self._connect_tickets)  # the attempt under way (or next) answers it
            return
        ticket.handshake(self._connect_tickets)
        self._demand_connect(now)

    def _demand_connect(self, now: float) -> None:
        """Start a connection attempt for the waiting tickets, if any of them may have one."""
        state = self._state.value
        if any(t.force for t in self._connect_tickets) or state.window_open(now):
            self._publish(on_connect_demanded(state), "connection demanded")
            return
        # The server failed since the caller looked, and its retry window is closed again:
        # fail fast instead of forcing a reconnect.
        self._resolve_connect_tickets(None, Failure("unavailable", str(self._unavailable()), False))

    async def run(self, *, task_status: trio.TaskStatus[ServerSupervisor] = trio.TASK_STATUS_IGNORED) -> None:
        """Supervise the server until cancelled. Never raises anything but cancellation."""
        try:
            with self._cancel_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._own_connection, name=f"{self.name}: connection")
                    task_status.started(self)
                    async for report in self._inbox:
                        try:
                            self._apply(report)
                        except Exception:  # a bug here must not end the supervision
                            logger.exception("supervisor of %r failed to apply %r", self.name, report)
                        finally:
                            if report.done is not None:
                                report.done.set()
        finally:
            self._closed = True
            self._inbox_send.close()
            while True:
                try:
                    pending = self._inbox.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                if pending.done is not None:
                    pending.done.set()
                if isinstance(pending, _Demand | _Refresh):
                    pending.ticket.closed = True
                    pending.ticket.resolve(None)
            for ticket in (*self._connect_tickets, *self._rehandshake_tickets, *self._resume_tickets):
                ticket.closed = True
                ticket.resolve(None)
            self._connect_tickets, self._rehandshake_tickets, self._resume_tickets = [], [], []
            self._live = None
            self._publish(on_stopped(self._state.value), "supervisor stopped")
            self._finished.set()

    # -----------------------------------------------------------------------------------------
    # the connection task
    # -----------------------------------------------------------------------------------------

    async def _own_connection(self) -> None:
        while True:
            state = self._state.value
            now = trio.current_time()
            if state.connect_requests != self._requests_handled or (
                state.auto and state.connection is not ConnectionState.CLOSED and state.window_open(now)
            ):
                try:
                    await self._connect_and_serve()
                except BaseException as exc:
                    passing, error = split_failures(exc)
                    if passing is not None:
                        raise passing from None
                    # A bug of ours: record it like any failure and retry with backoff.
                    logger.exception("supervisor of %r failed unexpectedly", self.name)
                    assert error is not None
                    failure = classify(error)
                    await self._send_and_wait(_ConnectFailed(failure=failure, stage="supervisor"))
                continue
            deadline = state.retry_at if state.auto and state.retry_at is not None else math.inf
            with trio.move_on_at(deadline):
                await self._state.wait_transition(state)

    def _client_session_options(self) -> dict[str, Any]:
        """The SDK session keyword arguments, with list-changed notifications hooked in."""
        options = dict(self._session_options)
        user_handler = options.get("message_handler")

        async def on_message(message: Any) -> None:
            kind = _LIST_CHANGED.get(type(message))
            if kind is not None:
                # The cached catalog no longer describes the server: forget it, so routing stops
                # filtering by it and the next listing fetches it anew.
                self._send(_CatalogListed(conn=None, kind=kind, items=None))
            if user_handler is not None:
                await user_handler(message)
            else:
                await trio.lowlevel.checkpoint()

        options["message_handler"] = on_message
        return options

    async def _connect_and_serve(self) -> None:
        await self._send_and_wait(_Connecting())
        # Every demand applied before this attempt was published waits for its outcome; later
        # ones see it under way and wait too, without asking for another.
        self._requests_handled = self._state.value.connect_requests
        self._rehandshakes_handled = self._state.value.rehandshake_requests
        link = Link(self.name)
        conn: Connection | None = None
        stage = "connect"
        slots = self._connect_slots
        holding = False

        def release() -> None:
            """Let the connect slot go (once the handshake and the first listing are done)."""
            nonlocal holding
            if holding:
                holding = False
                assert slots is not None
                slots.release()

        pipes: StdioPipes | None = None
        # Tasks that go on while the connection is parked (probes, the list-change stream, and
        # the readers of a stdio server's pipes).
        async with trio.open_nursery() as lasting:
            try:
                if slots is not None:
                    await slots.acquire()
                    holding = True
                if isinstance(self.config.transport, StdioTransport):
                    # The process outlives the sessions opened over its pipes.
                    pipes = await spawn(self.config.transport, link)
                    pipes.on_inbound = self._inbound
                    pipes.start(lasting)
                answer: DiscoverResult | InitializeResult | None = None
                parked_at: int | None = None
                mode = self.policy.protocol
                sessionless = self._sessionless(link)
                if sessionless is not None:
                    stage = "handshake"
                    with self._handshake_deadline():
                        if not await discover_without_session(sessionless, mode):
                            sessionless, mode = None, "legacy"  # initialize, through a session
                if sessionless is not None:
                    # Handshaken without a session: one is opened when a call needs it.
                    connected = await self._report_connected(sessionless, link, release, parked=True)
                    conn = connected.conn
                    stage = "serve"
                    answer = sessionless.discover_result
                    self._serve_lasting(conn, lasting)
                    parked_at = connected.resume_seen
                    del sessionless
                else:
                    async with self._open_session(link) as (session, write):
                        stage = "handshake"
                        with self._handshake_deadline():
                            await handshake(session, mode)
                        conn = (await self._report_connected(session, link, release, parked=False)).conn
                        stage = "serve"
                        self._serve_lasting(conn, lasting)
                        parked_at = await self._serve(conn, write)
                        answer = session.discover_result or session.initialize_result
                    del session, write  # the closed session is not kept while parked
                while parked_at is not None and answer is not None:
                    parked_at, answer = await self._park_and_resume(conn, answer, parked_at)
            except BaseException as exc:
                release()
                # Nothing the transport, the session or the handshake raises may leave this task:
                # the manager's nursery (and every other server) would die with it. Cancellation
                # goes on; a failure that arrives with it is the transport complaining while it is
                # torn down, and is not recorded.
                passing, error = split_failures(exc)
                if passing is not None:
                    raise passing from None
                assert error is not None
                failure = classify(error, link.facts())
                if conn is None:
                    if stage == "handshake" and failure.category in ("invalid_request", "rpc_error"):
                        failure = Failure("protocol_error", f"handshake refused: {failure.message}", True)
                    if failure.category in ("connect_error", "spawn_error"):
                        stage = "connect"  # streamable HTTP connects lazily, during the handshake
                    await self._send_and_wait(_ConnectFailed(failure=failure, stage=stage))
                elif conn.drop_reason is None:
                    # The transport died under a live connection before anyone noticed.
                    await self._send_and_wait(
                        _Outcome(
                            conn=conn,
                            failure=failure,
                            reason="connection",
                            correlation_id=None,
                            at=trio.current_time(),
                        )
                    )
                    if conn.drop_reason is None:
                        conn.drop(failure.message, then="backoff")
            finally:
                if pipes is not None:
                    await pipes.aclose()
            lasting.cancel_scope.cancel()
        if conn is not None:
            await self._send_and_wait(_Closed(conn=conn))

    async def _report_connected(
        self, session: ClientSession, link: Link, release: Callable[[], None], *, parked: bool
    ) -> _Connected:
        """Describe the connection handshaken on ``session`` (its capability snapshot, and what
        it offers), let the connect slot go (``release``) and report it; the report as applied.
        ``parked``: ``session`` is never entered, so the connection starts parked."""
        conn = Connection(
            server=self.name,
            session=session,
            session_id=self._state.value.sessions_opened,
            link=link,
            opened_at=trio.current_time(),
        )
        if parked:
            conn.park()
        capabilities = capability_snapshot(session, self._anchor)
        # What the server offers, so routing and argument checks are right from the first call
        # (best effort: what cannot be listed stays unknown).
        pages, kinds = session_pages(session), offered_kinds(capabilities.capabilities)
        catalog = await fetch_catalog(pages, kinds, self.policy.handshake_timeout, self.shared_items)
        release()
        if link.sessionless is not None:
            # Up: what its sessionless dispatcher sends from now on (a catalog listed again)
            # is not a handshake that holds back the origin's probes and streams.
            link.sessionless.handshaking = False
        report = _Connected(conn=conn, capabilities=capabilities, catalog=catalog, parked=parked)
        await self._send_and_wait(report)
        return report

    @contextmanager
    def _handshake_deadline(self) -> Iterator[None]:
        """The handshake's deadline (``handshake_timeout``), raising
        :class:`HandshakeTimeoutError` when it passes."""
        try:
            with trio.fail_after(self.policy.handshake_timeout):
                yield
        except trio.TooSlowError:
            raise HandshakeTimeoutError(
                f"handshake did not finish within {self.policy.handshake_timeout:g}s"
            ) from None

    def _sessionless(self, link: Link) -> ClientSession | None:
        """An SDK session, never entered, that sends the handshake by itself when the
        connection may start parked: a plain-HTTP or stdio server (see :meth:`_parkable`) that
        may speak 2026-07-28. ``None``: the handshake goes through an open session."""
        transport = self.config.transport
        if (
            self.policy.park_after is None
            or self.policy.protocol == "legacy"
            or self.policy.probe not in ("auto", "discover", "none")
        ):
            return None
        if isinstance(transport, HttpTransport) and (
            self._http_pool is None or not plain_http(transport, link, self._http_pool)
        ):
            return None
        if link.sessionless is None:
            return None
        return self._never_entered(link.sessionless)

    def _never_entered(self, dispatcher: SessionlessRequests) -> ClientSession:
        """An SDK session with this supervisor's options that is never entered: each request
        it makes goes through ``dispatcher`` by itself (see ``Link.sessionless``)."""
        return FleetSession(dispatcher=cast(Any, dispatcher), **self._session_options)

    def _serve_lasting(self, conn: Connection, lasting: trio.Nursery) -> None:
        """Start what goes on whether or not ``conn`` is parked: its probes and a list-change
        stream held outside the session."""
        if self.policy.probe != "none":
            lasting.start_soon(self._probe_periodically, conn, name=f"{self.name}: health probes")
        if conn.era == "modern" and conn.link.listen_stream is not None:
            lasting.start_soon(self._listen_for_list_changes, conn, lasting, name=f"{self.name}: listen")

    @asynccontextmanager
    async def _open_session(self, link: Link) -> AsyncIterator[tuple[ClientSession, Any]]:
        """The transport and an SDK session over it (not handshaken), and the transport's
        write stream; both close on exit, in the task that opened them. A plain SDK server in
        this process, in the 2026-07-28 era, is called directly (no write stream: ``None``)."""
        transport = self.config.transport
        server = (
            direct_server(transport, self.policy.protocol) if isinstance(transport, MemoryTransport) else None
        )
        if server is not None:
            async with open_direct(server, link) as dispatcher:
                session = FleetSession(dispatcher=cast(Any, dispatcher), **self._client_session_options())
                async with session:
                    session_servers[session] = self.name
                    yield session, None
            return
        async with open_transport(transport, link, http_pool=self._http_pool) as (read, write):
            async with FleetSession(read, write, **self._client_session_options()) as session:
                session_servers[session] = self.name  # client-feature handlers learn who asked
                yield session, write

    @asynccontextmanager
    async def _resumed_session(self, conn: Connection) -> AsyncIterator[tuple[ClientSession, Any]]:
        """The session ``conn`` is served with once resumed, and the transport's write stream:
        on a 2026-07-28 connection whose transport sends each request by itself
        (``Link.plain_calls``), a session that is never entered (no write stream: ``None``);
        else one opened over the transport, as :meth:`_open_session`."""
        calls = conn.link.plain_calls
        if calls is None or conn.era != "modern":
            async with self._open_session(conn.link) as opened:
                yield opened
            return
        session = FleetSession(dispatcher=cast(Any, calls), **self._client_session_options())
        session_servers[session] = self.name

        async def on_notification(message: dict[str, Any]) -> None:
            # As the session's own receive loop would have: typed, to the logging callback and
            # the message handler (which sees list changes too).
            params = message.get("params")
            await _deliver_notification(session, str(message.get("method")), params)

        calls.on_notification = on_notification
        try:
            yield session, None
        finally:
            calls.on_notification = None
            calls.abandon()  # none is under way when parked; when dropped, they fail

    def _parkable(self, conn: Connection) -> bool:
        """Whether ``conn`` may close its session while idle: everything that goes on while it
        is parked (probes, the list-change stream, a catalog listed again) goes without one,
        and what its transport holds (the pool it leases from, a stdio server's pipes) outlives
        the session."""
        link = conn.link
        if (
            self.policy.park_after is None
            or link.sessionless is None
            or not probes_without_session(conn, self.policy.probe)
        ):
            return False
        if conn.era == "modern":
            return link.listen_stream is not None
        # A 2025-11-25 server keeps its session's state itself, but over HTTP our end of it
        # (the session id) goes with the session; a stdio server's process keeps it all, and
        # what it sends meanwhile opens a session again (see ``StdioPipes.on_inbound``).
        return link.stdio is not None

    async def _park_and_resume(
        self, conn: Connection, answer: DiscoverResult | InitializeResult, resumes_seen: int
    ) -> tuple[int | None, DiscoverResult | InitializeResult | None]:
        """Keep ``conn`` parked (its session was closed) until it is needed (a demand, or a
        catalog to list again), then open a session again, adopting the handshake's
        ``answer``, and serve it. Returns what :meth:`_serve` did and the answer now."""
        conn.park()
        # A catalog to list again is listed without a session where the transport can.
        dispatcher = conn.link.sessionless

        def wanted(state: ServerState) -> bool:
            return conn.drop_reason is not None or state.resume_requests != resumes_seen

        def needed(state: ServerState) -> bool:
            return wanted(state) or _stale(state)

        while True:
            state = await self._state.wait_value(needed)
            if conn.drop_reason is not None:
                return None, None
            if dispatcher is None or wanted(state):
                break
            async with trio.open_nursery() as relisting:  # until it is wanted meanwhile

                async def until_wanted(scope: trio.CancelScope = relisting.cancel_scope) -> None:
                    await self._state.wait_value(wanted)
                    scope.cancel()

                relisting.start_soon(until_wanted)
                sessionless = self._never_entered(dispatcher)
                sessionless.adopt(answer)
                await self._list_stale(conn, session_pages(sessionless), _offered(state), state)
                relisting.cancel_scope.cancel()
            del sessionless  # not kept while parked
        async with self._resumed_session(conn) as (session, write):
            session.adopt(answer)  # no round trip: the server's answer is still current
            tools = self._state.value.catalog.tools
            if tools is not None:
                prime_tool_listing(session, list(tools.values()))
            conn.resume(session)
            await self._send_and_wait(_Resumed(conn=conn))
            parked_at = await self._serve(conn, write)
        return parked_at, session.discover_result or session.initialize_result

    async def _wait_idle(self, conn: Connection) -> int:
        """Wait until the writer agrees that ``conn`` has been idle for ``park_after`` (no call
        in flight, none lent out meanwhile); returns the resume demands it had answered then."""
        park_after = self.policy.park_after
        assert park_after is not None
        while True:
            await trio.sleep_until(max(conn.used_at, conn.lent_at) + park_after)
            if trio.current_time() < max(conn.used_at, conn.lent_at) + park_after:
                continue  # used meanwhile
            report = _Parking(conn=conn)
            await self._send_and_wait(report)
            if report.approved:
                return report.resume_seen
            await trio.sleep(park_after)  # busy (calls in flight, demands pending): later

    async def _serve(self, conn: Connection, write: Any) -> int | None:
        """Serve ``conn`` while its session is open, until it is dropped (returns ``None``) or
        parked once idle for ``park_after`` (returns the resume demands answered then)."""
        parked_at: int | None = None
        async with trio.open_nursery() as nursery:
            if write is not None:  # a session never entered sends no cancel notices
                nursery.start_soon(
                    conn.link.forward_cancel_notices, write.send_direct, name=f"{self.name}: cancel notices"
                )
            nursery.start_soon(self._watch_link, conn, name=f"{self.name}: watch connection")
            nursery.start_soon(self._relist_on_change, conn, name=f"{self.name}: catalog")
            if conn.era == "modern":
                nursery.start_soon(self._rehandshake_on_demand, conn, name=f"{self.name}: re-handshake")
                if conn.link.listen_stream is None:  # through the session: it ends with it
                    nursery.start_soon(
                        self._listen_for_list_changes, conn, nursery, name=f"{self.name}: listen"
                    )
            if self._parkable(conn):

                async def park_when_idle() -> None:
                    nonlocal parked_at
                    parked_at = await self._wait_idle(conn)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(park_when_idle, name=f"{self.name}: park when idle")
            await conn.wait_dropped()
            nursery.cancel_scope.cancel()
        return parked_at if conn.drop_reason is None else None

    async def _watch_link(self, conn: Connection) -> None:
        await conn.link.dead.wait()
        if conn.drop_reason is None:
            category, reason = conn.link.exit_reason or ("transport_error", "connection closed")
            await self._send_and_wait(
                _Outcome(
                    conn=conn,
                    failure=Failure(category, reason, True),
                    reason="connection",
                    correlation_id=None,
                    at=trio.current_time(),
                )
            )

    async def _listen_for_list_changes(self, conn: Connection, nursery: trio.Nursery) -> None:
        """On a 2026-07-28 connection, list changes arrive only on a ``subscriptions/listen``
        stream: hold one open (for the lists the server says can change) and drop the cached
        catalog entries it announces. Best effort: without it, catalogs are refreshed on listing.

        The stream goes through the SDK session, or, where the transport holds it by itself
        (``Link.listen_stream``: plain HTTP), over a socket of its own; the user's message
        handler sees the list-changed notifications either way. What is listened for follows
        the server's capabilities: a re-handshake that changes them opens the stream anew."""
        plain = conn.link.listen_stream
        user_handler = self._session_options.get("message_handler")
        # A stream asked for before ended (lost, or never held: the server was down): a change
        # made meanwhile (a restarted server's, say) was announced on none, so the catalogs are
        # listed again once a stream is held.
        ended = False
        refusals = 0  # the server's refusals of the stream in a row
        while True:
            snapshot = self._state.value.capabilities
            said_then = snapshot.capabilities if snapshot is not None else {}

            def changed(state: ServerState, said_then: Mapping[str, Any] = said_then) -> bool:
                return state.capabilities is not None and state.capabilities.capabilities != said_then

            wanted = listened_kinds(said_then)
            if not wanted:
                await self._state.wait_value(changed)
                continue
            held = False
            asked_at = trio.current_time()

            async def on_message(
                subscription_id: str,
                message: dict[str, Any],
                wanted: tuple[str, ...] = wanted,
                asked_at: float = asked_at,
            ) -> None:
                nonlocal held, ended
                said = stream_event(message, subscription_id)
                if said == "acknowledged":
                    held = True
                    self._relist_once_held(conn, wanted, asked_at, nursery, ended)
                    ended = False
                elif said is not None and held:
                    self._send(_CatalogListed(conn=conn, kind=said, items=None))
                    if user_handler is not None:
                        await _tee(user_handler, message)

            refused = False
            # Cancelled by a re-handshake that changes the capabilities: then opened anew at once.
            with trio.CancelScope() as listening:
                conn.listening = listening
                try:
                    if plain is not None:
                        await plain(conn.protocol_version or "", wanted, on_message)
                    else:
                        async with listen(
                            conn.session,
                            tools_list_changed="tools" in wanted,
                            prompts_list_changed="prompts" in wanted,
                            resources_list_changed="resources" in wanted,
                        ) as subscription:
                            held = True
                            self._relist_once_held(conn, wanted, asked_at, nursery, ended)
                            ended = False
                            async for event in subscription:
                                kind = _EVENT_KINDS.get(type(event))
                                if kind is not None:
                                    self._send(_CatalogListed(conn=conn, kind=kind, items=None))
                except Exception as exc:
                    refused = not held and _refusal(exc)
                    logger.debug("%s: list-change subscription ended: %s", self.name, exc)
            conn.listening = None
            if not listening.cancelled_caught:
                ended = True
                refusals = refusals + 1 if refused else 0
                await trio.sleep(listen_wait(self.policy.health_interval, refusals))
            if held:
                # It was lost (the server restarted, say): changes may have been missed
                # meanwhile, so the catalogs are listed again.
                self._list_again(conn, wanted)

    def _relist_once_held(
        self, conn: Connection, kinds: tuple[str, ...], asked_at: float, nursery: trio.Nursery, ended: bool
    ) -> None:
        """A list-change stream for ``kinds`` is held now: after one that ``ended`` the catalogs
        are listed again at once, else as :meth:`_relist_if_unwatched` decides."""
        if ended:
            self._list_again(conn, kinds)
        else:
            self._relist_if_unwatched(conn, kinds, asked_at, nursery)

    def _relist_if_unwatched(
        self, conn: Connection, kinds: tuple[str, ...], asked_at: float, nursery: trio.Nursery
    ) -> None:
        """A list-change stream for ``kinds``, asked for at ``asked_at``, is held now: if it
        was held only long after (it waited for a busy origin, say), a change made since the
        catalogs were listed went unannounced, so they are listed again (by a task in
        ``nursery``, once no handshake to the origin is under way: the listing can wait)."""
        if unwatched_too_long(asked_at, trio.current_time()):
            nursery.start_soon(self._list_again_later, conn, kinds, name=f"{self.name}: list again")

    async def _list_again_later(self, conn: Connection, kinds: tuple[str, ...]) -> None:
        until_still = conn.link.until_still
        if until_still is not None:
            await trio.sleep(UNWATCHED_RELIST_SPREAD * self._point_of(conn, "list again"))
            await until_still(UNWATCHED_RELIST_WAIT)
        self._list_again(conn, kinds)

    def _list_again(self, conn: Connection, kinds: tuple[str, ...]) -> None:
        """Forget the catalogs of ``kinds``: they are listed again (see :meth:`_relist_on_change`)."""
        for kind in kinds:
            self._send(_CatalogListed(conn=conn, kind=kind, items=None))

    async def _relist_on_change(self, conn: Connection) -> None:
        """List again each advertised kind whose catalog is unknown (the server said it changed,
        listing it failed, or a re-handshake found it newly advertised). A failed listing is
        retried after ``health_interval``."""

        pages = session_pages(conn.session)
        while True:
            state = await self._state.wait_value(_stale)
            await self._list_stale(conn, pages, _offered(state), state)

    async def _list_stale(
        self, conn: Connection, pages: Pages, kinds: Sequence[str], state: ServerState
    ) -> None:
        """List each of ``kinds`` whose catalog is unknown in ``state``; after a listing that
        failed, wait ``health_interval`` (it is tried again after that)."""
        for kind in kinds:
            if state.catalog.of(kind) is not None:
                continue
            try:
                with trio.fail_after(self.policy.call_timeout):
                    items = await list_kind(pages, kind)
            except (trio.TooSlowError, Exception) as exc:
                logger.debug("%s: listing %s failed: %s", self.name, kind, exc)
                await trio.sleep(self.policy.health_interval)
                return
            await self._send_and_wait(
                _CatalogListed(conn=conn, kind=kind, items=listing(kind, items, self.shared_items))
            )

    async def _rehandshake_on_demand(self, conn: Connection) -> None:
        """Re-run ``server/discover`` on the live (2026-07-28) session whenever it is demanded."""
        while True:
            seen = self._rehandshakes_handled

            def demanded(s: ServerState, seen: int = seen) -> bool:
                return s.rehandshake_requests != seen

            self._rehandshakes_handled = (await self._state.wait_value(demanded)).rehandshake_requests
            try:
                with trio.fail_after(self.policy.handshake_timeout):
                    await rediscover(conn.session)
                conn.protocol_version = conn.session.protocol_version
            except trio.TooSlowError:
                failure = Failure(
                    "timeout", f"re-handshake did not finish within {self.policy.handshake_timeout:g}s", False
                )
            except Exception as exc:
                failure = classify(exc, conn.link.facts())
            else:
                caps = capability_snapshot(conn.session, self._anchor)
                conn.handshaken_at = trio.current_time()
                before = self._state.value.capabilities
                await self._send_and_wait(_Rehandshook(conn=conn, capabilities=caps, failure=None))
                if before is None or before.capabilities != caps.capabilities:
                    if conn.listening is not None:
                        conn.listening.cancel()  # what it listens for may have changed
                continue
            await self._send_and_wait(_Rehandshook(conn=conn, capabilities=None, failure=failure))

    def _point_of(self, conn: Connection, what: str = "") -> float:
        """A point in [0, 1) set by the server's name, ``conn``'s session number and ``what``
        it is for: servers that connected together do not do ``what`` together, and a seeded
        run does it at the same times when replayed."""
        key = f"{self.name}:{conn.session_id}" + (f":{what}" if what else "")
        return zlib.crc32(key.encode()) / 2**32

    async def _probe_periodically(self, conn: Connection) -> None:
        interval = self.policy.health_interval
        checked_at = trio.current_time()
        # The first probe at a point of the interval's end set by the server's name and the
        # session's number: servers that connected together (a fleet starting) do not probe
        # together from then on, and a seeded run probes at the same times when replayed.
        spread = self.policy.probe_spread
        if spread:
            next_at = checked_at + interval * (1.0 - spread * self._point_of(conn))
        else:
            next_at = checked_at + interval
        in_rounds = probe_in_rounds(conn, self.policy.probe)
        if in_rounds is not None:
            next_at = await self._probe_in_rounds(conn, in_rounds, next_at)
            checked_at = trio.current_time()
        while True:
            await trio.sleep_until(next_at)
            next_at = max(next_at + interval, trio.current_time())
            if conn is self._live and probe_can_wait(
                self._state.value, used_at=conn.used_at, since=checked_at
            ):
                checked_at = trio.current_time()
                continue
            await self._probe_and_report(conn, None)
            checked_at = trio.current_time()

    async def _probe_in_rounds(self, conn: Connection, plain: PlainDiscoverProbe, first_due: float) -> float:
        """Probe ``conn`` in its origin's rounds (see :mod:`._transports.probe_rounds`): what
        they escalate is checked and reported here. Returns, when the server answers in a way
        rounds cannot read, when its next probe is due."""
        rounds = plain.rounds
        assert rounds is not None

        def skip(since: float) -> bool:
            return conn is self._live and probe_can_wait(self._state.value, used_at=conn.used_at, since=since)

        def version(enrolled: str = conn.protocol_version or "") -> str:
            return conn.protocol_version or enrolled

        def healthy(now: float) -> bool:
            return self._checked_quietly(conn, now)

        entry = RoundEntry(
            plain,
            version,
            origin=rounds,
            interval=self.policy.health_interval,
            timeout=self.policy.probe_timeout,
            first_due=first_due,
            skip=skip,
            healthy=healthy,
        )
        try:
            rounds.enrol(entry)
            while True:
                escalation = await entry.escalated()
                await self._probe_and_report(conn, None, escalation.check)
                if escalation.unframed:
                    return entry.due
                rounds.enrol(entry)
        finally:
            entry.withdrawn = True

    async def _probe(
        self, conn: Connection, check: Callable[[], Awaitable[None]] | None = None
    ) -> Failure | None:
        """Run one health probe on ``conn`` (or ``check`` what one found); its failure, or
        ``None``."""
        try:
            with trio.fail_after(self.policy.probe_timeout):
                await (check() if check is not None else probe(conn, self.policy.probe))
        except trio.TooSlowError:
            return Failure("timeout", f"probe timed out after {self.policy.probe_timeout:g}s", False)
        except Exception as exc:
            failure = classify(exc, conn.link.facts())
            if failure.category == "invalid_request":
                failure = Failure("rpc_error", failure.message, False)
            return failure
        return None

    def _checked_quietly(self, conn: Connection, now: float) -> bool:
        """A probe found ``conn`` healthy: if the server is quiet (healthy, nothing pending) and
        ``conn`` live, only when it was checked changes, a usage stamp of the connection (read
        into snapshots), not a state change to publish. Whether it was taken so."""
        if self._quiet and conn is self._live:
            conn.checked_at = now
            self._state.recheck()  # for wait_for: its snapshots read the stamp
            return True
        return False

    async def _probe_and_report(
        self, conn: Connection, correlation_id: str | None, check: Callable[[], Awaitable[None]] | None = None
    ) -> Failure | None:
        failure = await self._probe(conn, check)
        if failure is None and correlation_id is None and self._checked_quietly(conn, trio.current_time()):
            return None
        reason = "probe"
        if failure is not None and conn.link.exit_reason is not None:
            # The probe found the connection dead: report what its watcher would have.
            category, message = conn.link.exit_reason
            failure, reason = Failure(category, message, True), "connection"
        await self._send_and_wait(
            _Outcome(
                conn=conn,
                failure=failure,
                reason=reason,
                correlation_id=correlation_id,
                at=trio.current_time(),
                activity=False,
                drop_when_unreachable=True,
            )
        )
        return failure

    # -----------------------------------------------------------------------------------------
    # what callers use
    # -----------------------------------------------------------------------------------------

    def ready_connection(self, now: float | None = None) -> Connection | None:
        """The live connection if its handshake is fresh and it is not parked (usable without
        waiting), else ``None``. It is stamped as lent at ``now``: it is not parked for
        ``park_after`` from then."""
        conn = self._live
        if conn is None:
            return None
        if now is None:
            now = trio.current_time()
        if now >= self._fresh_until or conn.parked or not conn.alive:
            return None
        conn.lent_at = now
        return conn

    async def acquire(
        self,
        correlation_id: str | None = None,
        *,
        force: bool = False,
        observer: HandshakeObserver | None = None,
        pin: bool = True,
    ) -> Connection:
        """Borrow the live connection, connecting, resuming or re-handshaking first when needed.

        Args:
            correlation_id: recorded on the connection events this causes.
            force: connect even when the retry window is closed.
            observer: told when a handshake starts and how it ends.
            pin: the caller may keep the connection and use its session later, so it is
                never parked (``False``: the caller uses it at once and lets it go).

        Raises:
            ServerUnavailableError: no session and the retry window is closed (not forced).
            HandshakeError: connecting or the handshake failed.
            ManagerClosedError: the supervisor was closed.
        """
        if self._closed:
            raise ManagerClosedError(f"the supervisor of {self.name!r} is closed")
        now = trio.current_time()
        ready = self.ready_connection(now)
        if ready is not None:
            if pin:
                ready.pinned = True
            return ready
        if not force and self.connection is None and not self._state.value.window_open(now):
            raise self._unavailable()
        ticket = _Ticket(correlation_id, force=force)
        self._send(_Demand(ticket=ticket))
        if observer is not None:
            # Told of a handshake only: opening a parked connection's session again is not one.
            await ticket.decided.wait()
            if not ticket.handshaking:
                observer = None
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
        if pin:
            conn.pinned = True
        return conn

    async def rehandshake(self, correlation_id: str | None = None) -> Connection:
        """Run the handshake again now, fresh or not (``server/discover`` on a 2026-07-28
        connection, a new session on a legacy one; connect when there is none).

        Raises:
            HandshakeError: the handshake failed.
            ManagerClosedError: the supervisor was closed.
        """
        if self._closed:
            raise ManagerClosedError(f"the supervisor of {self.name!r} is closed")
        ticket = _Ticket(correlation_id, force=True, fresh=True)
        self._send(_Demand(ticket=ticket))
        return await ticket.wait()

    def _unavailable(self) -> ServerUnavailableError:
        state = self._state.value
        return ServerUnavailableError(
            self.name,
            status=state.status.value,
            retry_at=state.retry_at,
            category=state.last_error_category,
            last_error=state.last_error,
        )

    def invalidate(self, correlation_id: str | None = None) -> bool:
        """Drop the session; the next use opens a new one. Returns whether one was active."""
        if self._closed:
            raise ManagerClosedError(f"the supervisor of {self.name!r} is closed")
        active = self.connection is not None
        self._send(_Invalidate(correlation_id=correlation_id))
        return active

    async def refresh(self, correlation_id: str | None = None) -> Connection:
        """Drop the session and open a new one now; returns the new connection."""
        if self._closed:
            raise ManagerClosedError(f"the supervisor of {self.name!r} is closed")
        ticket = _Ticket(correlation_id, force=True)
        self._send(_Refresh(ticket=ticket))
        return await ticket.wait()

    async def connect(self, correlation_id: str | None = None) -> Connection:
        """Probe and handshake now, ignoring the retry window.

        Raises:
            SessionError: the handshake or the probe failed.
        """
        conn = await self.acquire(correlation_id, force=True, pin=False)
        failure = await self._probe_and_report(conn, correlation_id)
        if failure is not None:
            raise SessionError(f"probe failed: {failure.message}", category=failure.category)
        return conn

    async def health_check(self, correlation_id: str | None = None) -> ServerSnapshot:
        """Check health now (probe a live session, or try to connect); never raises for a
        failing server: the outcome is in the snapshot."""
        try:
            conn = self.connection
            if conn is not None:
                await self._probe_and_report(conn, correlation_id)
            else:
                await self.acquire(correlation_id, force=True, pin=False)
        except TrioMcpError:
            pass  # the outcome is in the snapshot (closed: the server was removed meanwhile)
        return self.snapshot()

    async def aclose(self) -> None:
        """Stop supervising: close the session (and its process) and wait until it is down."""
        self._cancel_scope.cancel()
        await self._finished.wait()
