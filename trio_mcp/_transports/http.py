"""The streamable HTTP transport (the SDK's client over an ``httpx2`` client we configure)."""

from __future__ import annotations

import codecs
import json
import logging
import re
import ssl
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpcore2
import httpx2
import trio

from .._addresses import PublicOnlyBackend
from .._config import DEFAULT_MAX_MESSAGE_BYTES, HttpTransport
from .base import Link, over_bound

logger = logging.getLogger("trio_mcp")

REPEATABLE_METHODS = frozenset(
    {
        "initialize",
        "server/discover",
        "ping",
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "prompts/list",
        "resources/read",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "resources/subscribe",
        "resources/unsubscribe",
        "subscriptions/listen",
    }
)
"""Requests that do the same whether the server receives them once or twice: the only ones sent
again when a pooled connection breaks before their answer (see ``_LinkedHttpTransport._send``).
A ``tools/call`` is never among them: the transport cannot know whether the tool may run twice."""

LONG_POLL_METHODS = frozenset({"subscriptions/listen"})
"""Requests held open until the server has something to say: their POST failing (the server
restarted) says nothing about the connection, whose other requests go on working."""


def _request_of(request: Any) -> tuple[str | None, str | None]:
    """The JSON-RPC (id, method) of the request a POST carries, if it carries one."""
    try:
        body = json.loads(request.content)
    except Exception:  # a streamed or non-JSON body carries no request we track
        return None, None
    if isinstance(body, dict) and isinstance(body.get("method"), str) and body.get("id") is not None:
        return str(body["id"]), body["method"]
    return None, None


SYNTHETIC_HEADER = "x-trio-mcp-synthetic"
"""Marks a response made up on this side (it says nothing about the server's HTTP status)."""


def _synthetic_error(request_id: str, message: str) -> httpx2.Response:
    from mcp_types import CONNECTION_CLOSED

    body = {"jsonrpc": "2.0", "id": request_id, "error": {"code": CONNECTION_CLOSED, "message": message}}
    return httpx2.Response(
        502, json=body, headers={"content-type": "application/json", SYNTHETIC_HEADER: "1"}
    )


HTTP_POOL_SHARE = 8
"""How many connections (servers) of one origin share one keep-alive pool. httpcore scans every
connection of a pool on each request, and every server holds a long-lived stream of its own, so
one pool for a whole fleet would make each request cost O(fleet)."""

HTTP_CLOSE_TIMEOUT_SECONDS = 5.0
"""How long closing a manager's pools may take."""
HTTP_TIMEOUT_SECONDS = 30.0
HTTP_READ_TIMEOUT_SECONDS = 300.0
"""The SDK's defaults: a server may hold a response stream open for minutes."""

Origin = tuple[str, str, int | None]


def _origin(url: httpx2.URL) -> Origin:
    return (url.scheme, url.host, url.port)


class _Share:
    """One keep-alive pool and how many connections lease it now."""

    __slots__ = ("leases", "transport")

    def __init__(self, transport: httpx2.AsyncBaseTransport) -> None:
        self.transport = transport
        self.leases = 0


