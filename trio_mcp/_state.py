"""Server health status, the pure status transition, and frozen snapshots."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


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

    def to_dict(self, timestamp: Any) -> dict[str, Any]:
        return {
            "server": self.server,
            "active": self.active,
            "session_id": self.session_id,
            "handshaken": self.handshaken,
            "protocol_version": self.protocol_version,
            "opened_at": timestamp(self.opened_at),
            "last_activity_at": timestamp(self.last_activity_at),
            "freshness": self.freshness.value,
            "controls_available": self.controls_available,
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
