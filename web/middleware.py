"""Pure ASGI middleware: Host and Origin checks, bearer-token auth, the request body size
limit, a per-client rate limit, and the caller's trace context."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

import trio
from opentelemetry import context, propagate
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import (
    ApiError,
    BadHostError,
    ForbiddenOriginError,
    PayloadTooLargeError,
    RateLimitedError,
    UnauthorizedError,
    error_response,
)


@dataclass(frozen=True, kw_only=True)
class RateLimit:
    """At most ``requests`` per ``per`` seconds for each token (or client address)."""

    requests: int
    per: float

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """``"20/s"``, ``"600/m"``, ``"10000/h"`` or ``"5/2.5"`` (seconds)."""
        count, _, period = text.partition("/")
        seconds = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(period.strip())
        try:
            requests = int(count)
            per = seconds if seconds is not None else float(period)
        except ValueError:
            raise ValueError(f"a rate limit is N/s, N/m, N/h or N/SECONDS, got {text!r}") from None
        if requests < 1 or not per > 0 or per == float("inf"):
            raise ValueError(f"a rate limit needs N >= 1 and a positive period, got {text!r}")
        return cls(requests=requests, per=per)


class _Buckets:
    """Token buckets by client key; the clock is trio's."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._state: dict[str, tuple[float, float]] = {}  # key: (tokens, at)

    def take(self, key: str) -> float:
        """0 if a request may go now, else the seconds until it may."""
        now = trio.current_time()
        rate = self.limit.requests / self.limit.per
        tokens, at = self._state.get(key, (float(self.limit.requests), now))
        tokens = min(float(self.limit.requests), tokens + (now - at) * rate)
        if tokens >= 1.0:
            self._state[key] = (tokens - 1.0, now)
            return 0.0
        self._state[key] = (tokens, now)
        if len(self._state) > 10_000:  # forget the idle ones
            self._state = {k: v for k, v in self._state.items() if now - v[1] < self.limit.per}
        return (1.0 - tokens) / rate


def _host_name(host_header: str) -> str:
    """The host of a ``Host`` header, without the port (IPv6 literals keep no brackets)."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0].lower()
    return host_header.rpartition(":")[0].lower() if host_header.count(":") == 1 else host_header.lower()


class GuardMiddleware:
    """Checks every request before it reaches a handler:

    - ``Host`` must be in ``allowed_hosts`` (400; ``None``: any), so a web page whose DNS
      name is rebound to this address cannot use the API;
    - an ``Origin``, when present, must be this server's own or in ``allowed_origins`` (403);
    - the bearer ``token`` (401), except on ``public_paths``;
    - a declared ``Content-Length`` over ``max_body_bytes`` (413; bodies without one are counted
      while they are read, :func:`web.schemas.read_json_object`);
    - ``rate_limit`` per token, or per client address without one (429 with ``Retry-After``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        max_body_bytes: int,
        public_paths: frozenset[str],
        allowed_hosts: frozenset[str] | None = None,
        allowed_origins: frozenset[str] = frozenset(),
        rate_limit: RateLimit | None = None,
    ) -> None:
        self.app = app
        self.public_paths = public_paths
        """Answered without a token (liveness, the API's description)."""
        self._token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes
        self.allowed_hosts = None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        self.allowed_origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)
        self._buckets = _Buckets(rate_limit) if rate_limit is not None else None

    def _refusal(self, scope: Scope, headers: Headers) -> ApiError | None:
        host = headers.get("host", "")
        if self.allowed_hosts is not None and _host_name(host) not in self.allowed_hosts:
            return BadHostError(f"this API does not answer for host {host[:100]!r}", field="Host")
        origin = headers.get("origin")
        if origin is not None:
            own = f"{scope.get('scheme', 'http')}://{host}".lower()
            if origin.rstrip("/").lower() not in (own, *self.allowed_origins):
                return ForbiddenOriginError(
                    f"requests from pages at {origin[:100]!r} are not allowed (--allowed-origin)",
                    field="Origin",
                )
        authorization = headers.get("authorization", "")
        if self._token is not None and scope["path"] not in self.public_paths:
            scheme, _, credentials = authorization.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                credentials.strip().encode(), self._token
            ):
                return UnauthorizedError("a valid bearer token is required")
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return PayloadTooLargeError(f"the request body is larger than {self.max_body_bytes} bytes")
        if self._buckets is not None and scope["path"] not in self.public_paths:
            client = scope.get("client")
            key = authorization or (f"address {client[0]}" if client else "?")
            wait = self._buckets.take(key)
            if wait > 0:
                return RateLimitedError("too many requests: slow down", retry_after=wait)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope, Headers(scope=scope))
        if refusal is not None:
            await error_response(refusal)(scope, receive, send)
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
