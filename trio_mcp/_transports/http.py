"""The streamable HTTP transport (the SDK's client over an ``httpx2`` client we configure)."""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import trio

from .._config import HttpTransport
from .base import Link

logger = logging.getLogger("trio_mcp")

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
        self._pools: dict[Origin, list[_Share]] = {}
        self._verified_context: ssl.SSLContext | None = None

    def _new_transport(self, scheme: str) -> httpx2.AsyncBaseTransport:
        if scheme == "https":
            if self._verified_context is None:
                self._verified_context = httpx2.create_ssl_context()
            context = self._verified_context
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, and trusts nobody
        # No connection limit: every connection holds long-lived streams, and the share bounds
        # the pool's size.
        limits = httpx2.Limits(max_connections=None, max_keepalive_connections=None)
        return httpx2.AsyncHTTPTransport(verify=context, limits=limits)

    def lease(self, origin: Origin) -> _Share:
        """A pool for one more connection to ``origin``: the first with room, or a new one."""
        shares = self._pools.setdefault(origin, [])
        for share in shares:
            if share.leases < self._share:
                break
        else:
            share = _Share(self._new_transport(origin[0]))
            shares.append(share)
        share.leases += 1
        return share

    def release(self, share: _Share) -> None:
        share.leases -= 1

    def transport_for(self, origin: Origin) -> httpx2.AsyncBaseTransport:
        """A pool for a request to ``origin`` outside any lease (a redirect to another origin)."""
        shares = self._pools.get(origin)
        if not shares:
            shares = self._pools[origin] = [_Share(self._new_transport(origin[0]))]
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
        """Whether ``exc`` says that a pooled connection was closed before the request reached
        the server: it had been idle in the pool, and it ended before one byte of an answer.

        A server closes an idle keep-alive connection after its own timeout and discards what
        arrives on it meanwhile, so such a request was never processed: it is not a failure of
        the server but of the connection, and is sent again at once on a fresh one.
        """
        disconnected = isinstance(exc, httpx2.RemoteProtocolError | httpx2.ReadError | httpx2.WriteError)
        return disconnected and not self.connected and not self.answered


class _LinkedHttpTransport(httpx2.AsyncBaseTransport):
    """One connection's view of the shared pools: marks ``link`` dead when a POST cannot be
    delivered.

    The SDK runs every request's POST in its transport task group, so a failed POST (server
    down: connection refused) cancels the whole connection before any caller or probe sees an
    error. Marking the link first lets the supervisor record why the connection died. GET
    (the legacy event stream) is left alone: the SDK retries it by itself.
    """

    def __init__(self, link: Link, pool: HttpPool, origin: Origin) -> None:
        self._link = link
        self._pool = pool
        self._origin = origin
        self._share: _Share | None = pool.lease(origin)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        link = self._link
        request_id, method = _request_of(request) if request.method == "POST" else (None, None)
        marker = link.awaiting_delivery.pop(request_id, None) if request_id is not None else None
        origin = _origin(request.url)
        share = self._share
        if share is not None and origin == self._origin:
            transport = share.transport
        else:
            transport = self._pool.transport_for(origin)
        try:
            return await self._send(transport, request)
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

    async def _send(self, transport: httpx2.AsyncBaseTransport, request: httpx2.Request) -> httpx2.Response:
        """Send ``request``, again on a fresh connection when a pooled one turns out to have
        been closed under it by the server (see :meth:`_ConnectionTrace.closed_while_idle`).
        A streamed body cannot be sent twice: such a request is sent once."""
        if not isinstance(request.stream, httpx2.ByteStream):
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

    __slots__ = ("_client", "_sent", "_url")

    def __init__(self, client: httpx2.AsyncClient, url: str) -> None:
        self._client = client
        self._url = url
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
            answer = await _answer_of(response, request_id)
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


async def _answer_of(response: httpx2.Response, request_id: str) -> dict[str, Any]:
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
        async for event in httpx2.EventSource(response):
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
            transport=_LinkedHttpTransport(link, shared, origin),
        )
        link.discover_probe = _DiscoverProbe(client, config.url)
        async with client, streamable_http_client(config.url, http_client=client) as (read, write):
            yield read, write
    finally:
        if own_pool:
            await shared.aclose()
