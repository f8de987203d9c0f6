"""The list-change stream of a plain-HTTP 2026-07-28 connection: ``subscriptions/listen`` as one
long POST, its answer read by h11, on a socket of its own.

A 2026-07-28 server announces list changes only on such a stream, so every supervised server
holds one open for as long as it is connected: in an idle fleet it is most of what a server
holds. Through the SDK it takes a dispatcher route, a task in the transport's task group, an
``httpx2`` response and a pooled connection of its own; here it is a socket and an h11 parser,
read by the supervisor's own listening task. Used where the discover probe goes plain (see
:mod:`.http_probe`); the messages read are the same, and so is what the supervisor does with them.

A stream is opened only once its origin is not busy handshaking (see
:meth:`~.http_probe.ProbeSockets.until_quiet`): when a fleet comes up, or comes back after its
origin restarted, each stream costs the origin about as much as a handshake and the listings
after it, and the servers not up yet come first. The catalogs were just listed; a change in the
meantime is missed as one made while the stream was being opened would be. At most
:data:`~.http_probe.LISTENS_OPENING` streams of an origin are being opened at once (each waits
for a turn as long as for the handshakes, at most), so that a thousand streams let through
together do not queue in front of the last handshakes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import h11
import httpx2
import trio

from .http1 import RECEIVE, h11_after_request
from .http_probe import (
    EventData,
    PlainPost,
    _answer_of,
    _answers,
    _close_now,
    _json_object,
)
from .wire import LISTEN, ListenLostError, listen_body
from .wire import rpc_error as _rpc_error


class PlainListen(PlainPost):
    """``subscriptions/listen`` as one POST (its answer read by h11), on a socket connected for it.

    Failing to connect or losing the stream never marks the connection dead (the server may have
    restarted, and the connection's other requests go on: the owner listens again later, as with
    the SDK's stream); an event over the bound does, as ``protocol_error``, as any other
    response of the connection would.
    """

    __slots__ = ()

    async def __call__(
        self,
        version: str,
        kinds: tuple[str, ...],
        on_message: Callable[[str, dict[str, Any]], Awaitable[None]],
    ) -> None:
        """Listen for changes of ``kinds`` until the stream ends (once the origin is not busy
        handshaking); ``on_message(subscription_id, message)`` for each message read on it.
        Returns on the server's graceful close; raises the ``MCPError`` the server answered,
        :class:`ListenLostError` when the stream ended without an answer, or an ``httpx2``
        transport error."""
        from mcp.shared.inbound import MCP_METHOD_HEADER, MCP_PROTOCOL_VERSION_HEADER

        self._sent += 1
        request_id = f"trio-mcp-listen-{self._sent}"
        body = listen_body(request_id, version, kinds)
        stamped = {MCP_PROTOCOL_VERSION_HEADER: version, MCP_METHOD_HEADER: LISTEN}
        request = self._post(stamped, len(body)) + body
        sockets = self._sockets
        await sockets.until_quiet()
        opening = await sockets.opening_turn()

        def opened() -> None:
            nonlocal opening
            if opening:
                opening = False
                sockets.opening.release()

        try:
            sock = await sockets.connect()
            try:
                answer = await self._read(sock.stream, request, request_id, on_message, opened)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise httpx2.ReadError(str(exc) or type(exc).__name__) from exc
            except h11.ProtocolError as exc:
                raise httpx2.RemoteProtocolError(str(exc)) from exc
            finally:
                _close_now(sock)
        finally:
            opened()
        error = answer.get("error")
        if error is not None:
            raise _rpc_error(error)

    async def _read(
        self,
        stream: trio.abc.Stream,
        request: bytes,
        request_id: str,
        on_message: Callable[[str, dict[str, Any]], Awaitable[None]],
        opened: Callable[[], None],
    ) -> dict[str, Any]:
        """Send the request and read the answer: the message answering it, after every other
        message of an event stream was handed to ``on_message``; ``opened()`` once the answer
        begins."""
        await stream.send_all(request)
        conn = h11_after_request()
        events: EventData | None = None
        response: h11.Response | None = None
        chunks: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(RECEIVE)))
            elif isinstance(event, h11.Response):
                opened()
                response = event
                content_type = next((v for k, v in event.headers if k == b"content-type"), b"").lower()
                if event.status_code == 200 and content_type.startswith(b"text/event-stream"):
                    events = EventData()
                elif event.status_code >= 400:
                    self._link.http_status = event.status_code
            elif isinstance(event, h11.Data):
                if events is None:
                    size += len(event.data)
                    if size > self._max:
                        raise self.refused()
                    chunks.append(bytes(event.data))
                    continue
                for data in events.feed(bytes(event.data)):
                    if len(data) > self._max:
                        raise self.refused()
                    message = _json_object(data)
                    if message is None:
                        continue
                    if _answers(message, request_id):
                        return message
                    await on_message(request_id, message)
                if events.pending > self._max:  # an event that never ends is cut too
                    raise self.refused()
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                if response is None:
                    raise ListenLostError("the server closed the connection without an answer")
                if events is not None:
                    raise ListenLostError(f"the {LISTEN} stream ended without the server's answer")
                whole = httpx2.Response(
                    response.status_code,
                    headers=list(response.headers),
                    content=b"".join(chunks),
                    request=httpx2.Request("POST", self._url),
                )
                return await _answer_of(whole, request_id, self._max, LISTEN)
