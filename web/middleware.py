"""Pure ASGI middleware: bearer-token auth and the request body size limit."""

from __future__ import annotations

import hmac

from opentelemetry import context, propagate
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import PayloadTooLargeError, UnauthorizedError, error_response


class GuardMiddleware:
    """Refuses requests without the bearer ``token`` (401) and with a declared
    ``Content-Length`` over ``max_body_bytes`` (413) before they reach a handler.

    Bodies without a ``Content-Length`` are counted while they are read
    (:func:`web.schemas.read_json_object`).
    """

    def __init__(
        self, app: ASGIApp, *, token: str | None, max_body_bytes: int, public_paths: frozenset[str]
    ) -> None:
        self.app = app
        self.public_paths = public_paths
        """Answered without a token (liveness, the API's description)."""
        self._token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self._token is not None and scope["path"] not in self.public_paths:
            scheme, _, credentials = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                credentials.strip().encode(), self._token
            ):
                await error_response(UnauthorizedError("a valid bearer token is required"))(
                    scope, receive, send
                )
                return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await error_response(
                PayloadTooLargeError(f"the request body is larger than {self.max_body_bytes} bytes")
            )(scope, receive, send)
            return
        await self.app(scope, receive, send)


class TraceContextMiddleware:
    """Makes the W3C trace context of the request (``traceparent`` / ``tracestate``) current
    while it is handled, so the spans of the invocations it starts continue the caller's trace."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if "traceparent" not in headers:
            await self.app(scope, receive, send)
            return
        token = context.attach(propagate.extract(headers))
        try:
            await self.app(scope, receive, send)
        finally:
            context.detach(token)