class HttpPool:
    """The HTTP connection pools one manager's streamable-HTTP servers share.

    Servers at the same origin share keep-alive connections: each connection leases a pool of its
    origin for its lifetime, at most :data:`HTTP_POOL_SHARE` connections to a pool. Per-server
    settings (headers, auth, timeouts) stay on each connection's own lightweight ``httpx2``
    client, so sharing the sockets never mixes credentials.

    TLS: every ``https`` pool shares one verified SSL context, created on first use; ``http``
    pools get a context with no trust anchors, so no certificate store is loaded for them and no
    TLS handshake could ever succeed through them (a redirect to ``https`` is sent through an
    ``https`` pool, which every request is matched to by its own URL).

    The manager owns it: :meth:`aclose` runs after every supervisor has closed its connections.
    """

    def __init__(self, *, share: int = HTTP_POOL_SHARE) -> None:
        self._share = share
        self._pools: dict[tuple[Origin, bool], list[_Share]] = {}
        self._verified_context: ssl.SSLContext | None = None

    def _new_transport(self, scheme: str, public_only: bool = False) -> httpx2.AsyncBaseTransport:
        if scheme == "https":
            if self._verified_context is None:
                self._verified_context = httpx2.create_ssl_context()
            context = self._verified_context
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, and trusts nobody
        # No connection limit: every connection holds long-lived streams, and the share bounds
        # the pool's size.
        limits = httpx2.Limits(max_connections=None, max_keepalive_connections=None)
        transport = httpx2.AsyncHTTPTransport(verify=context, limits=limits)
        if public_only:
            # The same pool, connecting through a backend that checks every address it
            # connects to (httpx2's transport takes no backend of its own).
            transport._pool = httpcore2.AsyncConnectionPool(
                ssl_context=context,
                max_connections=limits.max_connections,
                max_keepalive_connections=limits.max_keepalive_connections,
                keepalive_expiry=limits.keepalive_expiry,
                network_backend=PublicOnlyBackend(),
            )
        return transport

    def lease(self, origin: Origin, *, public_only: bool = False) -> _Share:
        """A pool for one more connection to ``origin``: the first with room, or a new one.
        Connections that must stay public (``public_only``) get pools of their own."""
        shares = self._pools.setdefault((origin, public_only), [])
        for share in shares:
            if share.leases < self._share:
                break
        else:
            share = _Share(self._new_transport(origin[0], public_only))
            shares.append(share)
        share.leases += 1
        return share

    def release(self, share: _Share) -> None:
        share.leases -= 1

    def transport_for(self, origin: Origin, *, public_only: bool = False) -> httpx2.AsyncBaseTransport:
        """A pool for a request to ``origin`` outside any lease (a redirect to another origin)."""
        key = (origin, public_only)
        shares = self._pools.get(key)
        if not shares:
            shares = self._pools[key] = [_Share(self._new_transport(origin[0], public_only))]
        return shares[0].transport

    def statistics(self) -> dict[str, int]:
        """Pools and leased connections now."""
        pools = [share for shares in self._pools.values() for share in shares]
        return {"origins": len(self._pools), "pools": len(pools), "leases": sum(s.leases for s in pools)}

    async def aclose(self) -> None:
        """Close every pool (and its sockets). Shielded, as it runs while the manager closes,
        and bounded: a TLS peer that stops reading cannot hold the close up."""
        pools, self._pools = self._pools, {}
        with trio.CancelScope(shield=True, deadline=trio.current_time() + HTTP_CLOSE_TIMEOUT_SECONDS):
            for shares in pools.values():
                for share in shares:
                    await share.transport.aclose()

    def __repr__(self) -> str:
        stats = self.statistics()
        return f"<HttpPool origins={stats['origins']} pools={stats['pools']} leases={stats['leases']}>"


_STALE_RETRIES = 8
"""How many pooled connections a request may find closed under it before it gives up (a server
closes every idle keep-alive connection at once when they share an idle timeout)."""


class _ConnectionTrace:
    """Learns from httpcore's ``trace`` extension whether a request went out on a new
    connection and whether any of its answer arrived."""

    __slots__ = ("answered", "connected")

    def __init__(self) -> None:
        self.connected = False
        self.answered = False

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.started":
            self.connected = True
        elif event == "http11.receive_response_headers.complete":
            self.answered = True

    def closed_while_idle(self, exc: Exception) -> bool:
        """Whether ``exc`` says that a pooled connection was closed under the request: it had
        been idle in the pool, and it ended before one byte of an answer.

        Most often a server closed an idle keep-alive connection after its own timeout and
        discarded what arrived on it meanwhile. But the request may also have been received,
        and run, before the connection broke: nothing on this side tells the two apart. So only
        a request that may be received twice is sent again (see ``REPEATABLE_METHODS``).
        """
        disconnected = isinstance(exc, httpx2.RemoteProtocolError | httpx2.ReadError | httpx2.WriteError)
        return disconnected and not self.connected and not self.answered


NOT_UTF8_EVENTS = "the server sent an event stream that is not UTF-8 text"
_DECODED = frozenset({"", "identity"})


class MessageRefusedError(httpx2.SSEError, httpx2.StreamError):
    """A response body or event the server sent is refused (over ``max_message_bytes``, or an
    event stream that is not UTF-8): the connection is closed as a ``protocol_error``.

    An :class:`httpx2.StreamError` so that the SDK answers the request of a JSON body with an
    error, and an :class:`httpx2.SSEError` so that it fails the request of an event stream:
    either way that request ends at once, and the rest of the connection is not torn down
    under its owner.
    """


_EVENT_END = re.compile(rb"\n[\n\r]|\r\r")
"""Where an event of an event stream ends: a line terminator (CRLF, LF or CR) right after
another one, i.e. an empty line. The first terminator ends in LF, or is a CR not followed by LF;
the second starts with CR or LF, which makes the three two-byte patterns."""
_EVENT_ENDS = (b"\n\n", b"\n\r", b"\r\r")


