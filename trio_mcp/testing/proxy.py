"""A fault-injecting TCP proxy on loopback, for tests against real servers (streamable HTTP).

:class:`FaultProxy` listens on ``127.0.0.1`` (a free port unless told otherwise) and relays every
connection to an upstream ``host:port``. The test switches its fault at any time; the fault
applies to the connections open then and to those opened later::

    async with FaultProxy(server_port) as proxy:
        config = trio_mcp.ServerConfig(name="a", transport=trio_mcp.HttpTransport(url=proxy.url("/mcp")))
        ...
        proxy.reset_after(40, direction="downstream")  # the next answer is cut by a reset
        ...
        proxy.heal()

The faults (one at a time; setting one replaces the last):

=================  ==========================================================  ==============
fault              what the proxy does                                         direction
=================  ==========================================================  ==============
``latency``        holds each chunk ``seconds`` before forwarding it (chunks   either or both
                   of one direction queue behind each other)
``blackhole``      reads and discards: forwards nothing and answers nothing,   either or both
                   end of stream included; a connection opened meanwhile is
                   not connected upstream at all
``reset``          forwards ``nbytes`` more bytes, then aborts both sides      counted over
                   with a reset (``SO_LINGER`` 0, then close)                  either or both
``slow_close``     stops forwarding at once, holds both sockets open           the whole
                   ``seconds``, then closes both cleanly                       connection
``fragment``       forwards ``nbytes`` bytes (1 by default) per write          either or both
``truncate``       forwards ``nbytes`` more bytes, then closes both sides      counted over
                   cleanly (by default of a response: ``downstream``)          either or both
=================  ==========================================================  ==============

``upstream`` is the client's bytes going to the server, ``downstream`` the server's answers.
The bytes of ``reset`` and ``truncate`` count per connection from when the fault first reaches
it (a connection opened while it is set: from its first byte), so a fault set on a busy
connection cuts the next request or answer at that offset.

Damage outlives its fault: :meth:`FaultProxy.heal` clears the fault for what flows next, but a
connection whose bytes a black hole discarded carries a broken stream, so it stays a black hole
(in the directions it dropped bytes) until one side closes it, and a slow close under way holds
for its whole time. :meth:`FaultProxy.statistics` counts these as ``broken``, and
:meth:`FaultProxy.wait_settled` waits until none is left. A reset by either peer is passed on to
the other as a reset; an end of stream as an end of stream (except through a black hole).

The proxy runs in a nursery the caller owns: ``async with FaultProxy(port) as proxy`` (the
block owns it), or ``proxy = await nursery.start(FaultProxy(port).serve)``. When it stops, every
socket it opened is closed.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self

import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = [
    "DIRECTIONS",
    "FAULT_KINDS",
    "Direction",
    "FaultKind",
    "FaultProxy",
    "FaultProxyStatistics",
    "ProxyFault",
]

FaultKind = Literal["none", "latency", "blackhole", "reset", "slow_close", "fragment", "truncate"]
"""What a :class:`FaultProxy` does to the bytes it relays (see the module's docstring)."""

Direction = Literal["upstream", "downstream", "both"]
"""Which bytes a fault applies to: the client's (``upstream``), the server's (``downstream``)
or both."""

FAULT_KINDS: tuple[FaultKind, ...] = ("latency", "blackhole", "reset", "slow_close", "fragment", "truncate")
"""Every fault :class:`FaultProxy` injects (``none`` aside)."""

DIRECTIONS: tuple[Direction, ...] = ("upstream", "downstream", "both")

DEFAULT_CHUNK_SIZE = 65536
"""The most bytes read from a socket at once (one chunk)."""
DEFAULT_CLOSE_TIMEOUT = 1.0
"""Seconds a clean close waits for both peers to close their side before it closes anyway."""

_Way = Literal["upstream", "downstream"]
_Ending = Literal["reset", "close", "slow_close"]


@dataclass(frozen=True, kw_only=True)
class ProxyFault:
    """One fault of a :class:`FaultProxy` (built by its methods: :meth:`FaultProxy.latency`, ...).

    Attributes:
        kind: what the proxy does (``none``: relays faithfully).
        direction: which bytes it applies to (``slow_close``: always the whole connection).
        seconds: ``latency``: how long each chunk is held; ``slow_close``: how long the
            sockets are held open before they close.
        nbytes: ``reset`` and ``truncate``: how many more bytes are forwarded first;
            ``fragment``: bytes per write.
    """

    kind: FaultKind = "none"
    direction: Direction = "both"
    seconds: float = 0.0
    nbytes: int = 0

    def __post_init__(self) -> None:
        if self.kind != "none" and self.kind not in FAULT_KINDS:
            raise ValueError(f"kind must be 'none' or one of {', '.join(FAULT_KINDS)}, got {self.kind!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")
        if not (isinstance(self.seconds, int | float) and math.isfinite(self.seconds) and self.seconds >= 0):
            raise ValueError(f"seconds must be a finite number >= 0, got {self.seconds!r}")
        if isinstance(self.nbytes, bool) or not isinstance(self.nbytes, int) or self.nbytes < 0:
            raise ValueError(f"nbytes must be an integer >= 0, got {self.nbytes!r}")
        if self.kind == "fragment" and self.nbytes < 1:
            raise ValueError("a fragment fault forwards at least 1 byte per write (nbytes >= 1)")

    def applies_to(self, way: _Way) -> bool:
        """Whether this fault acts on the bytes going ``way``."""
        return self.kind not in ("none", "slow_close") and self.direction in (way, "both")

    def __str__(self) -> str:
        if self.kind == "none":
            return "none"
        if self.kind == "slow_close":
            return f"slow_close {self.seconds:g}s"
        detail = {
            "latency": f" {self.seconds:g}s",
            "reset": f" after {self.nbytes}B",
            "truncate": f" after {self.nbytes}B",
            "fragment": f" {self.nbytes}B/write",
        }.get(self.kind, "")
        return f"{self.kind}{detail} ({self.direction})"


_NO_FAULT = ProxyFault()


@dataclass(frozen=True, kw_only=True)
class FaultProxyStatistics:
    """What a :class:`FaultProxy` has done so far (see :meth:`FaultProxy.statistics`).

    Attributes:
        connections: connections accepted since it started.
        live: connections open now.
        broken: open connections an earlier fault still breaks (a black hole, a slow close).
        injected: per fault kind, how many connections it acted on (once per connection each
            time the fault is set: a chunk held, bytes dropped, a reset, ...).
        fault: the fault set now.
    """

    connections: int
    live: int
    broken: int
    injected: dict[str, int] = field(default_factory=dict)
    fault: ProxyFault = _NO_FAULT


class _Connection:
    """One relayed connection: its two sockets and what the faults did to it."""

    __slots__ = ("client", "dead", "ending", "generation", "hold", "scope", "upstream", "used")

    def __init__(self, client: trio.SocketStream) -> None:
        self.client = client
        self.upstream: trio.SocketStream | None = None
        self.scope = trio.CancelScope()
        """Around the relaying: cancelled to end it (a reset, a close, a slow close)."""
        self.ending: _Ending | None = None
        self.hold = 0.0
        self.dead: set[_Way] = set()
        """Directions a black hole dropped bytes of: their stream is broken for good."""
        self.generation = -1
        """The fault setting last seen acting on this connection."""
        self.used = 0
        """Bytes forwarded since that setting first reached it (``reset``, ``truncate``)."""

    @property
    def broken(self) -> bool:
        return bool(self.dead) or self.ending == "slow_close"

    def end(self, how: _Ending, hold: float = 0.0) -> bool:
        """Stop relaying and end the connection ``how`` (the first ending wins); whether this
        one did."""
        if self.ending is not None:
            return False
        self.ending = how
        self.hold = hold
        self.scope.cancel()
        return True

    def streams(self) -> list[trio.SocketStream]:
        return [self.client] if self.upstream is None else [self.client, self.upstream]

    def close_now(self) -> None:
        for stream in self.streams():
            stream.socket.close()

    def abort(self) -> None:
        """Close both sockets with a reset (``SO_LINGER`` 0: no FIN, pending data dropped)."""
        for stream in self.streams():
            sock = stream.socket
            try:
                sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass  # closed already
            sock.close()


class FaultProxy:
    """A TCP proxy on ``127.0.0.1`` to ``upstream_host:upstream_port`` that injects faults.

    Run it with ``async with FaultProxy(port) as proxy`` or ``await nursery.start(proxy.serve)``
    (it serves once). Switch its fault at any time with :meth:`latency`, :meth:`blackhole`,
    :meth:`reset_after`, :meth:`slow_close`, :meth:`fragment`, :meth:`truncate_after` (or
    :meth:`set_fault`), and clear it with :meth:`heal`. See :mod:`trio_mcp.testing.proxy`.

    Args:
        upstream_port: the port of the server to relay to.
        upstream_host: its host.
        port: the port to listen on (``0``: a free one, see :attr:`port`).
        chunk_size: the most bytes read from a socket at once.
        close_timeout: seconds a clean close waits for the peers to close their side.
    """

    def __init__(
        self,
        upstream_port: int,
        upstream_host: str = "127.0.0.1",
        *,
        port: int = 0,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        if not close_timeout >= 0:
            raise ValueError("close_timeout must be >= 0 seconds")
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self._requested_port = port
        self._port: int | None = None
        self._chunk_size = chunk_size
        self._close_timeout = close_timeout
        self._fault = _NO_FAULT
        self._generation = 0
        self._live: set[_Connection] = set()
        self._connections = 0
        self._injected: Counter[str] = Counter()
        self._changed = trio.Event()
        self._started = False
        self._exit_stack: AsyncExitStack | None = None

    # -- running -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port it listens on. Raises ``RuntimeError`` before it has started."""
        if self._port is None:
            raise RuntimeError("the proxy is not listening yet")
        return self._port

    def url(self, path: str = "/") -> str:
        """``http://127.0.0.1:<port><path>``."""
        return f"http://127.0.0.1:{self.port}{path}"

    async def serve(self, *, task_status: trio.TaskStatus[FaultProxy] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and relay until cancelled; ``task_status.started(self)`` once it listens.
        Every socket it opened is closed when it returns.

        Raises:
            RuntimeError: it was started before.
            OSError: the port cannot be listened on.
        """
        if self._started:
            raise RuntimeError("a FaultProxy serves once")
        self._started = True
        listeners = await trio.open_tcp_listeners(self._requested_port, host="127.0.0.1")
        try:
            self._port = listeners[0].socket.getsockname()[1]
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    partial(trio.serve_listeners, self._relay_connection, listeners, handler_nursery=nursery)
                )
                task_status.started(self)
        finally:
            for listener in listeners:
                listener.socket.close()

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[Self]:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.serve)
            try:
                yield self
            finally:
                nursery.cancel_scope.cancel()

    async def __aenter__(self) -> Self:
        # The nursery is entered and left through one exit stack, in the task running the
        # ``async with`` (a nursery must be exited by the task that entered it).
        stack = AsyncExitStack()
        proxy = await stack.enter_async_context(self._running())
        self._exit_stack = stack
        return proxy

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack, self._exit_stack = self._exit_stack, None
        assert stack is not None, "__aexit__ without __aenter__"
        return await stack.__aexit__(exc_type, exc, tb)

    # -- faults --------------------------------------------------------------------------------

    @property
    def fault(self) -> ProxyFault:
        """The fault set now."""
        return self._fault

    def set_fault(self, fault: ProxyFault) -> None:
        """Switch to ``fault`` (``ProxyFault()``: none). It applies to the connections open now
        and to later ones; a ``slow_close`` begins on every open connection at once."""
        self._fault = fault
        self._generation += 1
        if fault.kind == "slow_close":
            for connection in list(self._live):
                if connection.end("slow_close", fault.seconds):
                    self._injected["slow_close"] += 1
        self._notify()

    def latency(self, seconds: float, *, direction: Direction = "both") -> None:
        """Hold each chunk going ``direction`` ``seconds`` before forwarding it."""
        self.set_fault(ProxyFault(kind="latency", direction=direction, seconds=seconds))

    def blackhole(self, *, direction: Direction = "both") -> None:
        """Read and discard what goes ``direction``: nothing is forwarded and nothing answered."""
        self.set_fault(ProxyFault(kind="blackhole", direction=direction))

    def reset_after(self, nbytes: int, *, direction: Direction = "both") -> None:
        """Forward ``nbytes`` more bytes going ``direction`` on each connection, then abort both
        sides of it with a reset."""
        self.set_fault(ProxyFault(kind="reset", direction=direction, nbytes=nbytes))

    def slow_close(self, hold: float) -> None:
        """Stop forwarding on every connection, hold its sockets open ``hold`` seconds, then
        close both sides cleanly (connections opened meanwhile too)."""
        self.set_fault(ProxyFault(kind="slow_close", seconds=hold))

    def fragment(self, *, direction: Direction = "both", size: int = 1) -> None:
        """Forward what goes ``direction`` ``size`` bytes per write."""
        self.set_fault(ProxyFault(kind="fragment", direction=direction, nbytes=size))

    def truncate_after(self, nbytes: int, *, direction: Direction = "downstream") -> None:
        """Forward ``nbytes`` more bytes going ``direction`` on each connection (by default of
        the server's answers), then close both sides cleanly."""
        self.set_fault(ProxyFault(kind="truncate", direction=direction, nbytes=nbytes))

    def heal(self) -> None:
        """Clear the fault. Connections it already broke stay broken (see :meth:`statistics`)."""
        self.set_fault(_NO_FAULT)

    # -- observations --------------------------------------------------------------------------

    def statistics(self) -> FaultProxyStatistics:
        """Connections so far and now, and the faults injected."""
        return FaultProxyStatistics(
            connections=self._connections,
            live=len(self._live),
            broken=sum(1 for c in self._live if c.broken),
            injected=dict(self._injected),
            fault=self._fault,
        )

    def _settled(self) -> bool:
        return self._fault.kind == "none" and not any(c.broken for c in self._live)

    async def wait_settled(self) -> None:
        """Wait until no fault is set and no open connection is still broken by an earlier
        one (a black-holed connection ends when a peer closes it)."""
        while not self._settled():
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def __repr__(self) -> str:
        where = f"127.0.0.1:{self._port}" if self._port is not None else "not listening"
        return (
            f"<FaultProxy {where} -> {self.upstream_host}:{self.upstream_port} fault={self._fault} "
            f"live={len(self._live)}>"
        )

    # -- relaying ------------------------------------------------------------------------------

    async def _relay_connection(self, client: trio.SocketStream) -> None:
        connection = _Connection(client)
        self._connections += 1
        self._live.add(connection)
        try:
            fault = self._fault
            if fault.kind == "slow_close":
                connection.end("slow_close", fault.seconds)
                self._injected["slow_close"] += 1
            elif fault.kind == "blackhole" and fault.applies_to("upstream"):
                # Never connected: the server sees nothing of this connection.
                connection.dead.add("upstream")
                self._injected["blackhole"] += 1
            else:
                try:
                    connection.upstream = await trio.open_tcp_stream(self.upstream_host, self.upstream_port)
                except OSError:
                    connection.end("reset")  # the server refused: so does the proxy
            with connection.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, connection, "upstream")
                    if connection.upstream is not None:
                        nursery.start_soon(self._pump, connection, "downstream")
            await self._end(connection)
        finally:
            connection.close_now()
            self._live.discard(connection)
            self._notify()

    async def _end(self, connection: _Connection) -> None:
        """Close a connection whose relaying has stopped, as its ending says."""
        if connection.ending == "reset":
            connection.abort()
            return
        if connection.ending == "slow_close":
            await trio.sleep(connection.hold)
        if connection.ending is not None:
            with trio.move_on_after(self._close_timeout):
                async with trio.open_nursery() as nursery:
                    for stream in connection.streams():
                        nursery.start_soon(self._close_cleanly, stream)
        connection.close_now()

    async def _close_cleanly(self, stream: trio.SocketStream) -> None:
        """Send an end of stream, then read (and drop) until the peer closes too: closing a
        socket with unread bytes would send a reset instead."""
        try:
            await stream.send_eof()
            while await stream.receive_some(self._chunk_size):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _pump(self, connection: _Connection, way: _Way) -> None:
        """Relay the bytes going ``way`` until an end of stream, applying the fault."""
        if way == "upstream":
            source, sink = connection.client, connection.upstream
        else:
            assert connection.upstream is not None
            source, sink = connection.upstream, connection.client
        while True:
            try:
                data = await source.receive_some(self._chunk_size)
            except trio.BrokenResourceError:
                connection.end("reset")  # reset by that peer: so is the other
                return
            except trio.ClosedResourceError:
                return
            fault = self._fault
            if not data:
                swallowed = way in connection.dead or (fault.kind == "blackhole" and fault.applies_to(way))
                if sink is not None and not swallowed:
                    try:
                        await sink.send_eof()
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                return
            if sink is None or way in connection.dead:
                continue  # a black hole's: dropped
            if not fault.applies_to(way):
                if not await self._send(connection, sink, data):
                    return
                continue
            first = connection.generation != self._generation
            if first:
                connection.generation = self._generation
                connection.used = 0
            kind = fault.kind
            if kind == "blackhole":
                connection.dead.add(way)
                if first:
                    self._injected[kind] += 1
            elif kind == "latency":
                if first:
                    self._injected[kind] += 1
                await trio.sleep(fault.seconds)
                if not await self._send(connection, sink, data):
                    return
            elif kind == "fragment":
                if first:
                    self._injected[kind] += 1
                for start in range(0, len(data), fault.nbytes):
                    if not await self._send(connection, sink, data[start : start + fault.nbytes]):
                        return
            else:  # reset, truncate: forward what the budget allows, then end the connection
                room = fault.nbytes - connection.used
                if len(data) < room:
                    connection.used += len(data)
                    if not await self._send(connection, sink, data):
                        return
                    continue
                if room > 0 and not await self._send(connection, sink, data[:room]):
                    return
                connection.used = fault.nbytes
                if connection.end("reset" if kind == "reset" else "close"):
                    self._injected[kind] += 1
                return

    async def _send(self, connection: _Connection, sink: trio.SocketStream, data: bytes) -> bool:
        """Forward ``data``; whether the connection goes on."""
        try:
            await sink.send_all(data)
        except trio.BrokenResourceError:
            connection.end("reset")
            return False
        except trio.ClosedResourceError:
            return False
        return True
