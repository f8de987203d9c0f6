"""Error categories and the classified ``Failure`` (pure: no I/O, no clock)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final


class ErrorCategory(enum.StrEnum):
    """Every category a failure can be classified into.

    - ``timeout``: a deadline (handshake, probe, attempt) passed.
    - ``connect_error``: the server could not be reached (refused, DNS, TLS, ...).
    - ``spawn_error``: a stdio server's command could not be started.
    - ``http_status``: an HTTP error status other than 401/403.
    - ``auth_required``: HTTP 401/403: the server answered and wants credentials.
    - ``protocol_error``: the server said something we cannot accept.
    - ``rpc_error``: a JSON-RPC error answer (the server is alive and answered).
    - ``invalid_request``: the caller's request was refused (invalid params, method or tool not
      found, arguments that do not match the server's schema).
    - ``session_expired``: the server no longer knows our session (legacy HTTP 404 after a restart).
    - ``process_exited``: a stdio server process exited.
    - ``transport_error``: the connection broke for another reason.
    - ``unavailable``: the server's retry window was closed; nothing was attempted.
    - ``shutdown``: the manager was shutting down (:meth:`Manager.drain`) and abandoned the attempt.
    - ``superseded``: a hedged attempt that another server answered first; it was cancelled.
    - ``cancelled``: the caller cancelled the invocation (a cancel scope of its own) during the
      attempt, which says nothing about the server.
    """

    TIMEOUT = "timeout"
    CONNECT_ERROR = "connect_error"
    SPAWN_ERROR = "spawn_error"
    HTTP_STATUS = "http_status"
    AUTH_REQUIRED = "auth_required"
    PROTOCOL_ERROR = "protocol_error"
    RPC_ERROR = "rpc_error"
    INVALID_REQUEST = "invalid_request"
    SESSION_EXPIRED = "session_expired"
    PROCESS_EXITED = "process_exited"
    TRANSPORT_ERROR = "transport_error"
    UNAVAILABLE = "unavailable"
    SHUTDOWN = "shutdown"
    SUPERSEDED = "superseded"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


ERROR_CATEGORIES: Final = tuple(c.value for c in ErrorCategory)
"""Every category a failure can be classified into (see :class:`ErrorCategory`)."""

DEAD_CATEGORIES: Final = frozenset(
    {
        ErrorCategory.CONNECT_ERROR,
        ErrorCategory.SPAWN_ERROR,
        ErrorCategory.SESSION_EXPIRED,
        ErrorCategory.PROCESS_EXITED,
        ErrorCategory.TRANSPORT_ERROR,
        ErrorCategory.AUTH_REQUIRED,
    }
)
"""Categories after which a connection cannot be used again."""


@dataclass(frozen=True, slots=True)
class Failure:
    """A classified failure."""

    category: str
    message: str
    connection_dead: bool
    """The connection cannot be used again: the supervisor must reconnect."""

    @property
    def is_caller_error(self) -> bool:
        return self.category == ErrorCategory.INVALID_REQUEST


@dataclass(frozen=True, slots=True)
class LinkFacts:
    """What a connection's transport had learnt when a failure happened (plain facts, so
    classification is a pure function of them)."""

    exit_reason: tuple[str, str] | None = None
    """(category, reason) once the transport knows why the peer went away."""
    http_status: int | None = None
    """The last HTTP error status the server answered with (streamable HTTP)."""