class EventBound:
    """Counts the bytes of the event of an event stream being received, across chunks.

    :meth:`feed` says whether every event so far stayed within ``max_bytes`` (counting comments
    and line terminators, so never less than what an event parser holds for it), including the
    event that has not ended yet: an event that never ends is cut at the bound too.
    """

    __slots__ = ("_last", "_max", "_since")

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._since = 0
        """Bytes since the last event ended."""
        self._last = b""
        """The previous chunk's last byte (an event end may straddle two chunks)."""

    def feed(self, chunk: bytes) -> bool:
        if not chunk:
            return True
        start = 1 if self._last + chunk[:1] in _EVENT_ENDS else 0
        self._last = chunk[-1:]
        since = 0 if start else self._since
        size = len(chunk)
        if since + size - start <= self._max:
            # Nothing can be over the bound: only where the last event ended matters.
            end = max(chunk.rfind(pattern) for pattern in _EVENT_ENDS)
            self._since = size - end - 2 if end >= 0 else since + size - start
            return True
        position = start
        for match in _EVENT_END.finditer(chunk, start):
            if since + match.start() - position > self._max:
                return False
            since, position = 0, match.end()
        self._since = since + size - position
        return self._since <= self._max


class _BoundedBody(httpx2.AsyncByteStream):
    """A response body, refused where it goes over the bound (see :func:`bound_response`).

    ``source``: the body as the pool's transport returned it, or a response whose decoded body
    it is.
    """

    def __init__(
        self,
        source: httpx2.AsyncByteStream | httpx2.Response,
        link: Link,
        max_bytes: int,
        *,
        events: bool,
        declared: int | None,
    ) -> None:
        self._source = source
        self._link = link
        self._max = max_bytes
        self._events = events
        self._declared = declared

    def _refuse(self, reason: str) -> MessageRefusedError:
        self._link.mark_dead("protocol_error", reason)
        return MessageRefusedError(reason)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._declared is not None and self._declared > self._max:
            raise self._refuse(over_bound(self._max))
        source = self._source
        chunks = source.aiter_bytes() if isinstance(source, httpx2.Response) else source.__aiter__()
        try:
            if self._events:
                bound = EventBound(self._max)
                text = codecs.getincrementaldecoder("utf-8")()
                async for chunk in chunks:
                    if not bound.feed(chunk):
                        raise self._refuse(over_bound(self._max))
                    try:
                        text.decode(chunk)
                    except UnicodeDecodeError:
                        raise self._refuse(NOT_UTF8_EVENTS) from None
                    yield chunk
                try:
                    text.decode(b"", final=True)
                except UnicodeDecodeError:
                    raise self._refuse(NOT_UTF8_EVENTS) from None
            else:
                total = 0
                async for chunk in chunks:
                    total += len(chunk)
                    if total > self._max:
                        raise self._refuse(over_bound(self._max))
                    yield chunk
        finally:
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()

    async def aclose(self) -> None:
        await self._source.aclose()


def bound_response(
    response: httpx2.Response, request: httpx2.Request, link: Link, max_bytes: int
) -> httpx2.Response:
    """``response`` with its body bounded while it streams: a body over ``max_bytes`` (an event
    stream: an event over it, or bytes that are not UTF-8) marks ``link`` dead
    (``protocol_error``) and fails the read with :class:`MessageRefusedError`, having held at
    most ``max_bytes`` of it.

    The bound applies to the decoded body: a compressed body is decoded here (and handed on
    without its ``content-encoding``), so that a small compressed body cannot expand past it.
    """
    events = response.headers.get("content-type", "").lower().startswith("text/event-stream")
    encodings = {e.strip().lower() for e in response.headers.get_list("content-encoding", split_commas=True)}
    if encodings <= _DECODED:
        length = response.headers.get("content-length")
        declared = int(length) if length is not None and length.isdigit() else None
        raw = response.stream
        assert isinstance(raw, httpx2.AsyncByteStream)
        response.stream = _BoundedBody(raw, link, max_bytes, events=events, declared=declared)
        return response
    response.request = request
    headers = httpx2.Headers(response.headers)
    del headers["content-encoding"]
    headers.pop("content-length", None)
    body = _BoundedBody(response, link, max_bytes, events=events, declared=None)
    return httpx2.Response(
        response.status_code, headers=headers, stream=body, extensions=response.extensions, request=request
    )


