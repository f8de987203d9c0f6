"""The in-memory transport: an MCP server object run in this process, with fault hooks."""

from __future__ import annotations

import contextvars
import errno
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import trio

from .._config import MemoryTransport
from .base import STDIO_CLOSE_GRACE, Link, _ReadStreamWrapper


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
