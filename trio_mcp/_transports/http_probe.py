"""The health probe of a 2026-07-28 streamable-HTTP connection: ``server/discover`` as one POST.

Such a connection has no session state that a probe could check, so what the SDK adds to a
request (a task per POST, response streams, a result model) buys a probe nothing: success is a
JSON-RPC result for this request, and anything else raises what the SDK would have.

Two ways to send it:

- :class:`DiscoverProbe`: through the connection's own ``httpx2`` client (its headers, auth and
  leased pool). Every connection can use it.
- :class:`PlainDiscoverProbe`: for a plain ``http://`` server without an auth flow, one POST
  written out (:mod:`.http1`) on a trio socket from a small set of keep-alive sockets per
  origin (:class:`ProbeSockets`). A probe is most of what an idle fleet costs, and this costs
  a fraction of a pass through ``httpx2`` and ``httpcore2``. It raises the same errors and
  marks the connection the same way.

The handshake of such a server goes the same way (:class:`SessionlessDispatcher`): its SDK
session is opened only when a call needs it.
"""

from __future__ import annotations

import json
import logging
import math
import select
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import h11
import httpx2
import trio

from .._config import DEFAULT_MAX_MESSAGE_BYTES
from .base import Link, SentMarker, over_bound, sent_marker
from .http1 import RECEIVE, TooLarge, Unframed, h11_after_request, header_lines, parse_head, request_line
from .probe_rounds import ROUND_BUSY_HANDSHAKES, ROUND_DEFER_SECONDS, RoundOrigin
from .wire import CONNECTION_CLOSED as _CONNECTION_CLOSED
from .wire import INTERNAL_ERROR as _INTERNAL_ERROR
from .wire import INVALID_REQUEST as _INVALID_REQUEST
from .wire import METHOD_NOT_FOUND as _METHOD_NOT_FOUND
from .wire import REPEATABLE_METHODS, REQUEST_TIMEOUT, SESSIONLESS_METHODS, request_message, result_of
from .wire import check_answer as _check_answer
from .wire import discover_body as _discover_body

logger = logging.getLogger("trio_mcp")

NOT_UTF8_EVENTS = "the server sent an event stream that is not UTF-8 text"

OnEvent = Callable[[dict[str, Any]], Awaitable[None]]
"""Given each message of an event-stream answer that does not answer the request itself (a
progress or logging notification)."""


class MessageRefusedError(httpx2.SSEError, httpx2.StreamError):
    """A response body or event the server sent is refused (over ``max_message_bytes``, or an
    event stream that is not UTF-8): the connection is closed as a ``protocol_error``.

    An :class:`httpx2.StreamError` so that the SDK answers the request of a JSON body with an
    error, and an :class:`httpx2.SSEError` so that it fails the request of an event stream:
    either way that request ends at once, and the rest of the connection is not torn down
    under its owner.
    """


PROBE_SOCKETS_IDLE = 32
"""How many idle probe sockets one origin keeps at most. Probes spread over the interval seldom
overlap, so a few serve a whole fleet; the bound is for bursts (a fleet starting, a slow
server), so that they do not open and close a socket per probe."""
PROBES_IN_FLIGHT = PROBE_SOCKETS_IDLE
"""How many probes of one origin are under way at most; the others wait their turn (in order,
within their own deadline). A slow origin then meets a bounded number of probes, not a queue
that grows until every probe times out and every server looks down at once; and its probes
never need more sockets than it keeps."""
LISTENS_OPENING = 16
"""How many list-change streams of one origin are being opened at once at most: a fleet whose
streams all open together (once its start is over) would put every one of them in front of the
handshakes still under way."""
PROBE_SOCKET_IDLE_SECONDS = 4.0
"""An idle probe socket older than this is closed, not used: servers close idle keep-alive
connections after their own timeout (5 s is common), and a probe should not meet that."""