class _LinkedHttpTransport(httpx2.AsyncBaseTransport):
    """One connection's view of the shared pools: marks ``link`` dead when a POST cannot be
    delivered.

    The SDK runs every request's POST in its transport task group, so a failed POST (server
    down: connection refused) cancels the whole connection before any caller or probe sees an
    error. Marking the link first lets the supervisor record why the connection died. GET
    (the legacy event stream) is left alone: the SDK retries it by itself.
    """

    def __init__(
        self,
        link: Link,
        pool: HttpPool,
        origin: Origin,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        *,
        public_only: bool = False,
    ) -> None:
        self._link = link
        self._pool = pool
        self._origin = origin
        self._max_message_bytes = max_message_bytes
        self._public_only = public_only
        self._share: _Share | None = pool.lease(origin, public_only=public_only)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        link = self._link
        request_id, method = _request_of(request) if request.method == "POST" else (None, None)
        marker = link.awaiting_delivery.pop(request_id, None) if request_id is not None else None
        origin = _origin(request.url)
        share = self._share
        if share is not None and origin == self._origin:
            transport = share.transport
        else:
            transport = self._pool.transport_for(origin, public_only=self._public_only)
        try:
            repeatable = request.method != "POST" or method is None or method in REPEATABLE_METHODS
            response = await self._send(transport, request, repeatable=repeatable)
        except Exception as exc:
            if method in LONG_POLL_METHODS and request_id is not None:
                # The SDK lets a failed POST take the whole connection down; a lost
                # long poll must not: answer it with a JSON-RPC error instead, which ends
                # that one request (its owner subscribes again later).
                return _synthetic_error(request_id, f"{method} stream lost: {exc!r}")
            if request.method == "POST":
                if marker is not None and isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout):
                    # No connection, so not one byte of this request reached the server.
                    marker.refused = True
                from .._errors import classify

                failure = classify(exc)
                link.mark_dead(failure.category, failure.message)
            raise
        return bound_response(response, request, link, self._max_message_bytes)

    async def _send(
        self, transport: httpx2.AsyncBaseTransport, request: httpx2.Request, *, repeatable: bool
    ) -> httpx2.Response:
        """Send ``request``; when it is ``repeatable``, again on a fresh connection if a pooled
        one turns out to have been closed under it (see
        :meth:`_ConnectionTrace.closed_while_idle`). A streamed body cannot be sent twice: such
        a request is sent once."""
        if not repeatable or not isinstance(request.stream, httpx2.ByteStream):
            return await transport.handle_async_request(request)
        for _ in range(_STALE_RETRIES):
            trace = _ConnectionTrace()
            request.extensions["trace"] = trace
            try:
                return await transport.handle_async_request(request)
            except Exception as exc:
                if not trace.closed_while_idle(exc):
                    raise
                logger.debug(
                    "%s: a pooled connection was closed by the server; sending again", self._link.server
                )
        request.extensions.pop("trace", None)
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        # The pools are shared: only this connection's lease ends here.
        share, self._share = self._share, None
        if share is not None:
            self._pool.release(share)
        await trio.lowlevel.checkpoint()


