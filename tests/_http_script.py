"""A scripted HTTP/1.1 server (h11) for the tests of the transport's own requests: every answer
a server could give, and every way it could drop a connection, can be given on purpose."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import h11
import trio

Answer = tuple[int, str | None, str]
"""status, content type (``None``: no header), body (``ID`` is replaced by the request's id)."""

RESULT = '{"jsonrpc": "2.0", "id": "ID", "result": {"supportedVersions": ["2026-07-28"]}}'
ERROR = '{"jsonrpc": "2.0", "id": "ID", "error": {"code": -32603, "message": "overloaded"}}'
OK: Answer = (200, "application/json", RESULT)


@dataclass
class ScriptedHttpServer:
    """An HTTP/1.1 server (h11) whose answers are scripted: ``answer(connection, request)``
    gives the answer, or ``None`` to read the request and close the connection without a byte
    of answer. Records every request it read, per connection."""

    answer: Callable[[int, dict[str, Any]], Answer | None] = lambda connection, request: OK
    host: str = "127.0.0.1"
    hold_open: bool = False
    """Keep an answer's body open after it (an event stream that stays open): read until the
    client closes the connection."""
    gate: trio.Event | None = None
    """Given: every answer waits until it is set."""
    port: int = 0
    requests: list[tuple[int, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    connections: int = 0
    closed: int = 0
    """Connections that ended (either side closed them)."""
    _ended: trio.Event = field(default_factory=trio.Event)
    _read: trio.Event = field(default_factory=trio.Event)
    _open: set[trio.CancelScope] = field(default_factory=set)

    def close_all(self) -> None:
        """Close every open connection (as a server that restarts does)."""
        for scope in self._open:
            scope.cancel()

    async def wait_requests(self, count: int) -> None:
        """Wait until ``count`` requests have been read in all."""
        with trio.fail_after(5):
            while len(self.requests) < count:
                await self._read.wait()
                self._read = trio.Event()

    async def wait_closed(self, count: int) -> None:
        """Wait until ``count`` connections have ended."""
        with trio.fail_after(5):
            while self.closed < count:
                await self._ended.wait()
                self._ended = trio.Event()

    def _end(self) -> None:
        self.closed += 1
        self._ended.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/mcp"

    async def _handle(self, stream: trio.SocketStream) -> None:
        index = self.connections
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        scope = trio.CancelScope()
        self._open.add(scope)
        try:
            with scope:
                await self._exchange(stream, conn, index)
        finally:
            self._open.discard(scope)

    async def _exchange(self, stream: trio.SocketStream, conn: h11.Connection, index: int) -> None:
        try:
            async with stream:
                while True:
                    request: h11.Request | None = None
                    body = b""
                    while True:
                        event = conn.next_event()
                        if event is h11.NEED_DATA:
                            data = await stream.receive_some()
                            if not data:
                                return
                            conn.receive_data(data)
                        elif isinstance(event, h11.Request):
                            request = event
                        elif isinstance(event, h11.Data):
                            body += event.data
                        elif isinstance(event, h11.EndOfMessage):
                            break
                    assert request is not None
                    sent = json.loads(body)
                    headers = {k.decode(): v.decode() for k, v in request.headers}
                    self.requests.append((index, sent, headers))
                    self._read.set()
                    answer = self.answer(index, sent)
                    if answer is None:
                        return  # read, and dropped without an answer
                    if self.gate is not None:
                        await self.gate.wait()
                    status, content_type, text = answer
                    payload = text.replace("ID", sent["id"]).encode()
                    # An event stream goes chunked, in two chunks, as a streaming server sends it.
                    events = content_type == "text/event-stream"
                    response_headers = [] if events else [("content-length", str(len(payload)))]
                    if content_type is not None:
                        response_headers.append(("content-type", content_type))
                    half = len(payload) // 2 if events else len(payload)
                    await stream.send_all(
                        conn.send(h11.Response(status_code=status, headers=response_headers))
                    )
                    for part in (payload[:half], payload[half:]):
                        if part:
                            await stream.send_all(conn.send(h11.Data(data=part)))
                    if self.hold_open:
                        while await stream.receive_some():
                            pass
                        return
                    await stream.send_all(conn.send(h11.EndOfMessage()))
                    conn.start_next_cycle()
        except trio.BrokenResourceError:
            pass  # the client went away: this connection ends, as on any server, and no other
        finally:
            self._end()


@asynccontextmanager
async def serving(server: ScriptedHttpServer) -> AsyncIterator[ScriptedHttpServer]:
    """``server`` listening (on a port of its own) until the block ends."""
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


async def refused_url() -> str:
    """The URL of a local port that nobody listens on (a connection to it is refused)."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    return f"http://127.0.0.1:{port}/mcp"
