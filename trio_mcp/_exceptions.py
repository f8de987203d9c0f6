"""The exceptions trio_mcp raises.

::

    TrioMcpError
    ├── ConfigError (ValueError)          bad configuration or mcpServers JSON
    ├── UnknownServerError (LookupError)  no server registered under that name
    ├── ServerExistsError                 a server with that name is already registered
    ├── ManagerClosedError                the manager (or its supervisor) has been closed
    ├── ServerUnavailableError            the server's retry window is closed / it has no session
    ├── SessionError                      a session could not be opened or used
    │   └── HandshakeError                initialize / server/discover failed
    │       └── HandshakeTimeoutError (TimeoutError)
    ├── RequestRejectedError              the request itself was refused (no failover)
    │   └── NotOfferedError               no server offers the tool / resource / prompt
    └── InvocationFailedError             every candidate failed; carries the attempts

Errors that carry a failure classification expose ``category``: one of
:data:`trio_mcp.ERROR_CATEGORIES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._attempt import Attempt, Outcome


QUOTE_LIMIT = 200
"""Messages quote at most this many characters of a value they did not make up."""


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)``, cut to ``limit`` characters (a huge bad input makes a short message)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class TrioMcpError(Exception):
    """Base class of every exception raised by trio_mcp."""


class ConfigError(TrioMcpError, ValueError):
    """Raised when a configuration object or an ``mcpServers`` document is invalid.

    ``key`` names the offending key (dotted path) when there is one.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


class UnknownServerError(TrioMcpError, LookupError):
    """Raised when a server name is not registered with the manager."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown MCP server {quote(name)}")

    def __str__(self) -> str:  # LookupError would repr() the message
        return f"unknown MCP server {quote(self.name)}"


class ServerExistsError(TrioMcpError):
    """Raised when registering a server under a name that is already taken."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"an MCP server named {quote(name)} is already registered")


class ManagerClosedError(TrioMcpError):
    """Raised when the manager or a server's supervisor was closed (by you)."""

    def __init__(self, what: str = "the manager is closed") -> None:
        super().__init__(what)


class ServerUnavailableError(TrioMcpError):
    """Raised when a server cannot be used now: its retry window is closed.

    Attributes:
        server: the server's name.
        status: its health status when the error was raised.
        retry_at: trio-clock time at which the retry window opens, or ``None``.
        category: the category of the failure that closed the window.
    """

    def __init__(
        self,
        server: str,
        *,
        status: str,
        retry_at: float | None,
        category: str | None,
        last_error: str | None,
    ) -> None:
        self.server = server
        self.status = status
        self.retry_at = retry_at
        self.category = category
        self.last_error = last_error
        detail = f": {last_error}" if last_error else ""
        super().__init__(f"MCP server {quote(server)} is {status} and its retry window is closed{detail}")


class SessionError(TrioMcpError):
    """A session could not be opened or used. ``category`` classifies the cause."""

    category: str = "transport_error"

    def __init__(self, message: str, *, category: str | None = None) -> None:
        if category is not None:
            self.category = category
        super().__init__(message)


class InvalidResultError(SessionError):
    """Raised when a server's answer does not fit what the server itself declared (a tool's
    structured content that does not match its output schema, or is missing): the request
    reached the server and may have run, and the connection is still good."""

    category = "protocol_error"


class HandshakeError(SessionError):
    """Raised when the ``initialize`` / ``server/discover`` handshake fails."""


class HandshakeTimeoutError(HandshakeError, TimeoutError):
    """Raised when the handshake does not finish within the policy's handshake timeout."""

    category = "timeout"


class RequestRejectedError(TrioMcpError):
    """Raised when the request itself is refused: a server answered "invalid params" or
    "not found", the arguments do not fit the server's own schema of the tool or prompt (then
    nothing was sent), or no server offers the target. ``server`` is ``None`` when no single
    server refused it.

    Another server would refuse it too, so there is no failover.
    """

    def __init__(
        self,
        message: str,
        *,
        server: str | None,
        method: str,
        request_id: str,
        attempts: Sequence[Attempt],
    ) -> None:
        self.server = server
        self.method = method
        self.request_id = request_id
        self.attempts = tuple(attempts)
        super().__init__(f"{server} rejected {method}: {message}" if server else f"{method}: {message}")


_KINDS = {"tools/call": "tool", "resources/read": "resource", "prompts/get": "prompt"}


class NotOfferedError(RequestRejectedError):
    """Raised when no server offers the tool, resource or prompt: every server's known
    catalog was checked (``servers``) and none lists ``target``. Nothing was sent."""

    def __init__(
        self,
        *,
        method: str,
        target: str,
        servers: Sequence[str],
        request_id: str,
        attempts: Sequence[Attempt],
    ) -> None:
        self.target = target
        self.servers = tuple(servers)
        kind = {"tools/call": "tool", "resources/read": "resource", "prompts/get": "prompt"}.get(
            method, method
        )
        checked = ", ".join(self.servers) or "none"
        super().__init__(
            f"no server offers {kind} {quote(target)} (catalogs checked: {checked})",
            server=None,
            method=method,
            request_id=request_id,
            attempts=attempts,
        )


class InvocationFailedError(TrioMcpError):
    """Raised when no candidate server produced an answer.

    Attributes:
        method: the MCP method (``tools/call``, ``resources/read``, ...).
        outcome: ``"failed"`` when the request provably never executed anywhere,
            ``"unknown"`` when it may have executed on some server.
        attempts: every attempt in order, each with its stage, error and category.
        request_id: the invocation's request (correlation) id.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str,
        outcome: Outcome | str,
        attempts: Sequence[Attempt],
        request_id: str,
    ) -> None:
        self.method = method
        self.outcome = outcome
        self.attempts = tuple(attempts)
        self.request_id = request_id
        super().__init__(message)