def _stamped_headers(version: str, method: str) -> dict[str, str]:
    """The headers a request stamps: its protocol version and method."""
    from mcp.shared.inbound import MCP_METHOD_HEADER, MCP_PROTOCOL_VERSION_HEADER

    return {MCP_PROTOCOL_VERSION_HEADER: version, MCP_METHOD_HEADER: method}


def _discover_headers(version: str) -> dict[str, str]:
    return {
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        **_stamped_headers(version, "server/discover"),
    }


def plain_headers(url: httpx2.URL, headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """The headers of a plain POST to ``url``: its ``Host``, and the connection's
    own ``headers`` but for those that the request sets itself (content, protocol, framing)."""
    host = url.netloc.decode("ascii")  # an IPv6 address in brackets, the port if given
    own = {"host", "connection", "accept-encoding", "content-length", *_discover_headers("").keys()}
    return [("host", host), *((k, v) for k, v in headers.items() if k.lower() not in own)]


class DiscoverProbe:
    """``server/discover`` as one POST through the connection's own ``httpx2`` client; with
    ``turns``, one of the origin's turns held while it is under way (see
    :data:`PROBES_IN_FLIGHT`)."""

    __slots__ = ("_client", "_max_event_size", "_sent", "_turns", "_url")

    def __init__(
        self,
        client: httpx2.AsyncClient,
        url: str,
        max_event_size: int = DEFAULT_MAX_MESSAGE_BYTES,
        turns: trio.Semaphore | None = None,
    ) -> None:
        self._client = client
        self._url = url
        self._max_event_size = max_event_size
        self._sent = 0
        self._turns = turns

    async def __call__(self, version: str) -> None:
        from mcp.shared._httpx_utils import stream_within_origin

        self._sent += 1
        request_id = f"trio-mcp-probe-{self._sent}"
        if self._turns is not None:
            await take_turn(self._turns)
        try:
            async with stream_within_origin(
                self._client,
                "POST",
                self._url,
                content=_discover_body(request_id, version),
                headers=_discover_headers(version),
            ) as response:
                answer = await _answer_of(response, request_id, self._max_event_size)
        finally:
            if self._turns is not None:
                self._turns.release()
        _check_answer(answer)


def probe_turns() -> trio.Semaphore:
    """The turns of one origin's probes (see :data:`PROBES_IN_FLIGHT`): trio's semaphore wakes
    its waiters in the order they came."""
    return trio.Semaphore(PROBES_IN_FLIGHT)


async def take_turn(turns: trio.Semaphore) -> None:
    """Take one of ``turns``: at once when one is free (without yielding, so a probe of an
    origin that is not busy costs nothing more), else in the order of asking."""
    try:
        turns.acquire_nowait()
    except trio.WouldBlock:
        await turns.acquire()


class _ProbeSocket:
    __slots__ = ("idle_since", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.idle_since = 0.0


class ProbeSockets:
    """The idle keep-alive sockets that probes of one plain-HTTP origin take turns on.

    A probe takes one (or connects), and gives it back after a complete answer that leaves it
    reusable; any other end closes it. Owned by the manager's :class:`~.http.HttpPool`, which
    closes the idle ones with itself (the busy ones are closed by their probes, which end first).
    """

    __slots__ = ("_fewer", "_idle", "handshaking", "host", "opening", "port", "turns")

    def __init__(self, host: str, port: int, turns: trio.Semaphore) -> None:
        self.host = host
        self.port = port
        self._idle: deque[_ProbeSocket] = deque()
        """Oldest first: each was given back after the one before it."""
        self.turns = turns
        """The origin's probe turns (see :func:`probe_turns`), held by each probe under way."""
        self.handshaking = 0
        """Requests of a handshake under way, its listings included (they take no turn; see
        ``SessionlessDispatcher.handshaking``)."""
        self.opening = trio.Semaphore(LISTENS_OPENING)
        """Held by each list-change stream being opened (until the server's answer begins)."""
        self._fewer: dict[int, trio.Event] = {}
        """By a count that someone waits for :attr:`handshaking` to fall below: set (and
        dropped) once it does."""

    async def until_quiet(self) -> None:
        """Wait while the origin is busy handshaking (:data:`ROUND_BUSY_HANDSHAKES` or more
        requests under way), for :data:`ROUND_DEFER_SECONDS` at most: what can wait (a
        list-change stream, as the probes in rounds) lets the servers not up yet come first."""
        await self._until_fewer_handshakes(ROUND_BUSY_HANDSHAKES, ROUND_DEFER_SECONDS)

    async def until_still(self, at_most: float) -> None:
        """Wait while any handshake request to the origin is under way, for ``at_most``
        seconds at most: for what matters least (listing a catalog again that most likely did
        not change)."""
        await self._until_fewer_handshakes(1, at_most)

    async def _until_fewer_handshakes(self, than: int, at_most: float) -> None:
        with trio.move_on_after(at_most):
            while self.handshaking >= than:
                fewer = self._fewer.get(than)
                if fewer is None:
                    fewer = self._fewer[than] = trio.Event()
                await fewer.wait()

    async def opening_turn(self) -> bool:
        """Take one of the origin's :data:`LISTENS_OPENING` turns (the caller releases
        :attr:`opening`); whether it was taken. It is waited for as long as for the handshakes,
        at most: streams whose answers never begin hold the turns up, but not the streams
        behind them for ever."""
        with trio.move_on_after(ROUND_DEFER_SECONDS):
            await self.opening.acquire()
            return True
        return False

    def handshake_ended(self) -> None:
        """One of the :attr:`handshaking` requests ended."""
        self.handshaking -= 1
        if self._fewer:
            for than in [than for than in self._fewer if self.handshaking < than]:
                self._fewer.pop(than).set()

    def take(self, now: float, *, checked: bool = False) -> _ProbeSocket | None:
        """The most recently used idle socket (the ones idle for too long are closed).
        ``checked``: one the server has not closed meanwhile (a restarted server closed them
        all), checked without waiting: for a request that is not sent twice, which a closed
        socket would fail."""
        self._expire(now)
        while self._idle:
            sock = self._idle.pop()
            if not checked or _still_open(sock):
                return sock
            _close_now(sock)
        return None

    def _expire(self, now: float) -> None:
        idle = self._idle
        while idle and now - idle[0].idle_since >= PROBE_SOCKET_IDLE_SECONDS:
            _close_now(idle.popleft())

    async def connect(self) -> _ProbeSocket:
        try:
            stream = await trio.open_tcp_stream(self.host, self.port)
        except OSError as exc:
            raise httpx2.ConnectError(str(exc)) from exc
        return _ProbeSocket(stream)

    def give_back(self, sock: _ProbeSocket, now: float) -> None:
        self._expire(now)
        if len(self._idle) >= PROBE_SOCKETS_IDLE:
            _close_now(sock)
            return
        sock.idle_since = now
        self._idle.append(sock)

    @property
    def idle(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        idle, self._idle = self._idle, deque()
        for sock in idle:
            _close_now(sock)


def _still_open(sock: _ProbeSocket) -> bool:
    """Whether an idle socket has nothing to read: the server neither closed it nor sent
    anything unasked (either makes it unusable), as ``httpcore`` checks a pooled connection."""
    stream = sock.stream
    if not isinstance(stream, trio.SocketStream):
        return True
    poll = select.poll()
    poll.register(stream.socket.fileno(), select.POLLIN)
    return not poll.poll(0)


def _close_now(sock: _ProbeSocket) -> None:
    """Close a plain TCP socket at once (nothing to flush: it is idle or abandoned)."""
    stream = sock.stream
    if isinstance(stream, trio.SocketStream):
        stream.socket.close()


_PROBE_IDS = 10**8
_ID_MARK = "trio-mcp-probe-00000000"
"""A probe's request id has this width."""


class _Stale(Exception):
    """A reused socket was closed before one byte of the answer: the request was not taken."""


class PlainPost:
    """A request of one connection written as HTTP/1.1 on a socket of ``sockets`` (an
    origin's), its answer read as :mod:`.http1` reads it: what a probe, a call and a listen
    stream share."""

    __slots__ = ("_fixed", "_headers", "_link", "_max", "_sent", "_sockets", "_target", "_url")

    def __init__(
        self,
        sockets: ProbeSockets,
        url: httpx2.URL,
        headers: Mapping[str, str],
        link: Link,
        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._sockets = sockets
        self._url = url
        self._target = url.raw_path
        self._headers = plain_headers(url, headers)
        self._link = link
        self._max = max_bytes
        self._sent = 0
        self._fixed: bytes | None = None
        """What every request's head starts with (checked and written out once)."""

    def _post(self, stamped: Mapping[str, str], length: int) -> bytes:
        """The head of the POST of a JSON-RPC request of ``length`` bytes: the connection's own
        headers, then the request's (``stamped``: its protocol version and method). Raises
        ``h11.LocalProtocolError`` for a header that may not be written."""
        fixed = self._fixed
        if fixed is None:
            fixed = self._fixed = request_line("POST", self._target) + header_lines(
                [
                    *self._headers,
                    ("accept", "application/json, text/event-stream"),
                    ("content-type", "application/json"),
                ]
            )
        return fixed + header_lines([*stamped.items(), ("content-length", str(length))]) + b"\r\n"

    @property
    def max_bytes(self) -> int:
        """The largest answer taken."""
        return self._max

    def refused(self) -> MessageRefusedError:
        """An answer over the bound: the connection is closed as a ``protocol_error``."""
        reason = over_bound(self._max)
        self._link.mark_dead("protocol_error", reason)
        return MessageRefusedError(reason)

    async def _answer(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        content: bytes,
        request_id: str,
        method: str = "server/discover",
    ) -> dict[str, Any]:
        """The JSON-RPC message answering ``request_id`` in a response (see :func:`_answer_of`);
        an HTTP error status is recorded on the link."""
        if status == 200 and _header(headers, b"content-type").lower().startswith(b"application/json"):
            answer = _json_object(content)
            if answer is not None:  # what _answer_of would return, found without building a response
                return answer
        if status >= 400:
            self._link.http_status = status
        request_made = httpx2.Request("POST", self._url)
        response = httpx2.Response(status, headers=headers, content=content, request=request_made)
        return await _answer_of(response, request_id, self._max, method)

    async def _exchange(
        self, request: bytes, request_id: str, *, turn: bool = True
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send the request on an idle socket, again on the next (or a new one) while a reused
        one turns out closed under it; the answer's status, headers and body. ``turn``: wait
        for one of the origin's probe turns first (see :data:`PROBES_IN_FLIGHT`); else it is
        counted as a handshake's request under way (``ProbeSockets.handshaking``)."""
        sockets = self._sockets
        if turn:
            await take_turn(sockets.turns)
        else:
            sockets.handshaking += 1
        try:
            return await self._exchange_in_turn(request, request_id)
        except Exception as exc:
            self.mark_failed(exc)
            raise
        finally:
            if turn:
                sockets.turns.release()
            else:
                sockets.handshake_ended()

    def mark_failed(self, exc: Exception) -> None:
        """A request could not be exchanged (``exc``): the connection is dead, as its own
        transport would have found it."""
        from .._errors import classify

        failure = classify(exc)
        self._link.mark_dead(failure.category, failure.message)

    async def _exchange_in_turn(
        self,
        request: bytes,
        request_id: str,
        *,
        repeatable: bool = True,
        on_event: OnEvent | None = None,
        marker: SentMarker | None = None,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """See :meth:`_exchange`. ``repeatable``: sent again on another socket when a reused one
        turns out closed under it (else that fails the request); ``on_event``: given every other
        message of an event stream answer as it arrives; ``marker``: marked sent when the request
        is written (it is not when no socket could be opened)."""
        sockets = self._sockets
        while True:
            sock = sockets.take(trio.current_time(), checked=not repeatable)
            reused = sock is not None
            if sock is None:
                sock = await sockets.connect()
            if marker is not None:
                marker.sent = True
            try:
                status, headers, content, reusable = await self._exchange_on(
                    sock, request, request_id, reused=reused and repeatable, on_event=on_event
                )
            except _Stale:
                _close_now(sock)
                continue
            except BaseException:
                _close_now(sock)
                raise
            if reusable:
                sockets.give_back(sock, trio.current_time())
            else:
                _close_now(sock)
            return status, headers, content

    async def _exchange_on(
        self,
        sock: _ProbeSocket,
        request: bytes,
        request_id: str,
        *,
        reused: bool,
        on_event: OnEvent | None = None,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
        """The answer's status, headers and body, and whether the socket can be used again: the
        whole body, or of an event stream, what arrived up to the event that answers (the stream
        may stay open after it; the socket is then closed, not reused). ``reused``: a failure
        before the answer begins is :class:`_Stale`."""
        answered = False
        try:
            await sock.stream.send_all(request)
            data = b""
            while True:
                received = bytes(await sock.stream.receive_some(RECEIVE))
                if not received:
                    raise h11.RemoteProtocolError("the server closed the connection without an answer")
                answered = True
                data += received
                try:
                    parsed = parse_head(data, self._max)
                except Unframed:
                    return await self._read_with_h11(sock, data, request_id, on_event)
                except TooLarge:
                    raise self.refused() from None
                if parsed is not None:
                    break
            status, headers, start, length, close = parsed
            chunks = [data[start:]]
            got = len(data) - start
            while got < length:
                received = bytes(await sock.stream.receive_some(RECEIVE))
                if not received:
                    raise h11.RemoteProtocolError("the server closed the connection within an answer")
                chunks.append(received)
                got += len(received)
            content = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            # Anything after the answer (nothing was asked for) makes the socket unusable.
            return status, headers, content[:length], not close and got == length
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError) as exc:
            if reused and not answered:
                # Most often the server closed this idle connection after its own timeout and
                # dropped what arrived on it; server/discover may be sent again in any case.
                raise _Stale from exc
            if isinstance(exc, h11.RemoteProtocolError):
                raise httpx2.RemoteProtocolError(str(exc)) from exc
            raise (httpx2.ReadError if answered else httpx2.WriteError)(
                str(exc) or type(exc).__name__
            ) from exc

    async def _read_with_h11(
        self, sock: _ProbeSocket, data: bytes, request_id: str, on_event: OnEvent | None
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
        """:meth:`_exchange_on` for an answer not framed by ``Content-Length``, of which
        ``data`` arrived so far: read by h11."""
        conn = h11_after_request()
        conn.receive_data(data)
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        size = 0
        events: EventData | None = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await sock.stream.receive_some(RECEIVE)))
            elif isinstance(event, h11.Response):
                status, headers = event.status_code, list(event.headers)
                content_type = _header(headers, b"content-type").lower()
                if status == 200 and content_type.startswith(b"text/event-stream"):
                    events = EventData()
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > self._max:
                    raise self.refused()
                chunks.append(bytes(event.data))
                if events is not None:
                    for message_data in events.feed(chunks[-1]):
                        message = _json_object(message_data)
                        if _answers(message, request_id):
                            # The stream's end, when it came with the answer, leaves the
                            # socket reusable; if it did not (yet), the socket is closed.
                            conn.next_event()
                            return status, headers, b"".join(chunks), _reusable(conn)
                        if on_event is not None and message is not None:
                            await on_event(message)
            elif isinstance(event, h11.EndOfMessage):
                return status, headers, b"".join(chunks), _reusable(conn)
            elif isinstance(event, h11.ConnectionClosed):
                raise h11.RemoteProtocolError("the server closed the connection without an answer")


def _reusable(conn: h11.Connection) -> bool:
    """Whether the socket an h11 ``conn`` read a whole answer on can carry the next request."""
    return conn.our_state is h11.DONE and conn.their_state is h11.DONE


class PlainDiscoverProbe(PlainPost):
    """``server/discover`` as one POST, on a socket of ``sockets``.

    The same answer checks as :class:`DiscoverProbe` (a JSON answer is read as it is; any other
    becomes an ``httpx2.Response`` read by the same code), the same errors (``httpx2``
    transport errors), and the same marks on ``link``: an HTTP error status is recorded, and a
    POST that cannot be delivered marks the connection dead with its category, as the
    connection's own transport does. At most :data:`PROBES_IN_FLIGHT` probes of one origin
    are under way at once.
    """

    __slots__ = ("_written", "rounds")

    def __init__(
        self,
        sockets: ProbeSockets,
        url: httpx2.URL,
        headers: Mapping[str, str],
        link: Link,
        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__(sockets, url, headers, link, max_bytes)
        self._written: dict[str, tuple[bytes, bytes]] = {}
        """For each version, the whole request written out, around the request id: every probe
        of one version has a body of the same length (its id has a fixed width)."""
        self.rounds: RoundOrigin | None = None
        """Its origin's share of the probe rounds, which it can also be sent in (in a
        manager); ``None``: it is sent by itself only."""

    def _next_id(self) -> str:
        self._sent += 1
        return f"trio-mcp-probe-{self._sent % _PROBE_IDS:08d}"

    async def __call__(self, version: str) -> None:
        request, request_id = self.request_bytes(version)
        status, response_headers, content = await self._exchange(request, request_id)
        await self.check(status, response_headers, content, request_id)

    def request_bytes(self, version: str) -> tuple[bytes, str]:
        """The next probe as the bytes of one whole HTTP/1.1 request, and its request id (also
        for a caller that writes it on a socket of its own: the probe rounds)."""
        written = self._written.get(version)
        if written is None:
            before, after = _discover_body(_ID_MARK, version).split(_ID_MARK.encode())
            length = len(before) + len(_ID_MARK) + len(after)
            head = self._post(_stamped_headers(version, "server/discover"), length)
            written = self._written[version] = (head + before, after)
        request_id = self._next_id()
        return written[0] + request_id.encode() + written[1], request_id

    async def check(
        self, status: int, headers: list[tuple[bytes, bytes]], content: bytes, request_id: str
    ) -> None:
        """Check an answer to probe ``request_id`` (header names in lower case): raise what the
        probe would raise, or return."""
        _check_answer(await self._answer(status, headers, content, request_id))


class _DropsNotifications:
    """The part of an SDK session's dispatcher for notifications from the client, on the
    2026-07-28 HTTP wire."""

    __slots__ = ()

    async def notify(
        self, method: str, params: Mapping[str, Any] | None, opts: Mapping[str, Any] | None = None
    ) -> None:
        """Dropped: the 2026-07-28 HTTP wire has no notifications from the client."""
        await trio.lowlevel.checkpoint()


class SessionlessDispatcher(_DropsNotifications, PlainPost):
    """The dispatcher of an SDK ``ClientSession`` that is never entered: each request it is
    given is one POST on a socket of ``sockets``, with the headers the session
    stamped on it. So a 2026-07-28 server's handshake (``server/discover`` and the listings)
    is sent, and its answers checked and adopted, by the SDK's own session code, without the
    transport, the tasks and the streams of an open session.

    Only :data:`SESSIONLESS_METHODS` are sent; the same errors and link marks as
    :class:`PlainDiscoverProbe`.
    """

    __slots__ = ("handshaking",)

    def __init__(
        self,
        sockets: ProbeSockets,
        url: httpx2.URL,
        headers: Mapping[str, str],
        link: Link,
        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__(sockets, url, headers, link, max_bytes)
        self.handshaking = True
        """Whether what it sends is the connection's handshake: counted as a handshake under
        way (``ProbeSockets.handshaking``) and sent without waiting for a turn. Its owner sets
        it to ``False`` once the connection is up: a catalog listed again then takes one of
        the probes' turns like any other request to a server that is up, and does not hold
        the origin's probes and streams back as a fleet coming up does."""

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The result the server answered to ``method``; raises the ``MCPError`` it answered
        instead."""
        if method not in SESSIONLESS_METHODS:
            raise RuntimeError(f"{method} needs a session")
        self._sent += 1
        request_id = f"trio-mcp-{self._sent}"
        body = json.dumps(request_message(request_id, method, params)).encode()
        request = self._post((opts or {}).get("headers") or {}, len(body)) + body
        # A handshake's requests are not in the probes' turns: handshakes are bounded by the
        # manager's connect slots, and a fleet coming up must not queue its handshakes behind
        # the probes of its first servers.
        status, headers, content = await self._exchange(request, request_id, turn=not self.handshaking)
        return result_of(await self._answer(status, headers, content, request_id, method), method)


class PlainCalls(_DropsNotifications, PlainPost):
    """The dispatcher of the SDK session that a plain-HTTP 2026-07-28 connection is served with
    (a session never entered): each request is one POST on a socket of the origin's
    keep-alive sockets, with the headers the session stamped on it, sent and read in the
    caller's own task. The SDK's streamable-HTTP transport would add, per request, a task, a
    pair of memory streams and a pass through ``httpx2`` and ``httpcore2``, for what on this
    wire is one self-contained POST (no session id, no server requests, no notifications from
    the client: a request is cancelled by closing its answer's stream, as closing the socket
    does here).

    - An event-stream answer is read as it arrives: a progress notification for the request
      goes to the caller's ``on_progress``, any other message to :attr:`on_notification`.
    - A request is marked sent (:data:`~.base.sent_marker`) once a socket is open for it;
      one that no socket could be opened for never reached the server.
    - Only :data:`~.wire.REPEATABLE_METHODS` are sent again when a reused socket turns out
      closed under them; a ``tools/call`` is not (that fails it).
    - A failure to exchange marks the connection dead, as the SDK transport's does; an HTTP
      error status or a JSON-RPC error is the request's own error.
    - The requests under way when the session closes (:meth:`abandon`: the connection was
      dropped) fail with "Connection closed", as an SDK session's do when it closes.
    """

    __slots__ = ("_under_way", "on_notification")

    def __init__(
        self,
        sockets: ProbeSockets,
        url: httpx2.URL,
        headers: Mapping[str, str],
        link: Link,
        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__(sockets, url, headers, link, max_bytes)
        self.on_notification: OnEvent | None = None
        """Given each server notification but progress (the session's own handlers)."""
        self._under_way: set[trio.CancelScope] = set()

    def abandon(self) -> None:
        """End every request under way: each fails with "Connection closed" (its socket is
        closed, which cancels it at the server)."""
        for scope in self._under_way:
            scope.cancel()

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The result the server answered to ``method``; raises the ``MCPError`` it answered
        instead (``REQUEST_TIMEOUT`` when ``opts["timeout"]`` passed first)."""
        opts = opts or {}
        self._sent += 1
        request_id = f"trio-mcp-{self._sent}"
        message = request_message(request_id, method, params)
        on_progress = opts.get("on_progress")
        if on_progress is not None:
            # The request id is the progress token, as the SDK's own dispatcher makes it.
            sent_params = message.setdefault("params", {})
            sent_params["_meta"] = {**(sent_params.get("_meta") or {}), "progressToken": request_id}
        body = json.dumps(message).encode()
        request = self._post(opts.get("headers") or {}, len(body)) + body

        async def on_event(event: dict[str, Any]) -> None:
            await self._heard(event, request_id, on_progress)

        timeout = opts.get("timeout")
        # One scope ends it either way: at the timeout, or when the session is abandoned.
        scope = trio.CancelScope(deadline=math.inf if timeout is None else trio.current_time() + timeout)
        self._under_way.add(scope)
        try:
            with scope:
                try:
                    status, headers, content = await self._exchange_in_turn(
                        request,
                        request_id,
                        repeatable=method in REPEATABLE_METHODS,
                        on_event=on_event,
                        marker=sent_marker.get(),
                    )
                except Exception as exc:
                    self.mark_failed(exc)
                    raise
                return result_of(await self._answer(status, headers, content, request_id, method), method)
        finally:
            self._under_way.discard(scope)
        from mcp.shared.exceptions import MCPError

        if trio.current_time() < scope.deadline:
            # Cancelled before its deadline: by abandon().
            raise MCPError(_CONNECTION_CLOSED, "Connection closed")
        raise MCPError(
            REQUEST_TIMEOUT, f"Timed out while waiting for response to {method}. Waited {timeout} seconds."
        )

    async def _heard(
        self, message: dict[str, Any], request_id: str, on_progress: Callable[..., Awaitable[None]] | None
    ) -> None:
        """A message of an answer's event stream other than the answer."""
        if "id" in message:
            return  # a server request: none is defined on this wire, and none can be answered
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        if message.get("method") == "notifications/progress":
            if on_progress is not None and params.get("progressToken") == request_id:
                try:
                    await on_progress(params.get("progress"), params.get("total"), params.get("message"))
                except Exception:
                    logger.exception("progress callback raised")
            return
        if self.on_notification is not None:
            await self.on_notification(message)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes:
    """The first value of header ``name`` (names are in lower case), or ``b""``."""
    return next((value for key, value in headers if key == name), b"")


class EventData:
    """Splits an event stream, fed in arbitrary chunks, into the data of its events."""

    __slots__ = ("_buffer", "_cr")

    @property
    def pending(self) -> int:
        """Bytes of the event that has not ended yet."""
        return len(self._buffer)

    def __init__(self) -> None:
        self._buffer = b""
        self._cr = False
        """The last chunk ended in ``\\r``: a ``\\n`` starting the next one belongs to it."""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The data of each event that ended in ``chunk`` (events without data are left out)."""
        if self._cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._cr = chunk.endswith(b"\r")
        text = self._buffer + chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *ended, self._buffer = text.split(b"\n\n")
        found = []
        for event in ended:
            lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
            if lines:
                found.append(b"\n".join(lines))
        return found


async def _answer_of(
    response: httpx2.Response,
    request_id: str,
    max_event_size: int = DEFAULT_MAX_MESSAGE_BYTES,
    method: str = "server/discover",
) -> dict[str, Any]:
    """The JSON-RPC message answering ``request_id`` (a ``method`` request) in ``response`` (a
    JSON body or an event stream), or the error the SDK's transport makes up for a response
    that holds none."""
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
        said = f"server answered {method} with HTTP {status}"
        return {"error": {"code": _INVALID_REQUEST, "message": said}}
    if content_type.startswith("application/json"):
        body = _json_object(await response.aread())
        if body is not None:
            return body
    elif content_type.startswith("text/event-stream"):
        async for event in httpx2.EventSource(response, max_event_size=max_event_size):
            message = _json_object(event.data.encode()) if event.data else None
            if message is not None and _answers(message, request_id):
                return message
        return {"error": {"code": _CONNECTION_CLOSED, "message": "SSE stream ended without a response"}}
    said = f"Unexpected content type: {content_type}"
    return {"error": {"code": _INVALID_REQUEST, "message": said}}


def _answers(message: dict[str, Any] | None, request_id: str) -> bool:
    """Whether ``message`` is the JSON-RPC answer (a result or an error) to ``request_id``."""
    return (
        message is not None
        and message.get("id") == request_id
        and ("result" in message or "error" in message)
    )


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
