"""Classifying failures into stable error categories."""

from __future__ import annotations

import re
from typing import cast

import anyio
import httpx2  # the SDK's HTTP client (a dependency of mcp)
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
from pydantic import ValidationError

from ._exceptions import ServerUnavailableError, SessionError
from ._failure import DEAD_CATEGORIES, ERROR_CATEGORIES, Failure, LinkFacts

__all__ = ["ERROR_CATEGORIES", "Failure", "classify", "split_failures"]


def split_failures(exc: BaseException) -> tuple[BaseException | None, Exception | None]:
    """Split ``exc`` into what must propagate (cancellation, ``KeyboardInterrupt``, ...) and
    the failures (``Exception``, possibly an ``ExceptionGroup`` of them).

    A transport torn down by a cancellation often raises both at once, grouped; the failure
    half is then the transport's complaint, and the cancellation must go on.
    """
    if isinstance(exc, BaseExceptionGroup):
        failures, passing = exc.split(Exception)
        # A group of nothing but Exceptions is an ExceptionGroup (hence an Exception).
        return passing, cast("Exception | None", failures)
    if isinstance(exc, Exception):
        return None, exc
    return exc, None


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for sub in exc.exceptions:
            out.extend(_leaves(sub))
        return out
    return [exc]


_SESSION_GONE = re.compile(r"session (not found|terminated|has been terminated|expired)", re.IGNORECASE)


def _session_gone(message: str, link: LinkFacts | None) -> bool:
    """Whether an invalid-request error says the server forgot our (legacy HTTP) session.

    Spellings: the client SDK's stand-in for a bare 404 ("Session terminated"), the SDK server's
    404 body ("Session not found", 2.x; "Not Found: Session has been terminated", 1.x).
    """
    if _SESSION_GONE.search(message):
        return True
    return link is not None and link.http_status == 404


def _http_failure(status: int, message: str) -> Failure:
    if status in (401, 403):
        return Failure("auth_required", f"HTTP {status}: {message}", True)
    if status == 404:
        return Failure("session_expired", f"HTTP 404: {message}", True)
    return Failure("http_status", f"HTTP {status}: {message}", status >= 500 or status in (405, 406, 415))


def classify(exc: BaseException, link: LinkFacts | None = None) -> Failure:
    """Classify ``exc``, raised while using a connection whose transport knew ``link``."""
    leaves = _leaves(exc)
    # Prefer the most specific leaf: an ExceptionGroup from a transport task group usually
    # holds the real cause next to cancellation noise.
    for leaf in leaves:
        if not isinstance(leaf, trio.Cancelled):
            exc = leaf
            break
    else:
        exc = leaves[0]

    message = str(exc) or type(exc).__name__
    if isinstance(exc, SessionError):
        return Failure(exc.category, message, exc.category in DEAD_CATEGORIES)
    if isinstance(exc, ServerUnavailableError):
        return Failure("unavailable", message, False)
    if isinstance(exc, trio.TooSlowError | TimeoutError):
        return Failure("timeout", message or "timed out", False)
    if isinstance(exc, MCPError):
        code = exc.code
        if code == CONNECTION_CLOSED:
            if link is not None and link.exit_reason is not None:
                category, reason = link.exit_reason
                return Failure(category, reason, True)
            if link is not None and link.http_status is not None:
                return _http_failure(link.http_status, message)
            return Failure("transport_error", f"connection closed: {message}", True)
        if code == REQUEST_TIMEOUT:
            return Failure("timeout", message, False)
        if code == INVALID_REQUEST and _session_gone(message, link):
            return Failure("session_expired", message, True)
        if code == INTERNAL_ERROR and link is not None and link.http_status is not None:
            return _http_failure(link.http_status, message)
        if code in (METHOD_NOT_FOUND, INVALID_PARAMS):
            return Failure("invalid_request", f"{message} (JSON-RPC {code})", False)
        if code in (PARSE_ERROR, INVALID_REQUEST):
            return Failure("protocol_error", f"{message} (JSON-RPC {code})", False)
        return Failure("rpc_error", f"{message} (JSON-RPC {code})", False)
    if isinstance(exc, ValidationError):
        return Failure("protocol_error", f"invalid message from server: {message}", False)
    if isinstance(exc, httpx2.HTTPStatusError):
        return _http_failure(exc.response.status_code, message)
    if isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout):
        return Failure("connect_error", message, True)
    if isinstance(exc, httpx2.TimeoutException):
        return Failure("timeout", message, True)
    if isinstance(exc, httpx2.HTTPError):
        return Failure("transport_error", message, True)
    if isinstance(exc, ConnectionRefusedError | ConnectionResetError | ConnectionAbortedError):
        return Failure("connect_error", message, True)
    if isinstance(exc, RuntimeError) and "protocol version" in message.lower():
        return Failure("protocol_error", message, True)
    if isinstance(exc, OSError | trio.BrokenResourceError | trio.ClosedResourceError | EOFError):
        return Failure("transport_error", message, True)
    if isinstance(exc, anyio.BrokenResourceError | anyio.ClosedResourceError | anyio.EndOfStream):
        return Failure("transport_error", message, True)
    return Failure("transport_error", f"{type(exc).__name__}: {message}", True)
