"""``classify``: every error category from the plain exceptions that produce it.

Each case pins the category, whether the connection is dead (the supervisor must reconnect)
and the message, as literals: a change in the classification shows up here.
"""

from __future__ import annotations

import anyio
import httpx2
import pydantic
import pytest
import trio
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    REQUEST_TIMEOUT,
)

import trio_mcp
from trio_mcp._errors import classify, split_failures
from trio_mcp._failure import Failure, LinkFacts

# The categories after which a connection cannot be used again, spelled out (not read from the
# code): an HTTP 401/403 is among them, as the server refuses every request of that connection.
DEAD = {
    "connect_error",
    "spawn_error",
    "session_expired",
    "process_exited",
    "transport_error",
    "auth_required",
}


def link(*, http_status: int | None = None, exit_reason: tuple[str, str] | None = None) -> LinkFacts:
    """What the connection's transport knew when the failure happened."""
    return LinkFacts(exit_reason=exit_reason, http_status=http_status)


def http_status_error(status: int) -> httpx2.HTTPStatusError:
    request = httpx2.Request("POST", "http://srv.test/mcp")
    response = httpx2.Response(status, request=request)
    return httpx2.HTTPStatusError(f"status {status}", request=request, response=response)


def validation_error() -> pydantic.ValidationError:
    class Model(pydantic.BaseModel):
        n: int

    try:
        Model.model_validate({"n": "not a number"})
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("the model accepted a string")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        # our own exceptions
        (trio_mcp.SessionError("gone", category="process_exited"), Failure("process_exited", "gone", True)),
        (trio_mcp.SessionError("slow", category="timeout"), Failure("timeout", "slow", False)),
        (trio_mcp.HandshakeTimeoutError("late"), Failure("timeout", "late", False)),
        (
            trio_mcp.ServerUnavailableError(
                "srv", status="degraded", retry_at=12.0, category="connect_error", last_error="refused"
            ),
            Failure(
                "unavailable", "MCP server 'srv' is degraded and its retry window is closed: refused", False
            ),
        ),
        # deadlines
        (trio.TooSlowError(), Failure("timeout", "TooSlowError", False)),
        (TimeoutError("read timed out"), Failure("timeout", "read timed out", False)),
        # JSON-RPC error answers
        (MCPError(REQUEST_TIMEOUT, "took too long"), Failure("timeout", "took too long", False)),
        (
            MCPError(METHOD_NOT_FOUND, "no such method"),
            Failure("invalid_request", "no such method (JSON-RPC -32601)", False),
        ),
        (
            MCPError(INVALID_PARAMS, "bad params"),
            Failure("invalid_request", "bad params (JSON-RPC -32602)", False),
        ),
        (MCPError(PARSE_ERROR, "garbled"), Failure("protocol_error", "garbled (JSON-RPC -32700)", False)),
        (
            MCPError(INVALID_REQUEST, "not like that"),
            Failure("protocol_error", "not like that (JSON-RPC -32600)", False),
        ),
        (MCPError(INTERNAL_ERROR, "boom"), Failure("rpc_error", "boom (JSON-RPC -32603)", False)),
        (MCPError(-1, "custom"), Failure("rpc_error", "custom (JSON-RPC -1)", False)),
        (
            MCPError(CONNECTION_CLOSED, "closed"),
            Failure("transport_error", "connection closed: closed", True),
        ),
        # the server forgot our (legacy HTTP) session, in each spelling
        (
            MCPError(INVALID_REQUEST, "Session terminated"),
            Failure("session_expired", "Session terminated", True),
        ),
        (
            MCPError(INVALID_REQUEST, "Not Found: Session has been terminated"),
            Failure("session_expired", "Not Found: Session has been terminated", True),
        ),
        (
            MCPError(INVALID_REQUEST, "session not found"),
            Failure("session_expired", "session not found", True),
        ),
        # malformed answers
        (
            validation_error(),
            Failure("protocol_error", f"invalid message from server: {validation_error()}", False),
        ),
        (
            RuntimeError("Unsupported protocol version from the server: 1999-01-01"),
            Failure("protocol_error", "Unsupported protocol version from the server: 1999-01-01", True),
        ),
        # HTTP
        (http_status_error(401), Failure("auth_required", "HTTP 401: status 401", True)),
        (http_status_error(403), Failure("auth_required", "HTTP 403: status 403", True)),
        (http_status_error(404), Failure("session_expired", "HTTP 404: status 404", True)),
        (http_status_error(400), Failure("http_status", "HTTP 400: status 400", False)),
        (http_status_error(429), Failure("http_status", "HTTP 429: status 429", False)),
        (http_status_error(405), Failure("http_status", "HTTP 405: status 405", True)),
        (http_status_error(406), Failure("http_status", "HTTP 406: status 406", True)),
        (http_status_error(415), Failure("http_status", "HTTP 415: status 415", True)),
        (http_status_error(502), Failure("http_status", "HTTP 502: status 502", True)),
        (httpx2.ConnectError("refused"), Failure("connect_error", "refused", True)),
        (httpx2.ConnectTimeout("no SYN-ACK"), Failure("connect_error", "no SYN-ACK", True)),
        (httpx2.ReadTimeout("slow body"), Failure("timeout", "slow body", True)),
        (httpx2.RemoteProtocolError("bad chunk"), Failure("transport_error", "bad chunk", True)),
        # sockets, pipes and streams
        (ConnectionRefusedError("refused"), Failure("connect_error", "refused", True)),
        (ConnectionResetError("reset"), Failure("connect_error", "reset", True)),
        (ConnectionAbortedError("aborted"), Failure("connect_error", "aborted", True)),
        (BrokenPipeError("broken pipe"), Failure("transport_error", "broken pipe", True)),
        (OSError("disk on fire"), Failure("transport_error", "disk on fire", True)),
        (trio.BrokenResourceError(), Failure("transport_error", "BrokenResourceError", True)),
        (trio.ClosedResourceError("closed"), Failure("transport_error", "closed", True)),
        (EOFError(), Failure("transport_error", "EOFError", True)),
        (anyio.BrokenResourceError(), Failure("transport_error", "BrokenResourceError", True)),
        (anyio.ClosedResourceError(), Failure("transport_error", "ClosedResourceError", True)),
        (anyio.EndOfStream(), Failure("transport_error", "EndOfStream", True)),
        # anything else: a broken connection, named by its type
        (ValueError("odd"), Failure("transport_error", "ValueError: odd", True)),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_classify_plain_exceptions(exc: BaseException, expected: Failure) -> None:
    assert classify(exc) == expected