class _DiscoverProbe:
    """A health probe of a 2026-07-28 connection: ``server/discover`` as one POST through the
    connection's own client (its headers, auth and leased pool), outside the SDK session.

    Such a connection has no session state that a probe could check, so what the SDK adds to a
    request (a task per POST, response streams, a result model) buys a probe nothing: success
    is a JSON-RPC result for this request, and anything else raises what the SDK would have.
    """

    __slots__ = ("_client", "_max_event_size", "_sent", "_url")

    def __init__(
        self, client: httpx2.AsyncClient, url: str, max_event_size: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        self._client = client
        self._url = url
        self._max_event_size = max_event_size
        self._sent = 0

    async def __call__(self, version: str) -> None:
        from mcp.shared._httpx_utils import stream_within_origin
        from mcp.shared.inbound import MCP_METHOD_HEADER, MCP_PROTOCOL_VERSION_HEADER
        from mcp_types import CLIENT_CAPABILITIES_META_KEY, PROTOCOL_VERSION_META_KEY

        self._sent += 1
        request_id = f"trio-mcp-probe-{self._sent}"
        meta = {PROTOCOL_VERSION_META_KEY: version, CLIENT_CAPABILITIES_META_KEY: {}}
        body = {"jsonrpc": "2.0", "id": request_id, "method": "server/discover", "params": {"_meta": meta}}
        headers = {
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
            MCP_PROTOCOL_VERSION_HEADER: version,
            MCP_METHOD_HEADER: "server/discover",
        }
        async with stream_within_origin(
            self._client, "POST", self._url, content=json.dumps(body).encode(), headers=headers
        ) as response:
            answer = await _answer_of(response, request_id, self._max_event_size)
        error = answer.get("error")
        if error is not None:
            raise _rpc_error(error)
        if not isinstance(answer.get("result"), dict):
            raise _rpc_error(
                {"code": _INVALID_REQUEST, "message": "server/discover answered without a result"}
            )


_INTERNAL_ERROR = -32603
_INVALID_REQUEST = -32600
_METHOD_NOT_FOUND = -32601
_CONNECTION_CLOSED = -32000


def _rpc_error(error: Any) -> Exception:
    from mcp.shared.exceptions import MCPError

    if not isinstance(error, dict) or not isinstance(error.get("code"), int):
        return MCPError(_INVALID_REQUEST, f"not a JSON-RPC error: {str(error)[:200]}")
    return MCPError(error["code"], str(error.get("message", "")), error.get("data"))


async def _answer_of(
    response: httpx2.Response, request_id: str, max_event_size: int = DEFAULT_MAX_MESSAGE_BYTES
) -> dict[str, Any]:
    """The JSON-RPC message answering ``request_id`` in ``response`` (a JSON body or an event
    stream), or the error the SDK's transport makes up for a response that holds none."""
    status = response.status_code
    content_type = response.headers.get("content-type", "").lower()
    if status >= 400:
        if content_type.startswith("application/json"):
            body = _json_object(await response.aread())
            if body is not None and "error" in body:
                return body
        if status == 404:
            return {"error": {"code": _METHOD_NOT_FOUND, "message": "Not Found"}}
        return {"error": {"code": _INTERNAL_ERROR, "message": "Server returned an error response"}}
    if status != 200:
        said = f"server answered server/discover with HTTP {status}"
        return {"error": {"code": _INVALID_REQUEST, "message": said}}
    if content_type.startswith("application/json"):
        body = _json_object(await response.aread())
        if body is not None:
            return body
    elif content_type.startswith("text/event-stream"):
        async for event in httpx2.EventSource(response, max_event_size=max_event_size):
            message = _json_object(event.data.encode()) if event.data else None
            if (
                message is not None
                and message.get("id") == request_id
                and ("result" in message or "error" in message)
            ):
                return message
        return {"error": {"code": _CONNECTION_CLOSED, "message": "SSE stream ended without a response"}}
    said = f"Unexpected content type: {content_type}"
    return {"error": {"code": _INVALID_REQUEST, "message": said}}


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@asynccontextmanager
async def _open_http(
    config: HttpTransport, link: Link, pool: HttpPool | None = None
) -> AsyncIterator[tuple[Any, Any]]:
    """Open a streamable HTTP connection to ``config.url`` through ``pool`` (a private one,
    closed with the connection, when none is given)."""
    from mcp.client.streamable_http import streamable_http_client

    from .._auth import build_httpx_auth

    link.track_delivery = True

    async def on_response(response: httpx2.Response) -> None:
        if response.status_code >= 400 and SYNTHETIC_HEADER not in response.headers:
            link.http_status = response.status_code

    auth = build_httpx_auth(config.auth, config.url)
    origin = _origin(httpx2.URL(config.url))
    own_pool = pool is None
    shared = HttpPool() if pool is None else pool
    try:
        client = httpx2.AsyncClient(
            headers=dict(config.headers or {}),
            auth=auth,
            timeout=httpx2.Timeout(HTTP_TIMEOUT_SECONDS, read=HTTP_READ_TIMEOUT_SECONDS),
            event_hooks={"response": [on_response]},
            # Leased last: the client's exit (below) ends the lease.
            transport=_LinkedHttpTransport(
                link, shared, origin, config.max_message_bytes, public_only=config.public_only
            ),
        )
        link.discover_probe = _DiscoverProbe(client, config.url, config.max_message_bytes)
        # The SDK's own bound on one event is made the same as ours (its default is 1 MiB);
        # ours, counting every byte of the stream, is met first and closes the connection.
        async with (
            client,
            streamable_http_client(
                config.url, http_client=client, max_sse_event_size=config.max_message_bytes
            ) as (read, write),
        ):
            yield read, write
    finally:
        if own_pool:
            await shared.aclose()
