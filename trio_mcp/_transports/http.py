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
from .http_listen import PlainListen
from .http_probe import (
    NOT_UTF8_EVENTS,
    DiscoverProbe,
    MessageRefusedError,
    PlainCalls,
    PlainDiscoverProbe,
    ProbeSockets,
    SessionlessDispatcher,
    probe_turns,
)
from .probe_rounds import ProbeRounds, RoundOrigin
from .wire import REPEATABLE_METHODS

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


USER_AGENT = f"python-httpx2/{httpx2.__version__}"
"""What ``httpx2`` says it is (the requests sent without it say the same)."""

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
        self._probe_sockets: dict[tuple[str, int], ProbeSockets] = {}
        self._probe_rounds: ProbeRounds | None = None
        self._nursery: trio.Nursery | None = None
        self._probe_turns: dict[Origin, trio.Semaphore] = {}

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

    def probe_sockets(self, host: str, port: int) -> ProbeSockets:
        """The keep-alive sockets the probes of plain-HTTP servers at ``host:port`` share."""
        sockets = self._probe_sockets.get((host, port))
        if sockets is None:
            turns = self.probe_turns(("http", host, port))
            sockets = self._probe_sockets[host, port] = ProbeSockets(host, port, turns)
        return sockets

    def run_rounds_in(self, nursery: trio.Nursery) -> None:
        """Start the probe rounds (see :class:`ProbeRounds`) in ``nursery``, the manager's, once
        a server needs them: they end with it. Without one, every probe is sent by its server's
        task."""
        self._nursery = nursery

    def probe_rounds(self, host: str, port: int) -> RoundOrigin | None:
        """The share of the probe rounds of the plain-HTTP servers at ``host:port``; ``None``
        when this pool runs none."""
        if self._nursery is None:
            return None
        rounds = self._probe_rounds
        if rounds is None:
            rounds = self._probe_rounds = ProbeRounds()
            self._nursery.start_soon(rounds.run, name="probe rounds")
        sockets = self.probe_sockets(host, port)
        return rounds.origin(host, port, lambda: sockets.handshaking)

    def probe_turns(self, origin: Origin) -> trio.Semaphore:
        """The turns that every probe of a server at ``origin`` takes, sent through ``httpx2``
        or on the origin's plain sockets: one bound per origin (see ``PROBES_IN_FLIGHT``)."""
        scheme, host, port = origin
        key = (scheme, host, port or (443 if scheme == "https" else 80))
        turns = self._probe_turns.get(key)
        if turns is None:
            turns = self._probe_turns[key] = probe_turns()
        return turns

    def statistics(self) -> dict[str, int]:
        """Pools and leased connections now."""
        pools = [share for shares in self._pools.values() for share in shares]
        return {"origins": len(self._pools), "pools": len(pools), "leases": sum(s.leases for s in pools)}

    @property
    def probes_in_rounds(self) -> int:
        """How many probes the origins' rounds have sent."""
        return self._probe_rounds.sent if self._probe_rounds is not None else 0

    async def aclose(self) -> None:
        """Close every pool (and its sockets). Shielded, as it runs while the manager closes,
        and bounded: a TLS peer that stops reading cannot hold the close up."""
        pools, self._pools = self._pools, {}
        probe_sockets, self._probe_sockets = self._probe_sockets, {}
        self._probe_turns = {}
        self._probe_rounds, self._nursery = None, None
        for sockets in probe_sockets.values():
            sockets.close()
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


_DECODED = frozenset({"", "identity"})


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


def plain_http(config: HttpTransport, link: Link, pool: HttpPool) -> bool:
    """Give ``link`` the requests that a plain ``http://`` server (no auth flow, no credentials
    in the URL, no address checks) is sent without ``httpx2``: its probes, its list-change
    stream, its handshake and, once it speaks 2026-07-28, its calls. Probes are most of what an
    idle fleet costs, calls most of what a busy one costs, and nothing there (TLS, auth, address
    checks) needs ``httpx2``. ``False``: the server is not plain."""
    if link.sessionless is not None:
        return True
    url = httpx2.URL(config.url)
    if url.scheme != "http" or config.auth is not None or url.userinfo or config.public_only:
        return False
    # What the connection's own client would send (its defaults, then the configured headers).
    headers = httpx2.Headers({"user-agent": USER_AGENT, **(config.headers or {})})
    sockets = pool.probe_sockets(url.host, url.port or 80)
    discover_probe = PlainDiscoverProbe(sockets, url, headers, link, config.max_message_bytes)
    discover_probe.rounds = pool.probe_rounds(url.host, url.port or 80)
    link.discover_probe = discover_probe
    link.listen_stream = PlainListen(sockets, url, headers, link, config.max_message_bytes)
    link.sessionless = SessionlessDispatcher(sockets, url, headers, link, config.max_message_bytes)
    link.plain_calls = PlainCalls(sockets, url, headers, link, config.max_message_bytes)
    link.until_still = sockets.until_still
    return True


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
    url = httpx2.URL(config.url)
    origin = _origin(url)
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
        if not plain_http(config, link, shared):
            turns = shared.probe_turns(origin)
            link.discover_probe = DiscoverProbe(client, config.url, config.max_message_bytes, turns)
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
