"""A server's state: one frozen value, changed only by the pure transitions below.

The server's supervisor is the only task that applies them (see ``_supervisor.py``); every
other task reads published values. Nothing here reads a clock or does I/O: ``now`` and the
backoff delay are arguments, so every transition can be tested with a table.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from ._failure import Failure


class ServerStatus(enum.StrEnum):
    """A server's health as the manager sees it."""

    UNKNOWN = "unknown"
    """Never checked yet."""
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    """The last check failed, fewer than ``unreachable_threshold`` times in a row."""
    UNREACHABLE = "unreachable"
    """``unreachable_threshold`` or more consecutive failures."""
    RECOVERED = "recovered"
    """The first success after ``degraded`` / ``unreachable``; a further success makes it healthy."""

    def __str__(self) -> str:
        return self.value


class ConnectionState(enum.StrEnum):
    """What a server's supervisor is doing with its session."""

    IDLE = "idle"
    """No session; one is opened on first use (or by ``connect``)."""
    CONNECTING = "connecting"
    READY = "ready"
    CLOSING = "closing"
    """The session was dropped and is being closed."""
    BACKOFF = "backoff"
    """The last attempt failed; the supervisor reconnects when the retry window opens."""
    CLOSED = "closed"

    def __str__(self) -> str:
        return self.value


class Freshness(enum.StrEnum):
    """How recently a session was used."""

    UNKNOWN = "unknown"
    ACTIVE_RECENT = "active_recent"
    STALE = "stale"

    def __str__(self) -> str:
        return self.value


def next_status(
    current: ServerStatus,
    *,
    success: bool,
    consecutive_failures: int,
    unreachable_threshold: int,
    category: str | None = None,
) -> ServerStatus:
    """The status after one check.

    ``consecutive_failures`` counts the failure being recorded. An ``auth_required`` failure
    never makes a server ``unreachable``: it answered, it wants credentials.
    """
    if success:
        if current in (ServerStatus.DEGRADED, ServerStatus.UNREACHABLE):
            return ServerStatus.RECOVERED
        return ServerStatus.HEALTHY
    if category == "auth_required":
        return ServerStatus.DEGRADED
    if consecutive_failures >= unreachable_threshold:
        return ServerStatus.UNREACHABLE
    return ServerStatus.DEGRADED


def freshness_of(last_activity_at: float | None, now: float, window: float) -> Freshness:
    if last_activity_at is None:
        return Freshness.UNKNOWN
    if now - last_activity_at <= window:
        return Freshness.ACTIVE_RECENT
    return Freshness.STALE


@dataclass(frozen=True, kw_only=True)
class CapabilitySnapshot:
    """What a server said about itself in its last successful handshake."""

    protocol_version: str
    era: str
    """``"legacy"`` (``initialize``) or ``"modern"`` (``server/discover``)."""
    server_name: str | None
    server_version: str | None
    capabilities: dict[str, Any]
    instructions: str | None
    captured_at: float
    """Trio-clock time of the handshake."""
    captured_timestamp: float
    """The same instant as a Unix timestamp (derived from the manager's clock anchor)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol_version": self.protocol_version,
            "era": self.era,
            "server_info": {"name": self.server_name, "version": self.server_version},
            "capabilities": self.capabilities,
            "instructions": self.instructions,
            "captured_at": self.captured_timestamp,
        }


@dataclass(frozen=True, kw_only=True)
class SessionInfo:
    """Diagnostics of one server's session."""

    server: str
    active: bool
    session_id: int | None
    """A number that changes every time a new session is opened."""
    handshaken: bool
    protocol_version: str | None
    opened_at: float | None
    last_activity_at: float | None
    freshness: Freshness
    controls_available: bool
    parked: bool = False
    """Idle with its SDK session closed; the next use opens one again without a round trip."""

    def to_dict(self, timestamp: Any) -> dict[str, Any]:
        return {
            "server": self.server,
            "active": self.active,
            "initialized": self.handshaken,
            "session_id": self.session_id,
            "opened_at": timestamp(self.opened_at),
            "last_activity_at": timestamp(self.last_activity_at),
            "freshness": self.freshness.value,
            "parked": self.parked,
        }


@dataclass(frozen=True, kw_only=True)
class ServerSnapshot:
    """A frozen view of one server's state. All ``*_at`` values are trio-clock times."""

    name: str
    status: ServerStatus
    connection: ConnectionState
    consecutive_failures: int
    retry_count: int
    last_error: str | None
    last_error_category: str | None
    last_checked_at: float | None
    retry_at: float | None
    handshaken_at: float | None
    handshake_expires_at: float | None
    capabilities: CapabilitySnapshot | None
    session: SessionInfo

    @property
    def protocol_version(self) -> str | None:
        return self.capabilities.protocol_version if self.capabilities else None

    def handshake_stale(self, now: float) -> bool:
        return self.handshake_expires_at is not None and now >= self.handshake_expires_at


