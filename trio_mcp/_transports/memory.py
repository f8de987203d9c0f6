"""The in-memory transport: an MCP server object run in this process, with fault hooks, over
in-memory streams or (a plain SDK server in the 2026-07-28 era) called directly."""

from __future__ import annotations

import contextvars
import errno
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import trio
from mcp.shared.direct_dispatcher import DIRECT_TRANSPORT_KIND, DirectDispatcher
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INTERNAL_ERROR, INVALID_PARAMS
from pydantic import ValidationError

from .._config import MemoryTransport
from .base import STDIO_CLOSE_GRACE, Link, SentMarker, _ReadStreamWrapper, sent_marker

logger = logging.getLogger(__name__)


class MemoryConnectionInfo:
    """Per-connection facts an in-memory server's handlers can read (via ``memory_connection``)."""

    __slots__ = ("handshaken", "number")

    def __init__(self, number: int) -> None:
        self.number = number
        self.handshaken = False


memory_connection: contextvars.ContextVar[MemoryConnectionInfo | None] = contextvars.ContextVar(
    "trio_mcp_memory_connection", default=None
)


class _TaggedReadStream(_ReadStreamWrapper):
    """Server side of an in-memory connection: handlers see ``memory_connection`` set.

    The SDK runs each handler in the context its message was sent from (the client's), so
    the tag is added to a copy of that context.
    """

    def __init__(self, inner: Any, info: MemoryConnectionInfo) -> None:
        self._inner = inner
        self._info = info
        self.last_context: contextvars.Context | None = None

    async def receive(self) -> Any:
        return self._tagged(await self._inner.receive())

    async def __anext__(self) -> Any:
        try:
            item = await self._inner.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        return self._tagged(item)

    def _tagged(self, item: Any) -> Any:
        sender = getattr(self._inner, "last_context", None)
        context = sender.run(contextvars.copy_context) if sender is not None else contextvars.copy_context()
        context.run(memory_connection.set, self._info)
        self.last_context = context
        return item


class MemoryServerHooks:
    """Fault hooks for in-memory servers (used by :mod:`trio_mcp.testing`)."""

    def __init__(self) -> None:
        self.refuse_connections = False
        self.legacy_only = False
        self._live: set[trio.CancelScope] = set()
        self.connections_opened = 0
        self.connect_attempts: list[float] = []
        """Trio-clock times of every connection attempt, refused ones included."""

    def kill_connections(self) -> int:
        """Drop every live connection as if the server crashed; returns how many."""
        live = list(self._live)
        for scope in live:
            scope.cancel()
        return len(live)

    @property
    def live_connections(self) -> int:
        return len(self._live)


def _lowlevel(server: Any) -> Any:
    from mcp.server.mcpserver import MCPServer

    if isinstance(server, MCPServer):
        return server._lowlevel_server
    inner = getattr(server, "mcp_server", None)
    if inner is not None:
        return _lowlevel(inner)
    return server


@asynccontextmanager
async def _open_memory(config: MemoryTransport, link: Link) -> AsyncIterator[tuple[Any, Any]]:
    from mcp.server.runner import serve_loop
    from mcp.shared.memory import create_client_server_memory_streams

    hooks: MemoryServerHooks | None = getattr(config.server, "_trio_mcp_hooks", None)
    if hooks is not None:
        hooks.connect_attempts.append(trio.current_time())
    if hooks is not None and hooks.refuse_connections:
        raise ConnectionRefusedError(errno.ECONNREFUSED, "connection refused (in-memory server is down)")
    server = _lowlevel(config.server)
    legacy_only = hooks is not None and hooks.legacy_only

    async with create_client_server_memory_streams() as (client_streams, server_streams):
        client_read, client_write = client_streams
        server_read, server_write = server_streams
        server_scope = trio.CancelScope()
        server_done = trio.Event()

        async def run_server() -> None:
            read: Any = server_read
            if hooks is not None:
                hooks._live.add(server_scope)
                hooks.connections_opened += 1
                read = _TaggedReadStream(server_read, MemoryConnectionInfo(hooks.connections_opened))
            try:
                with server_scope:
                    if legacy_only:
                        async with server.lifespan(server) as state:
                            await serve_loop(
                                server,
                                read,
                                server_write,
                                lifespan_state=state,
                                init_options=server.create_initialization_options(),
                            )
                    else:
                        await server.run(read, server_write, server.create_initialization_options())
            finally:
                if hooks is not None:
                    hooks._live.discard(server_scope)
                link.mark_dead("transport_error", "connection closed by the server")
                # EOF for the client: pending requests get "Connection closed".
                with trio.CancelScope(shield=True):
                    await server_write.aclose()
                    await server_read.aclose()
                server_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_server, name=f"{link.server}: in-memory server")
            try:
                yield client_read, client_write
            finally:
                with trio.CancelScope(shield=True):
                    await client_write.aclose()
                    with trio.move_on_after(STDIO_CLOSE_GRACE):
                        await server_done.wait()
                nursery.cancel_scope.cancel()


def direct_server(config: MemoryTransport, protocol: str) -> Any | None:
    """The low-level SDK server that a connection to ``config`` calls directly (see
    :func:`open_direct`), or ``None``: the connection speaks JSON-RPC over in-memory streams.

    Direct is for a plain SDK server spoken to in the 2026-07-28 era. A server of the test kit
    (one with fault hooks: killed connections, wire faults, a legacy-only server) keeps the
    streams, where those faults act as they do on a real transport, and so do a connection
    held to the ``initialize`` handshake (``protocol="legacy"``) and ``direct=False``."""
    if not config.direct or protocol == "legacy" or hasattr(config.server, "_trio_mcp_hooks"):
        return None
    return _lowlevel(config.server)


