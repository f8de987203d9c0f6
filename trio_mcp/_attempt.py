"""What an invocation did: one :class:`Attempt` per step on one server, and the result."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Stage(enum.StrEnum):
    """The step of an attempt."""

    SELECT = "select"
    """A server passed over before anything was sent (retry window closed, does not offer the
    target, its schema refuses the arguments)."""
    HANDSHAKE = "handshake"
    """Getting a usable session (connecting, handshaking)."""
    INVOKE = "invoke"
    """The request itself."""

    def __str__(self) -> str:
        return self.value


class Outcome(enum.StrEnum):
    """What is known of a failed invocation."""

    FAILED = "failed"
    """It provably executed nowhere: no attempt sent the request."""
    UNKNOWN = "unknown"
    """A request was sent and no answer came: it may have executed."""

    def __str__(self) -> str:
        return self.value


class Era(enum.StrEnum):
    """A connection's protocol era."""

    LEGACY = "legacy"
    """``initialize`` handshake (2024-11-05 to 2025-11-25)."""
    MODERN = "modern"
    """``server/discover`` (2026-07-28): no sessions."""

    def __str__(self) -> str:
        return self.value


class Budget(enum.StrEnum):
    """Whose deadline a timed-out attempt ran into."""

    SERVER = "server"
    """The server's own ``call_timeout``: it says something about the server's health."""
    CALLER = "caller"
    """A shorter deadline the caller chose (or shutdown): it does not."""

    def __str__(self) -> str:
        return self.value


@dataclass(kw_only=True, slots=True)
class Attempt:
    """One step of an invocation on one server."""

    server: str
    stage: Stage
    success: bool
    error: str | None
    category: str | None
    sent: bool
    """Whether the request was written to this server (it may have executed)."""
    started_at: float
    """Trio-clock time."""
    started_timestamp: float
    duration: float
    budget: Budget | None = None
    """For a ``timeout``: whose deadline passed. ``"server"``: the server's own
    ``call_timeout`` (or handshake timeout), which says something about its health;
    ``"caller"``: a shorter deadline the caller chose (or shutdown), which does not."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "stage": self.stage,
            "success": self.success,
            "error": self.error,
            "error_category": self.category,
            "sent": self.sent,
            "started_at": self.started_timestamp,
            "duration": self.duration,
            "budget": self.budget,
        }


@dataclass(kw_only=True, slots=True)
class InvocationResult(Generic[T]):
    """A successful invocation: the answer and which server gave it."""

    server: str
    method: str
    request_id: str
    result: T
    attempts: tuple[Attempt, ...]
