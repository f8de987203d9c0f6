"""One table mapping exceptions to HTTP statuses, and the JSON error body.

Every error answer has the same shape::

    {"detail": {"error": "<code>", "message": "<human readable>", ...extra fields}}

Extra fields: ``field`` for validation errors (422); ``method``, ``outcome``,
``request_id`` and ``attempts`` for failed invocations (503) and rejected requests (422).
"""

from __future__ import annotations

import math
from typing import Any

import trio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from trio_mcp import (
    ConfigError,
    HandshakeTimeoutError,
    InvocationFailedError,
    ManagerClosedError,
    NotOfferedError,
    RequestRejectedError,
    ServerExistsError,
    ServerUnavailableError,
    SessionError,
    TrioMcpError,
    UnknownServerError,
)
from trio_mcp._exceptions import QUOTE_LIMIT
from trio_mcp.store import SecretKeyRequiredError, StoreUnavailableError


class ApiError(Exception):
    """An error the web layer raises itself (bad input, refused operation)."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.message = message
        self.field = field
        super().__init__(message)


class ValidationFailedError(ApiError):
    """The request body or a query parameter is malformed or has the wrong type."""

    status_code = 422
    code = "validation_error"


class ForbiddenError(ApiError):
    """The operation is disabled on this server (e.g. stdio registration)."""

    status_code = 403
    code = "forbidden"


class ConflictError(ApiError):
    """The operation conflicts with the server's current state."""

    status_code = 409
    code = "conflict"


class PayloadTooLargeError(ApiError):
    """The request body is larger than ``max_body_bytes``."""

    status_code = 413
    code = "payload_too_large"


class UnauthorizedError(ApiError):
    """A bearer token is required and was missing or wrong."""

    status_code = 401
    code = "unauthorized"


class BadHostError(ApiError):
    """The ``Host`` header names a host this API does not answer for (DNS rebinding)."""

    status_code = 400
    code = "bad_host"


class ForbiddenOriginError(ApiError):
    """A browser page from another origin (not in the allowlist) made the request."""

    status_code = 403
    code = "forbidden_origin"


class RequestTimeoutError(ApiError):
    """The request body did not arrive in time."""

    status_code = 408
    code = "request_timeout"


class RateLimitedError(ApiError):
    """Too many requests with this token (or from this address): retry after ``retry_after``."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BusyError(ApiError):
    """Too many invocations in flight: retry after ``retry_after`` seconds."""

    status_code = 503
    code = "busy"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# (exception class, HTTP status, error code). Ordered most specific first: the first
# ``isinstance`` match wins, so e.g. a HandshakeTimeoutError is a 504, not a SessionError's 503.
ERROR_TABLE: tuple[tuple[type[BaseException], int, str], ...] = (
    (UnknownServerError, 404, "unknown_server"),
    (ServerExistsError, 409, "server_exists"),
    (ConfigError, 422, "invalid_config"),
    (InvocationFailedError, 503, "invocation_failed"),
    # Not a 5xx: nothing can answer it, and every HTTP client reads 5xx as "retry later".
    (NotOfferedError, 404, "not_offered"),
    (RequestRejectedError, 422, "request_rejected"),
    (ManagerClosedError, 503, "manager_closed"),
    (ServerUnavailableError, 503, "server_unavailable"),
    # The operator must set TRIO_MCP_SECRET_KEY first (as --allow-stdio-command for stdio).
    (SecretKeyRequiredError, 403, "secret_key_required"),
    # Nothing was changed: a registration that cannot be stored is not made.
    (StoreUnavailableError, 503, "store_unavailable"),
    (HandshakeTimeoutError, 504, "timeout"),
    (SessionError, 503, "session_error"),
    (trio.TooSlowError, 504, "timeout"),
    (TimeoutError, 504, "timeout"),
    (TrioMcpError, 500, "internal_error"),
    # The library raises a bare ValueError for invalid arguments; the schemas validate first,
    # this is the safety net that keeps a bad input from becoming a 500.
    (ValueError, 422, "validation_error"),
)


def status_for(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and error code for ``exc`` (500 when it is not in the table)."""
    if isinstance(exc, ApiError):
        return exc.status_code, exc.code
    for cls, status, code in ERROR_TABLE:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal_error"


def _short(value: Any) -> Any:
    """A string field of an error answer that echoes the caller's input, cut to size."""
    if isinstance(value, str) and len(value) > QUOTE_LIMIT:
        return value[:QUOTE_LIMIT] + "..."
    return value


def error_detail(exc: BaseException) -> dict[str, Any]:
    """The ``detail`` object of the error answer for ``exc``."""
    _, code = status_for(exc)
    detail: dict[str, Any] = {"error": code, "message": str(exc) or type(exc).__name__}
    if isinstance(exc, ApiError):
        detail["message"] = exc.message
        if exc.field is not None:
            detail["field"] = exc.field
    elif isinstance(exc, ConfigError):
        detail["field"] = exc.key
    elif isinstance(exc, SecretKeyRequiredError):
        detail["field"] = exc.field
    elif isinstance(exc, UnknownServerError | ServerExistsError):
        detail["server"] = _short(exc.name)
    elif isinstance(exc, InvocationFailedError):
        detail.update(
            method=exc.method,
            outcome=exc.outcome,
            request_id=exc.request_id,
            attempts=[a.to_dict() for a in exc.attempts],
        )
    elif isinstance(exc, NotOfferedError):
        detail.update(method=exc.method, target=_short(exc.target), servers_checked=list(exc.servers))
    elif isinstance(exc, RequestRejectedError):
        detail.update(
            server=exc.server,
            method=exc.method,
            request_id=exc.request_id,
            attempts=[a.to_dict() for a in exc.attempts],
        )
    elif isinstance(exc, ServerUnavailableError):
        detail.update(server=exc.server, status=exc.status, category=exc.category)
    elif isinstance(exc, SessionError):
        detail["category"] = exc.category
    return detail


def error_response(exc: BaseException) -> JSONResponse:
    status, _ = status_for(exc)
    headers: dict[str, str] | None = None
    if isinstance(exc, UnauthorizedError):
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, RateLimitedError | BusyError):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    return JSONResponse({"detail": error_detail(exc)}, status_code=status, headers=headers)


async def handle_error(request: Request, exc: Exception) -> Response:
    return error_response(exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown route 404, 405) as JSON in the same shape."""
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        {"detail": {"error": code, "message": str(exc.detail)}},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """Last resort: a bug. Answer JSON rather than Starlette's plain-text 500 page."""
    return JSONResponse(
        {"detail": {"error": "internal_error", "message": f"{type(exc).__name__}: {exc}"}},
        status_code=500,
    )


def exception_handlers() -> dict[Any, Any]:
    """Starlette ``exception_handlers``: every class in the table goes through :func:`handle_error`."""
    handlers: dict[Any, Any] = {cls: handle_error for cls, _, _ in ERROR_TABLE}
    handlers[ApiError] = handle_error
    handlers[HTTPException] = handle_http_exception
    handlers[Exception] = handle_unexpected
    return handlers