@pytest.mark.parametrize("status", [401, 403])
def test_http_401_and_403_kill_the_connection_in_every_form(status: int) -> None:
    """However an HTTP 401/403 reaches classification (the HTTP error itself, the SDK's closed
    connection or internal error with the status seen on the link, or the ``HandshakeError``
    that a caller waiting for the handshake gets), it is ``auth_required`` and dead."""
    seen = link(http_status=status)
    forms: list[tuple[BaseException, LinkFacts | None]] = [
        (http_status_error(status), None),
        (MCPError(CONNECTION_CLOSED, "closed"), seen),
        (MCPError(INTERNAL_ERROR, "server error"), seen),
        (trio_mcp.HandshakeError(f"HTTP {status}", category="auth_required"), None),
        (trio_mcp.SessionError(f"probe failed: HTTP {status}", category="auth_required"), None),
    ]
    for exc, with_link in forms:
        failure = classify(exc, with_link)
        assert (failure.category, failure.connection_dead) == ("auth_required", True), exc
    assert classify(MCPError(INTERNAL_ERROR, "server error"), seen).message == f"HTTP {status}: server error"


@pytest.mark.parametrize("category", trio_mcp.ERROR_CATEGORIES)
def test_session_error_categories_are_dead_exactly_when_the_connection_is_unusable(category: str) -> None:
    failure = classify(trio_mcp.SessionError("it broke", category=category))
    assert failure == Failure(category, "it broke", category in DEAD)


def test_a_closed_connection_is_explained_by_its_link() -> None:
    closed = MCPError(CONNECTION_CLOSED, "Connection closed")
    # The process exited: the link's reason wins over the SDK's generic message.
    exited = link(exit_reason=("process_exited", "server process exited with code 3"))
    assert classify(closed, exited) == Failure("process_exited", "server process exited with code 3", True)
    # The HTTP status seen on the link explains it otherwise.
    assert classify(closed, link(http_status=404)) == Failure(
        "session_expired", "HTTP 404: Connection closed", True
    )
    assert classify(closed, link(http_status=503)) == Failure(
        "http_status", "HTTP 503: Connection closed", True
    )
    # A link that saw nothing: a plain transport error.
    assert classify(closed, link()) == Failure(
        "transport_error", "connection closed: Connection closed", True
    )
    # An internal error is an HTTP failure only when the link saw an HTTP error status.
    assert classify(MCPError(INTERNAL_ERROR, "oops"), link()) == Failure(
        "rpc_error", "oops (JSON-RPC -32603)", False
    )
    # A legacy HTTP session forgotten after a restart: a bare 404 with any message.
    assert classify(MCPError(INVALID_REQUEST, "whatever"), link(http_status=404)) == Failure(
        "session_expired", "whatever", True
    )


async def _a_real_cancelled() -> trio.Cancelled:
    with trio.CancelScope() as scope:
        scope.cancel()
        try:
            await trio.lowlevel.checkpoint()
        except trio.Cancelled as exc:
            return exc
    raise AssertionError("the cancelled scope let the checkpoint pass")


async def test_groups_are_classified_by_their_first_real_failure() -> None:
    cancelled = await _a_real_cancelled()
    group = BaseExceptionGroup(
        "transport", [cancelled, BaseExceptionGroup("inner", [cancelled, ConnectionResetError("reset")])]
    )
    assert classify(group) == Failure("connect_error", "reset", True)
    # Nothing but cancellation: classified as the cancellation itself.
    only = classify(BaseExceptionGroup("transport", [cancelled]))
    assert (only.category, only.connection_dead) == ("transport_error", True)
    assert only.message.startswith("Cancelled: ")


async def test_split_failures_lets_cancellation_go_on() -> None:
    cancelled = await _a_real_cancelled()
    error = OSError("pipe")
    assert split_failures(error) == (None, error)
    assert split_failures(cancelled) == (cancelled, None)
    passing, failures = split_failures(BaseExceptionGroup("mixed", [cancelled, error]))
    assert isinstance(passing, BaseExceptionGroup) and passing.exceptions == (cancelled,)
    assert isinstance(failures, ExceptionGroup) and failures.exceptions == (error,)
    passing, failures = split_failures(ExceptionGroup("only failures", [error]))
    assert passing is None
    assert isinstance(failures, ExceptionGroup) and failures.exceptions == (error,)


def test_caller_errors_are_only_invalid_requests() -> None:
    callers = {c for c in trio_mcp.ERROR_CATEGORIES if Failure(c, "x", False).is_caller_error}
    assert callers == {"invalid_request"}
    assert [str(c) for c in trio_mcp.ErrorCategory] == list(trio_mcp.ERROR_CATEGORIES)
