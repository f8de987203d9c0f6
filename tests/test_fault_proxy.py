"""``trio_mcp.testing.FaultProxy``: each fault seen byte by byte through the proxy, against a
trio upstream on loopback that records what it receives. Real sockets and clock (the waits are
bounded generously; only lower bounds of time are asserted)."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from trio_mcp.testing import Baseline, FaultProxy
from trio_mcp.testing.proxy import FaultProxyStatistics, ProxyFault

pytestmark = pytest.mark.integration

WITHIN = 10.0
"""A bound on every wait: never reached unless something is broken."""

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + bytes(range(250)) * 4


class Upstream:
    """A TCP server recording, per connection, what it received (each read) and how it ended.

    ``mode``: ``"echo"`` sends every chunk back (and closes after ``bye``); ``"http"`` answers
    :data:`ANSWER` to every request (bytes up to a blank line); ``"silent"`` answers nothing.
    """

    def __init__(self, mode: str = "echo") -> None:
        self.mode = mode
        self.reads: list[list[bytes]] = []
        self.endings: list[str | None] = []
        self.port = 0
        self._changed = trio.Event()

    def received(self, index: int = 0) -> bytes:
        """What connection ``index`` received so far (nothing before it is accepted)."""
        return b"".join(self.reads[index]) if index < len(self.reads) else b""

    async def wait(self, predicate: object) -> None:
        assert callable(predicate)
        with trio.fail_after(WITHIN):
            while not predicate():
                await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _handle(self, stream: trio.SocketStream) -> None:
        index = len(self.reads)
        self.reads.append([])
        self.endings.append(None)
        self._notify()
        pending = b""
        try:
            while data := await stream.receive_some(65536):
                self.reads[index].append(data)
                self._notify()
                if self.mode == "echo":
                    await stream.send_all(data)
                    if data.endswith(b"bye"):
                        break
                elif self.mode == "http":
                    pending += data
                    while b"\r\n\r\n" in pending:
                        _, pending = pending.split(b"\r\n\r\n", 1)
                        await stream.send_all(ANSWER)
            self.endings[index] = "eof"
        except trio.BrokenResourceError:
            self.endings[index] = "reset"
        self._notify()

    async def serve(
        self, *, task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        await trio.serve_listeners(self._handle, listeners, task_status=task_status)


@asynccontextmanager
async def relay(mode: str = "echo") -> AsyncIterator[tuple[Upstream, FaultProxy]]:
    """An upstream and a proxy to it, both stopped on exit."""
    upstream = Upstream(mode)
    async with trio.open_nursery() as nursery:
        await nursery.start(upstream.serve)
        async with FaultProxy(upstream.port) as proxy:
            yield upstream, proxy
        nursery.cancel_scope.cancel()


async def connect(proxy: FaultProxy) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", proxy.port)


async def receive_exactly(stream: trio.SocketStream, n: int) -> bytes:
    data = b""
    with trio.fail_after(WITHIN):
        while len(data) < n:
            chunk = await stream.receive_some(n - len(data))
            assert chunk, f"end of stream after {len(data)} of {n} bytes"
            data += chunk
    return data


async def receive_until_end(stream: trio.SocketStream) -> tuple[bytes, str]:
    """Everything until the stream ends, and how it ended (``eof`` or ``reset``)."""
    data = b""
    with trio.fail_after(WITHIN):
        try:
            while chunk := await stream.receive_some(65536):
                data += chunk
        except trio.BrokenResourceError:
            return data, "reset"
    return data, "eof"


async def nothing_arrives(stream: trio.SocketStream, seconds: float = 0.3) -> bool:
    """Whether nothing (no byte, no end of stream) arrives on ``stream`` for ``seconds`` (a
    silence can only be observed over time)."""
    with trio.move_on_after(seconds):
        await stream.receive_some(1)
        return False
    return True


async def test_relays_both_ways_and_counts_connections() -> None:
    payload = bytes(range(256)) * 1000  # several chunks each way
    async with relay() as (upstream, proxy):
        assert proxy.url("/mcp") == f"http://127.0.0.1:{proxy.port}/mcp"
        async with await connect(proxy) as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.send_all, payload)
                assert await receive_exactly(client, len(payload)) == payload
            await client.send_eof()
            assert await receive_until_end(client) == (b"", "eof")
        await upstream.wait(lambda: upstream.endings == ["eof"])
        assert upstream.received() == payload
        with trio.fail_after(WITHIN):
            await proxy.wait_settled()
        stats = proxy.statistics()
        assert stats == FaultProxyStatistics(connections=1, live=0, broken=0, injected={}, fault=ProxyFault())


async def test_latency_holds_each_chunk_in_its_direction() -> None:
    async with relay() as (_, proxy), await connect(proxy) as client:
        await client.send_all(b"ping")
        assert await receive_exactly(client, 4) == b"ping"
        # Switched on a live connection: from the next chunk.
        proxy.latency(0.3, direction="upstream")
        started = trio.current_time()
        await client.send_all(b"slow")
        assert await receive_exactly(client, 4) == b"slow"
        assert trio.current_time() - started >= 0.3
        proxy.latency(0.2)  # both ways: held twice per round trip
        started = trio.current_time()
        await client.send_all(b"both")
        assert await receive_exactly(client, 4) == b"both"
        assert trio.current_time() - started >= 0.4
        assert proxy.statistics().injected == {"latency": 2}  # one connection, set twice


async def test_blackhole_forwards_nothing_and_answers_nothing() -> None:
    async with relay() as (upstream, proxy):
        proxy.blackhole()
        async with await connect(proxy) as client:
            await client.send_all(b"hello?")
            assert await nothing_arrives(client)
            assert upstream.reads == []  # never connected upstream
            assert proxy.statistics().broken == 1
            proxy.heal()
            # What a black hole swallowed is gone: the connection stays one.
            await client.send_all(b"still there?")
            assert await nothing_arrives(client)
            assert upstream.reads == []
            async with await connect(proxy) as fresh:
                await fresh.send_all(b"new")
                assert await receive_exactly(fresh, 3) == b"new"
            assert not proxy._settled()
        with trio.fail_after(WITHIN):
            await proxy.wait_settled()  # the client closed it
        assert proxy.statistics().injected == {"blackhole": 1}


async def test_blackhole_downstream_lets_requests_through_and_drops_answers() -> None:
    async with relay() as (upstream, proxy):
        async with await connect(proxy) as client:
            proxy.blackhole(direction="downstream")
            await client.send_all(b"charge 5")
            await upstream.wait(lambda: upstream.received() == b"charge 5")
            assert await nothing_arrives(client)  # the echo was dropped
            await client.send_all(b"bye")  # the server closes its side
            await upstream.wait(lambda: upstream.endings == ["eof"])
            # Its end of stream was swallowed too: the client hears nothing, and waits.
            assert await nothing_arrives(client)
            assert proxy.statistics().broken == 1
            proxy.heal()
            assert await nothing_arrives(client)  # broken for good
        with trio.fail_after(WITHIN):
            await proxy.wait_settled()  # the client closed it
        assert proxy.statistics().live == 0


async def test_reset_after_n_bytes_upstream() -> None:
    payload = bytes(range(100))
    async with relay("silent") as (upstream, proxy):
        proxy.reset_after(10, direction="upstream")
        async with await connect(proxy) as client:
            await client.send_all(payload)
            assert await receive_until_end(client) == (b"", "reset")
        await upstream.wait(lambda: upstream.endings == ["reset"])
        assert upstream.received() == payload[:10]
        assert proxy.statistics().injected == {"reset": 1}


async def test_reset_after_n_bytes_of_an_answer() -> None:
    async with relay("http") as (upstream, proxy), await connect(proxy) as client:
        await client.send_all(b"GET / HTTP/1.1\r\n\r\n")
        assert await receive_exactly(client, len(ANSWER)) == ANSWER
        # Set on the live connection: the next answer is cut after 50 bytes by a reset.
        proxy.reset_after(50, direction="downstream")
        await client.send_all(b"GET / HTTP/1.1\r\n\r\n")
        assert await receive_until_end(client) == (ANSWER[:50], "reset")
        await upstream.wait(lambda: upstream.endings == ["reset"])


async def test_reset_after_zero_bytes_forwards_nothing() -> None:
    async with relay("http") as (upstream, proxy), await connect(proxy) as client:
        proxy.reset_after(0, direction="downstream")
        await client.send_all(b"GET / HTTP/1.1\r\n\r\n")
        assert await receive_until_end(client) == (b"", "reset")
        # The request went through: the server answered, and the answer was reset.
        assert upstream.received() == b"GET / HTTP/1.1\r\n\r\n"


async def test_truncate_forwards_the_first_bytes_of_an_answer_then_closes_cleanly() -> None:
    async with relay("http") as (upstream, proxy):
        proxy.truncate_after(100)
        async with await connect(proxy) as client:
            await client.send_all(b"GET / HTTP/1.1\r\n\r\n")
            assert await receive_until_end(client) == (ANSWER[:100], "eof")
        await upstream.wait(lambda: upstream.endings == ["eof"])
        assert proxy.statistics().injected == {"truncate": 1}


async def test_truncate_upstream_cuts_a_request() -> None:
    async with relay("http") as (upstream, proxy):
        proxy.truncate_after(5, direction="upstream")
        async with await connect(proxy) as client:
            await client.send_all(b"GET / HTTP/1.1\r\n\r\n")
            assert await receive_until_end(client) == (b"", "eof")
        await upstream.wait(lambda: upstream.endings == ["eof"])
        assert upstream.received() == b"GET /"


async def test_slow_close_holds_the_sockets_then_closes_cleanly() -> None:
    async with relay() as (upstream, proxy):
        async with await connect(proxy) as client:
            await client.send_all(b"a")
            assert await receive_exactly(client, 1) == b"a"
            started = trio.current_time()
            proxy.slow_close(0.5)
            assert proxy.statistics().broken == 1
            await client.send_all(b"b")  # held, never forwarded
            assert await receive_until_end(client) == (b"", "eof")
            assert trio.current_time() - started >= 0.5
        await upstream.wait(lambda: upstream.endings == ["eof"])
        assert upstream.received() == b"a"
        # A connection opened during the slow close is held and closed the same way.
        async with await connect(proxy) as late:
            started = trio.current_time()
            assert await receive_until_end(late) == (b"", "eof")
            assert trio.current_time() - started >= 0.5
        assert len(upstream.reads) == 1
        proxy.heal()
        with trio.fail_after(WITHIN):
            await proxy.wait_settled()
        assert proxy.statistics().injected == {"slow_close": 2}


async def test_fragment_forwards_one_byte_per_write() -> None:
    payload = bytes(range(200))
    async with relay("silent") as (upstream, proxy), await connect(proxy) as client:
        proxy.fragment(direction="upstream")
        await client.send_all(payload)
        await upstream.wait(lambda: len(upstream.received()) == len(payload))
        assert upstream.received() == payload
        # One byte per write (and per segment: TCP_NODELAY): the reader sees many small reads,
        # where one write of the whole payload would have arrived as one.
        assert len(upstream.reads[0]) >= 10, [len(r) for r in upstream.reads[0]]
        assert proxy.statistics().injected == {"fragment": 1}


async def test_fragment_of_a_given_size_both_ways() -> None:
    async with relay() as (_, proxy), await connect(proxy) as client:
        proxy.fragment(size=3)
        await client.send_all(b"0123456789")
        assert await receive_exactly(client, 10) == b"0123456789"


async def test_a_refused_upstream_is_a_reset_and_a_peer_reset_is_passed_on(nursery: trio.Nursery) -> None:
    upstream = Upstream("silent")
    await nursery.start(upstream.serve)
    closed = trio.socket.socket()
    await closed.bind(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()  # nothing listens there
    refused = await nursery.start(FaultProxy(refused_port).serve)
    async with await connect(refused) as client:
        assert await receive_until_end(client) == (b"", "reset")

    proxy = await nursery.start(FaultProxy(upstream.port).serve)
    client = await connect(proxy)
    await client.send_all(b"x")
    await upstream.wait(lambda: upstream.received() == b"x")
    client.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.socket.close()  # with a reset
    await upstream.wait(lambda: upstream.endings == ["reset"])


async def test_every_socket_is_closed_when_the_proxy_stops() -> None:
    baseline = Baseline.capture()
    upstream = Upstream()
    async with trio.open_nursery() as nursery:
        await nursery.start(upstream.serve)
        clients = []
        async with FaultProxy(upstream.port) as proxy:
            for fault in (ProxyFault(), ProxyFault(kind="latency", seconds=30), ProxyFault(kind="blackhole")):
                proxy.set_fault(fault)
                client = await connect(proxy)
                clients.append(client)
                await client.send_all(b"x")
            await upstream.wait(lambda: len(upstream.reads) == 2)
            proxy.slow_close(30)
            clients.append(await connect(proxy))
            assert proxy.statistics().live == 4
            assert Baseline.capture().sockets > baseline.sockets
        # The proxy closed its ends: every client hears it at once.
        for client in clients:
            data, _ = await receive_until_end(client)
            assert data in (b"", b"x")
            await client.aclose()
        nursery.cancel_scope.cancel()
    assert Baseline.capture().differences(baseline) == []


async def test_statistics_repr_and_faults() -> None:
    proxy = FaultProxy(1)
    with pytest.raises(RuntimeError):
        proxy.port  # noqa: B018
    assert "not listening" in repr(proxy)
    proxy.truncate_after(7)
    assert proxy.fault == ProxyFault(kind="truncate", direction="downstream", nbytes=7)
    assert str(proxy.fault) == "truncate after 7B (downstream)"
    assert str(ProxyFault(kind="slow_close", seconds=2)) == "slow_close 2s"
    assert str(ProxyFault(kind="latency", seconds=0.5, direction="upstream")) == "latency 0.5s (upstream)"
    assert str(ProxyFault(kind="fragment", nbytes=1)) == "fragment 1B/write (both)"
    assert str(ProxyFault(kind="blackhole")) == "blackhole (both)"
    proxy.heal()
    assert str(proxy.fault) == "none"
    async with trio.open_nursery() as nursery:
        assert await nursery.start(proxy.serve) is proxy
        assert repr(proxy) == f"<FaultProxy 127.0.0.1:{proxy.port} -> 127.0.0.1:1 fault=none live=0>"
        with pytest.raises(RuntimeError, match="serves once"):
            await proxy.serve()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "fault",
    [
        partial(ProxyFault, kind="bogus"),
        partial(ProxyFault, direction="sideways"),
        partial(ProxyFault, kind="latency", seconds=-1),
        partial(ProxyFault, kind="latency", seconds=float("inf")),
        partial(ProxyFault, kind="reset", nbytes=-1),
        partial(ProxyFault, kind="reset", nbytes=True),
        partial(ProxyFault, kind="fragment", nbytes=0),
    ],
)
def test_invalid_faults_are_refused(fault: partial[ProxyFault]) -> None:
    with pytest.raises(ValueError):
        fault()


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        FaultProxy(1, chunk_size=0)
    with pytest.raises(ValueError):
        FaultProxy(1, close_timeout=-1)