class _DirectCalls(DirectDispatcher):
    """The client side of a direct connection: the SDK's ``DirectDispatcher``, which runs the
    server's handler in the calling task.

    It marks the caller's ``sent_marker`` once the request is handed to the server (a request
    refused before that, on a closed connection, is not sent), and keeps track of the calls
    under way, so that closing the connection ends them as closing a stream does, before the
    server's lifespan ends: an invocation's attempt is cancelled through its own cancel scope
    (``SentMarker.scope``) and marked ``cut``; any other request (the supervisor's, the SDK's
    own) runs under a marker and cancel scope of its own here, and raises "Connection closed"."""

    def __init__(self, context: Any) -> None:
        super().__init__(context, raise_handler_exceptions=False)
        self._under_way: set[SentMarker] = set()
        self._none_under_way: trio.Event | None = None

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        # A call is a checkpoint, as over a stream, even when the handler never awaits: a
        # cancelled caller sends nothing (here), and a caller calling in a loop lets others
        # run (the schedule point after the handler, in ``_DirectServed``).
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._running or self._closed:
            return await super().send_raw_request(method, params, opts)  # refused: not sent
        marker = sent_marker.get()
        if marker is not None:
            marker.sent = True
            if marker.scope is not None:
                return await self._send_under(marker, method, params, opts)
        scope = trio.CancelScope()
        with scope:
            return await self._send_under(SentMarker(scope), method, params, opts)
        raise MCPError(code=CONNECTION_CLOSED, message="Connection closed")

    async def _send_under(
        self, marker: SentMarker, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None
    ) -> dict[str, Any]:
        """Send, with ``marker`` (and its scope) among the calls under way meanwhile."""
        under_way = self._under_way
        under_way.add(marker)
        try:
            return await super().send_raw_request(method, params, opts)
        finally:
            under_way.discard(marker)
            if not under_way and self._none_under_way is not None:
                self._none_under_way.set()

    async def cut(self, grace: float) -> None:
        """End the calls under way and wait, ``grace`` seconds at most, until their handlers
        have returned."""
        if not self._under_way:
            return
        self._none_under_way = trio.Event()
        for marker in self._under_way:
            marker.cut = True
            assert marker.scope is not None
            marker.scope.cancel()
        with trio.move_on_after(grace):
            await self._none_under_way.wait()


class _DirectServed(DirectDispatcher):
    """The server side of a direct connection: the SDK's ``DirectDispatcher``, except that a
    request carrying no timeout of its own (the manager's: its attempt's cancel scope bounds
    it) reaches the handler with no cancel scope of the dispatcher's around it, which costs a
    tenth of a call. The request id, the calls in flight, what a handler's exception becomes
    and the schedule point after the handler are the SDK's; a handler's exception is reported
    as over the wire (sanitized, logged), so that is how this side is always built."""

    def __init__(self, context: Any) -> None:
        super().__init__(context, raise_handler_exceptions=False)

    async def _dispatch_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None
    ) -> dict[str, Any]:
        on_request = self._on_request
        if opts and (opts.get("timeout") is not None or opts.get("request_id") is not None):
            return await super()._dispatch_request(method, params, opts)
        if self._closed or not self._running or on_request is None:
            return await super()._dispatch_request(method, params, opts)  # refused as the SDK does
        in_flight = self._in_flight_ids
        self._next_id += 1
        while self._next_id in in_flight:
            self._next_id += 1
        request_id = self._next_id
        in_flight.add(request_id)
        try:
            context = self._make_context(opts.get("on_progress") if opts else None, request_id)
            return await on_request(context, method, params)
        except MCPError:
            raise
        except ValidationError as exc:
            raise MCPError(code=INVALID_PARAMS, message="Invalid request parameters", data="") from exc
        except Exception:
            logger.exception("request handler raised")
            raise MCPError(code=INTERNAL_ERROR, message="Internal server error") from None
        finally:
            in_flight.discard(request_id)
            # The call's schedule point, after the handler, as the SDK's: a task the handler
            # woke (the next waiter on a lock it let go) runs before this caller goes on.
            await trio.lowlevel.cancel_shielded_checkpoint()


async def _no_notifications(*args: Any) -> None:
    """The server side takes no notification from the client (the 2026-07-28 era sends none
    that a server must act on; a cancellation is the calling task's own cancel scope)."""


@asynccontextmanager
async def open_direct(server: Any, link: Link) -> AsyncIterator[DirectDispatcher]:
    """A connection to the in-process ``server`` that calls it directly, as the SDK's
    ``Client(server)`` does: each request runs the server's handler in the calling task, with no
    JSON-RPC framing and no task between (a caller's deadline or cancellation reaches the
    handler at once). Yields the dispatcher an SDK session is opened with; the server's side
    runs in a nursery of the task that opened it, until the block ends."""
    from mcp.server.runner import modern_on_request
    from mcp.shared.transport_context import TransportContext

    context = TransportContext(kind=DIRECT_TRANSPORT_KIND, can_send_request=True, headers=None)
    client = _DirectCalls(context)
    served = _DirectServed(context)
    client.connect_to(served)
    served.connect_to(client)
    async with server.lifespan(server) as state, trio.open_nursery() as nursery:
        await nursery.start(served.run, modern_on_request(server, state), _no_notifications)
        try:
            yield client
        finally:
            served.close()
            link.mark_dead("transport_error", "connection closed")
            with trio.CancelScope(shield=True):
                await client.cut(STDIO_CLOSE_GRACE)