AfterDrop = Literal["backoff", "idle", "reconnect"]
"""What the supervisor does once a dropped connection is closed: wait for the retry window
(``backoff``), stay idle until used (``idle``) or reconnect at once (``reconnect``)."""

CATALOG_KINDS = ("tools", "resources", "prompts")


class Listing(Mapping[str, Any]):
    """One kind of a server's catalog: the items by name (resources by URI), and each
    item's compiled argument check (built once, when the listing arrives)."""

    __slots__ = ("_items", "checks")

    def __init__(
        self,
        items: Mapping[str, Any],
        checks: Mapping[str, Callable[[Mapping[str, Any] | None], str | None]] | None = None,
    ) -> None:
        self._items = dict(items)
        self.checks = dict(checks or {})

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: str, default: Any = None) -> Any:
        return self._items.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Listing({self._items!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Catalog:
    """What a server offers, by name (resources by URI); ``None``: not known (never listed,
    or changed since)."""

    tools: Mapping[str, Any] | None = None
    resources: Mapping[str, Any] | None = None
    prompts: Mapping[str, Any] | None = None

    def of(self, kind: str) -> Mapping[str, Any] | None:
        known: Mapping[str, Any] | None = getattr(self, kind)
        return known

    def with_kind(self, kind: str, items: Mapping[str, Any] | None) -> Catalog:
        if kind not in CATALOG_KINDS:
            raise ValueError(f"unknown catalog kind {kind!r}")
        return replace(self, **{kind: items})


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerState:
    """Everything the manager knows about one server, as one immutable value.

    All ``*_at`` values are trio-clock times. ``version`` counts the transitions applied.
    """

    status: ServerStatus = ServerStatus.UNKNOWN
    connection: ConnectionState = ConnectionState.IDLE
    consecutive_failures: int = 0
    retry_count: int = 0
    """Failed attempts since the last successful handshake (the backoff exponent)."""
    last_error: str | None = None
    last_error_category: str | None = None
    last_checked_at: float | None = None
    retry_at: float | None = None
    """When the retry window opens again (``None``: it is open)."""
    handshaken_at: float | None = None
    capabilities: CapabilitySnapshot | None = None
    session_id: int | None = None
    """The live session's number (``None``: no live session)."""
    session_opened_at: float | None = None
    sessions_opened: int = 0
    last_activity_at: float | None = None
    catalog: Catalog = field(default_factory=Catalog)
    auto: bool = True
    """Reconnect by itself when the retry window opens (``False``: only on demand)."""
    connect_requests: int = 0
    """Bumped whenever a connection attempt is demanded now (the connection task follows it)."""
    rehandshake_requests: int = 0
    """Bumped whenever a re-handshake of the live (2026-07-28) session is demanded."""
    parked: bool = False
    """The live connection is parked: idle, its SDK session closed while probes go on; the
    next use opens a session again (no round trip: the handshake's answer is kept)."""
    resume_requests: int = 0
    """Bumped whenever a parked connection is needed (the connection task resumes it)."""
    version: int = 0

    def window_open(self, now: float) -> bool:
        return self.retry_at is None or now >= self.retry_at


_FIELDS: tuple[str, ...] = ()  # set below, once the class exists


def _bump(state: ServerState, **changes: Any) -> ServerState:
    """``state`` with ``changes`` and the next version (``dataclasses.replace`` without its
    per-call introspection: transitions are on the invocation path)."""
    new = object.__new__(ServerState)
    changes["version"] = state.version + 1
    for name in _FIELDS:
        object.__setattr__(new, name, changes[name] if name in changes else getattr(state, name))
    return new


_FIELDS = tuple(f.name for f in fields(ServerState))


def on_connecting(state: ServerState) -> ServerState:
    """A connection attempt starts."""
    return _bump(
        state,
        connection=ConnectionState.CONNECTING,
        sessions_opened=state.sessions_opened + 1,
    )


def _handshook(state: ServerState, now: float, capabilities: CapabilitySnapshot) -> dict[str, Any]:
    """What a successful handshake changes: a success, and the backoff starts over."""
    return {
        "status": next_status(state.status, success=True, consecutive_failures=0, unreachable_threshold=1),
        "consecutive_failures": 0,
        "retry_count": 0,
        "retry_at": None,
        "last_checked_at": now,
        "last_activity_at": now,
        "handshaken_at": now,
        "capabilities": capabilities,
    }


def on_connected(
    state: ServerState,
    *,
    now: float,
    capabilities: CapabilitySnapshot,
    catalog: Catalog | None = None,
    parked: bool = False,
) -> ServerState:
    """The handshake succeeded: the session is ready, the backoff starts over. ``parked``: it
    was handshaken without an SDK session, which is opened on first use."""
    return _bump(
        state,
        connection=ConnectionState.READY,
        session_id=state.sessions_opened,
        session_opened_at=now,
        parked=parked,
        catalog=catalog if catalog is not None else state.catalog,
        **_handshook(state, now, capabilities),
    )


def on_rehandshaken(state: ServerState, *, now: float, capabilities: CapabilitySnapshot) -> ServerState:
    """``server/discover`` ran again on the live session and succeeded."""
    return _bump(state, **_handshook(state, now, capabilities))


def on_success(state: ServerState, *, now: float, activity: bool) -> ServerState:
    """A probe or a call on the live session succeeded."""
    return _bump(
        state,
        status=next_status(state.status, success=True, consecutive_failures=0, unreachable_threshold=1),
        consecutive_failures=0,
        retry_at=None,
        last_checked_at=now,
        last_activity_at=now if activity else state.last_activity_at,
    )


def probe_can_wait(state: ServerState, *, used_at: float | None, since: float) -> bool:
    """Whether the health probe due now can be skipped: the server is healthy, nothing has failed
    since its last success, and a call succeeded on its live session after ``since`` (the last
    check; ``used_at``: that session's usage stamp). Such a call says more about the server than
    a probe would; a server that is not healthy is probed on schedule, so its recovery never
    waits for a call."""
    if state.status is not ServerStatus.HEALTHY or state.consecutive_failures:
        return False
    last = state.last_activity_at
    return (used_at is not None and used_at > since) or (last is not None and last > since)


def on_failure(
    state: ServerState,
    failure: Failure,
    *,
    now: float,
    retry_delay: float,
    unreachable_threshold: int,
    connect_failed: bool = False,
) -> ServerState:
    """A connect, handshake, probe or call failed. ``retry_delay`` is the jittered backoff
    delay for ``state.retry_count`` (the caller draws it, so this stays pure).

    ``connect_failed``: the attempt to open a session failed (the connection goes to backoff
    and the server reconnects by itself when the window opens).
    """
    failures = state.consecutive_failures + 1
    changes: dict[str, Any] = {}
    if connect_failed:
        changes.update(connection=ConnectionState.BACKOFF, auto=True)
    return _bump(
        state,
        status=next_status(
            state.status,
            success=False,
            consecutive_failures=failures,
            unreachable_threshold=unreachable_threshold,
            category=failure.category,
        ),
        consecutive_failures=failures,
        retry_count=state.retry_count + 1,
        last_error=failure.message,
        last_error_category=failure.category,
        last_checked_at=now,
        retry_at=now + retry_delay,
        **changes,
    )


def on_dropping(state: ServerState) -> ServerState:
    """The live session was dropped and is being closed."""
    return _bump(state, connection=ConnectionState.CLOSING, session_id=None, session_opened_at=None)


def on_closed(state: ServerState, then: AfterDrop) -> ServerState:
    """A dropped session is closed; ``then`` says what comes next."""
    if then == "idle":
        return _bump(state, connection=ConnectionState.IDLE, auto=False, session_id=None, parked=False)
    if then == "reconnect":
        return _bump(
            state,
            connection=ConnectionState.IDLE,
            session_id=None,
            parked=False,
            connect_requests=state.connect_requests + 1,
        )
    return _bump(state, connection=ConnectionState.BACKOFF, auto=True, session_id=None, parked=False)


def on_connect_demanded(state: ServerState) -> ServerState:
    """Someone needs a session now (the connection task starts an attempt)."""
    return _bump(state, connect_requests=state.connect_requests + 1)


def on_invalidated(state: ServerState) -> ServerState:
    """The session was invalidated while none was live: stay idle until used."""
    return _bump(state, auto=False)


def on_rehandshake_demanded(state: ServerState) -> ServerState:
    return _bump(state, rehandshake_requests=state.rehandshake_requests + 1)


def on_parked(state: ServerState) -> ServerState:
    """The live connection was idle long enough: its SDK session is closed, probes go on."""
    return _bump(state, parked=True)


def on_resume_demanded(state: ServerState) -> ServerState:
    """Someone needs the parked connection (the connection task opens its session again)."""
    return _bump(state, resume_requests=state.resume_requests + 1)


def on_resumed(state: ServerState) -> ServerState:
    """The parked connection has a session again."""
    return _bump(state, parked=False)


def on_catalog(state: ServerState, kind: str, items: Mapping[str, Any] | None) -> ServerState:
    """A listing of ``kind`` arrived (``None``: the server said its list changed)."""
    return _bump(state, catalog=state.catalog.with_kind(kind, items))


def on_stopped(state: ServerState) -> ServerState:
    """The supervisor ended (the server was removed or the manager closed)."""
    return _bump(
        state, connection=ConnectionState.CLOSED, session_id=None, session_opened_at=None, parked=False
    )


def handshake_expires_at(state: ServerState, max_age: float | None) -> float | None:
    """When the current handshake goes stale (``None``: never, or no handshake)."""
    if state.handshaken_at is None or max_age is None:
        return None
    return state.handshaken_at + max_age


def snapshot_of(
    name: str,
    state: ServerState,
    *,
    now: float,
    handshake_max_age: float | None,
    freshness_window: float,
    protocol_version: str | None,
    used_at: float | None = None,
    checked_at: float | None = None,
) -> ServerSnapshot:
    """The public view of ``state`` at ``now``; ``used_at`` and ``checked_at``: the live
    session's usage stamps (its last successful call, and its last probe that changed nothing)."""
    active = state.session_id is not None
    last_checked_at = state.last_checked_at
    if checked_at is not None and (last_checked_at is None or checked_at > last_checked_at):
        last_checked_at = checked_at
    last_activity_at = state.last_activity_at
    if used_at is not None and (last_activity_at is None or used_at > last_activity_at):
        last_activity_at = used_at
    expires = handshake_expires_at(state, handshake_max_age)
    return ServerSnapshot(
        name=name,
        status=state.status,
        connection=state.connection,
        consecutive_failures=state.consecutive_failures,
        retry_count=state.retry_count,
        last_error=state.last_error,
        last_error_category=state.last_error_category,
        last_checked_at=last_checked_at,
        retry_at=state.retry_at,
        handshaken_at=state.handshaken_at,
        handshake_expires_at=expires,
        capabilities=state.capabilities,
        session=SessionInfo(
            server=name,
            active=active,
            session_id=state.session_id,
            handshaken=active,
            protocol_version=protocol_version if active else None,
            opened_at=state.session_opened_at,
            last_activity_at=last_activity_at,
            freshness=freshness_of(last_activity_at, now, freshness_window),
            controls_available=True,
            parked=state.parked and active,
        ),
    )


# The edges of the state machine, for checking a published history.
_CONNECTION_EDGES: Mapping[ConnectionState, frozenset[ConnectionState]] = {
    ConnectionState.IDLE: frozenset({ConnectionState.CONNECTING, ConnectionState.CLOSED}),
    ConnectionState.BACKOFF: frozenset({ConnectionState.CONNECTING, ConnectionState.CLOSED}),
    ConnectionState.CONNECTING: frozenset(
        {ConnectionState.READY, ConnectionState.BACKOFF, ConnectionState.CLOSED}
    ),
    ConnectionState.READY: frozenset({ConnectionState.CLOSING, ConnectionState.CLOSED}),
    ConnectionState.CLOSING: frozenset(
        {ConnectionState.IDLE, ConnectionState.BACKOFF, ConnectionState.CLOSED}
    ),
    ConnectionState.CLOSED: frozenset(),
}
_STATUS_EDGES: Mapping[ServerStatus, frozenset[ServerStatus]] = {
    ServerStatus.UNKNOWN: frozenset({ServerStatus.HEALTHY, ServerStatus.DEGRADED, ServerStatus.UNREACHABLE}),
    ServerStatus.HEALTHY: frozenset({ServerStatus.DEGRADED, ServerStatus.UNREACHABLE}),
    ServerStatus.DEGRADED: frozenset({ServerStatus.UNREACHABLE, ServerStatus.RECOVERED}),
    # auth_required never makes a server unreachable: it answered.
    ServerStatus.UNREACHABLE: frozenset({ServerStatus.RECOVERED, ServerStatus.DEGRADED}),
    ServerStatus.RECOVERED: frozenset(
        {ServerStatus.HEALTHY, ServerStatus.DEGRADED, ServerStatus.UNREACHABLE}
    ),
}


def valid_step(previous: ServerState, current: ServerState) -> str | None:
    """Why ``previous -> current`` is not one step of the state machine (``None``: it is)."""
    if current.version != previous.version + 1:
        return f"version {previous.version} -> {current.version}"
    if current == replace(previous, version=current.version):
        return "nothing changed"
    if current.connection is not previous.connection and (
        current.connection not in _CONNECTION_EDGES[previous.connection]
    ):
        return f"connection {previous.connection} -> {current.connection}"
    if current.status is not previous.status and current.status not in _STATUS_EDGES[previous.status]:
        return f"status {previous.status} -> {current.status}"
    if current.consecutive_failures not in (
        0,
        previous.consecutive_failures,
        previous.consecutive_failures + 1,
    ):
        return f"consecutive_failures {previous.consecutive_failures} -> {current.consecutive_failures}"
    return None
