"""Probe rounds: one task sends the probes of an origin's plain-HTTP servers, each on a
keep-alive socket of its own, and reads the answers a round later. A quiet success is told to
the server without waking it; anything else is escalated, and checked by the server as its own
probe would have been (real sockets, real clock; the server side is a scripted HTTP/1.1 server
so that every answer and every dropped connection can be given on purpose)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
import trio
import trio.testing
from _http_script import OK, RESULT, Answer, ScriptedHttpServer, refused_url, serving
from mcp.shared.exceptions import MCPError
from test_http_probe import ANSWERS

from trio_mcp._errors import classify
from trio_mcp._transports import base, http, probe_rounds
from trio_mcp._transports.http1 import parse_answer
from trio_mcp._transports.http_probe import MessageRefusedError, PlainDiscoverProbe, SessionlessDispatcher
from trio_mcp._transports.probe_rounds import ROUND_BUSY_HANDSHAKES, ROUND_SECONDS, RoundEntry

INTERVAL = 0.05


class Told:
    """What the rounds told the server: quiet successes (``healthy`` returns :attr:`take`)."""

    def __init__(self, take: bool = True) -> None:
        self.take = take
        self.healthy: list[float] = []
        self._told = trio.Event()

    def __call__(self, now: float) -> bool:
        self.healthy.append(now)
        self._told.set()
        self._told = trio.Event()
        return self.take

    async def until(self, count: int) -> None:
        """Wait until told of ``count`` quiet successes in all."""
        while len(self.healthy) < count:
            await self._told.wait()


@asynccontextmanager
async def in_rounds(
    url: str,
    *,
    told: Callable[[float], bool] | None = None,
    skip: Callable[[float], bool] = lambda since: False,
    max_bytes: int = 1 << 20,
    timeout: float = 2.0,
    interval: float = INTERVAL,
) -> AsyncIterator[tuple[RoundEntry, base.Link, Any]]:
    """An entry probing ``url`` in its origin's rounds, enrolled; withdrawn and closed after."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            pool = http.HttpPool()
            pool.run_rounds_in(nursery)
            link = base.Link("web")
            parsed = httpx2.URL(url)
            host, port = parsed.host, parsed.port or 80
            probe = PlainDiscoverProbe(pool.probe_sockets(host, port), parsed, {}, link, max_bytes)
            rounds = probe.rounds = pool.probe_rounds(host, port)
            assert rounds is not None
            entry = RoundEntry(
                probe,
                lambda: "2026-07-28",
                origin=rounds,
                interval=interval,
                timeout=timeout,
                first_due=trio.current_time(),
                skip=skip,
                healthy=told or Told(),
            )
            rounds.enrol(entry)
            try:
                yield entry, link, rounds
            finally:
                entry.withdrawn = True
                await pool.aclose()
                nursery.cancel_scope.cancel()


async def healthy_and_learned(entry: RoundEntry, rounds: Any) -> None:
    """The first answer is escalated (nothing to compare it with); checked healthy, it is the
    answer to expect from then on."""
    escalation = await entry.escalated()
    await escalation.check()
    assert entry.template is not None
    rounds.enrol(entry)


@pytest.mark.parametrize(("answer", "raised"), ANSWERS)
async def test_an_escalated_answer_is_checked_as_the_probe_checks_it(
    answer: Answer, raised: tuple[int, str] | None
) -> None:
    """Whatever the answer (an event stream is not read by rounds: the server is sent a probe
    of its own), the check raises what the plain probe raises, and records the same status."""
    async with (
        serving(ScriptedHttpServer(answer=lambda connection, request: answer)) as server,
        in_rounds(server.url) as (entry, link, _),
    ):
        escalation = await entry.escalated()
        assert escalation.unframed == (answer[1] == "text/event-stream")
        if raised is None:
            await escalation.check()
        else:
            with pytest.raises(MCPError) as info:
                await escalation.check()
            assert (info.value.code, info.value.error.message) == raised
        assert link.http_status == (answer[0] if answer[0] >= 400 else None)
        assert not link.dead.is_set()


async def test_an_answer_like_the_last_healthy_one_is_a_quiet_success_on_one_socket() -> None:
    told = Told()
    async with (
        serving(ScriptedHttpServer()) as server,
        in_rounds(server.url, told=told) as (entry, _, rounds),
    ):
        await healthy_and_learned(entry, rounds)
        await told.until(4)
        sent, healthy = rounds.sent, len(told.healthy)
        assert not entry._escalated.is_set()  # nothing more for the server to do
        # The first answer was escalated, every later one a quiet success, but for the probe
        # of the round that may be under way now.
        assert sent - 1 - healthy in (0, 1), (sent, healthy)
        await server.wait_requests(sent)  # the server reads what was sent a moment later
        assert server.connections == 1
        ids = [sent["id"] for _, sent, _ in server.requests]
        assert len(set(ids)) == len(ids)  # each probe its own request id
        gaps = [b - a for a, b in zip(told.healthy, told.healthy[1:], strict=False)]
        assert all(INTERVAL / 2 <= gap <= 3 * INTERVAL for gap in gaps), gaps


async def test_a_quiet_success_the_server_does_not_take_is_escalated() -> None:
    """A server that is not quiet (it has something to report) gets the answer itself."""
    told = Told(take=False)
    async with (
        serving(ScriptedHttpServer()) as server,
        in_rounds(server.url, told=told) as (entry, _, rounds),
    ):
        await healthy_and_learned(entry, rounds)
        escalation = await entry.escalated()
        assert told.healthy and escalation.answer is not None
        await escalation.check()


async def test_an_answer_that_changed_is_escalated_and_then_expected() -> None:
    changed = RESULT.replace('["2026-07-28"]', '["2026-07-28"], "instructions": "new"')
    answers = {"now": OK}
    told = Told()
    server = ScriptedHttpServer(answer=lambda connection, request: answers["now"])
    async with serving(server), in_rounds(server.url, told=told) as (entry, _, rounds):
        await healthy_and_learned(entry, rounds)
        first = entry.template
        answers["now"] = (200, "application/json", changed)
        escalation = await entry.escalated()
        assert escalation.answer is not None and b"new" in escalation.answer[2]
        await escalation.check()
        assert entry.template != first
        rounds.enrol(entry)
        quiet = len(told.healthy)
        await told.until(quiet + 2)
        assert not entry._escalated.is_set()


async def test_a_keep_alive_socket_the_server_closed_is_replaced_without_a_failure() -> None:
    """The server drops the reused socket without answering (its keep-alive timeout): the
    request was not taken, so it goes out again at once on a new socket, quietly."""
    told = Told()
    server = ScriptedHttpServer(answer=lambda connection, request: OK if len(server.requests) != 2 else None)
    async with serving(server), in_rounds(server.url, told=told) as (entry, link, rounds):
        await healthy_and_learned(entry, rounds)
        await told.until(2)
        assert [connection for connection, _, _ in server.requests][:3] == [0, 0, 1]
        assert not entry._escalated.is_set() and not link.dead.is_set()


async def test_a_fresh_socket_dropped_without_an_answer_is_a_transport_error() -> None:
    server = ScriptedHttpServer(answer=lambda connection, request: None)
    async with serving(server), in_rounds(server.url) as (entry, link, _):
        escalation = await entry.escalated()
        with pytest.raises(httpx2.TransportError):
            await escalation.check()
        assert server.connections == 1
        assert link.exit_reason is not None and link.exit_reason[0] == "transport_error"


async def test_a_refused_connection_is_a_connect_error() -> None:
    async with in_rounds(await refused_url()) as (entry, link, _):
        escalation = await entry.escalated()
        with pytest.raises(httpx2.ConnectError) as info:
            await escalation.check()
        assert link.exit_reason is not None
        assert link.exit_reason[0] == classify(info.value).category


async def test_a_probe_without_an_answer_times_out() -> None:
    server = ScriptedHttpServer(gate=trio.Event())
    async with serving(server), in_rounds(server.url, timeout=0.2) as (entry, link, _):
        started = trio.current_time()
        escalation = await entry.escalated()
        assert 0.2 <= trio.current_time() - started <= 0.5
        with pytest.raises(trio.TooSlowError):
            await escalation.check()
        assert not link.dead.is_set()  # a slow server, not a dead connection


async def test_an_answer_over_the_bound_is_refused() -> None:
    async with (
        serving(ScriptedHttpServer()) as server,
        in_rounds(server.url, max_bytes=16) as (entry, link, _),
    ):
        escalation = await entry.escalated()
        with pytest.raises(MessageRefusedError):
            await escalation.check()
        assert link.exit_reason is not None and link.exit_reason[0] == "protocol_error"


async def test_a_probe_that_can_wait_is_not_sent() -> None:
    """Something else proved the server healthy: the probe is skipped, and the check time moves."""
    async with (
        serving(ScriptedHttpServer()) as server,
        in_rounds(server.url, skip=lambda since: True) as (entry, _, rounds),
    ):
        start = entry.checked_at
        await trio.sleep(4 * INTERVAL)
        assert server.requests == [] and rounds.sent == 0
        assert entry.checked_at > start


async def test_a_probe_skipped_is_looked_at_once_a_round_whatever_its_interval() -> None:
    """An interval shorter than a round does not make a round spin over the same probe."""
    looked: list[float] = []

    def skip(since: float) -> bool:
        looked.append(since)
        return True

    async with (
        serving(ScriptedHttpServer()) as server,
        in_rounds(server.url, skip=skip, interval=ROUND_SECONDS / 100) as _,
    ):
        await trio.sleep(20 * ROUND_SECONDS)
    assert 5 <= len(looked) <= 25


async def test_a_withdrawn_entry_is_probed_no_more() -> None:
    told = Told()
    async with (
        serving(ScriptedHttpServer()) as server,
        in_rounds(server.url, told=told) as (entry, _, rounds),
    ):
        await healthy_and_learned(entry, rounds)
        await told.until(1)
        entry.withdrawn = True
        await trio.sleep(2 * INTERVAL)
        sent = len(server.requests)
        await trio.sleep(4 * INTERVAL)
        assert len(server.requests) == sent


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (HEAD + b"{}", (200, b"{}", True)),
        (HEAD + b"{", None),  # not all there yet
        (HEAD[:20], None),
        (HEAD.replace(b"OK\r\n", b"OK\r\nConnection: close\r\n") + b"{}", (200, b"{}", False)),
        (HEAD.replace(b"HTTP/1.1", b"HTTP/1.0") + b"{}", (200, b"{}", False)),
        (HEAD + b"{}HTTP", (200, b"{}", False)),  # more than asked for: not reused
        (b"HTTP/1.1 204 No Content\r\n\r\n", (204, b"", True)),
    ],
)
def test_parse_answer(data: bytes, expected: tuple[int, bytes, bool] | None) -> None:
    parsed = parse_answer(data, 1024)
    if expected is None:
        assert parsed is None
    else:
        assert parsed is not None
        status, headers, body, reusable = parsed
        assert (status, body, reusable) == expected
        assert (b"content-type", b"application/json") in headers or status == 204


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"SSH-2.0\r\n\r\n", "did not answer with HTTP/1.1"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", "malformed Content-Length"),
        (b"HTTP/1.1 200 OK\r\n" + b"x: y\r\n" * 20000, "head is too long"),
    ],
)
def test_parse_answer_refuses_what_is_not_http(data: bytes, error: str) -> None:
    with pytest.raises(httpx2.RemoteProtocolError, match=error):
        parse_answer(data, 1024)


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
    ],
)
def test_answers_rounds_cannot_read_are_unframed(head: bytes) -> None:
    from trio_mcp._transports.http1 import Unframed

    with pytest.raises(Unframed):
        parse_answer(head, 1024)


async def test_probes_wait_while_many_handshakes_to_the_origin_are_under_way() -> None:
    """A fleet coming up: the origin's capacity goes to the servers not up yet; the probes of
    the ones that are go out once the handshakes are done."""
    handshaking = {"now": 0}
    told = Told()
    async with (
        serving(ScriptedHttpServer()) as server,
        in_rounds(server.url, told=told) as (entry, _, rounds),
    ):
        rounds.handshaking = lambda: handshaking["now"]
        await healthy_and_learned(entry, rounds)
        await told.until(1)
        handshaking["now"] = ROUND_BUSY_HANDSHAKES
        await trio.sleep(2 * INTERVAL)  # a probe already under way ends
        sent = len(server.requests)
        await trio.sleep(6 * INTERVAL)
        assert len(server.requests) == sent
        handshaking["now"] = ROUND_BUSY_HANDSHAKES - 1
        quiet = len(told.healthy)
        await told.until(quiet + 2)


async def test_probes_wait_for_handshakes_for_a_bounded_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe_rounds, "ROUND_DEFER_SECONDS", 4 * INTERVAL)
    told = Told()
    async with (
        serving(ScriptedHttpServer()) as server,
        in_rounds(server.url, told=told) as (entry, _, rounds),
    ):
        await healthy_and_learned(entry, rounds)
        rounds.handshaking = lambda: ROUND_BUSY_HANDSHAKES  # and never fewer
        started = trio.current_time()
        quiet = len(told.healthy)
        await told.until(quiet + 3)
        assert trio.current_time() - started >= 4 * INTERVAL


@asynccontextmanager
async def gated_dispatcher() -> AsyncIterator[
    tuple[ScriptedHttpServer, trio.Event, Any, SessionlessDispatcher]
]:
    """A sessionless dispatcher to a scripted server whose answers wait for the gate: the
    server, the gate, the origin's sockets and the dispatcher."""
    gate = trio.Event()
    server = ScriptedHttpServer(gate=gate)
    async with serving(server):
        pool = http.HttpPool()
        sockets = pool.probe_sockets(server.host, server.port)
        yield (
            server,
            gate,
            sockets,
            SessionlessDispatcher(sockets, httpx2.URL(server.url), {}, base.Link("web")),
        )
        await pool.aclose()


async def test_the_requests_of_a_handshake_are_counted_while_under_way() -> None:
    """What the rounds read to know that the origin is handshaking."""
    async with gated_dispatcher() as (server, gate, sockets, dispatcher):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dispatcher.send_raw_request, "server/discover", None)
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert len(server.requests) == 1 and sockets.handshaking == 1
            gate.set()
        assert sockets.handshaking == 0


async def test_requests_once_the_connection_is_up_take_a_probe_turn_and_are_not_counted() -> None:
    """A catalog listed again by a connection that is up holds back none of the origin's
    probes as a handshake would: it waits for one of the probes' turns instead."""
    async with gated_dispatcher() as (server, gate, sockets, dispatcher):
        dispatcher.handshaking = False
        free = sockets.turns.value
        for _ in range(free):  # every turn taken: the request waits for one
            sockets.turns.acquire_nowait()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dispatcher.send_raw_request, "server/discover", None)
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert server.requests == [] and sockets.handshaking == 0
            sockets.turns.release()
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert len(server.requests) == 1 and sockets.handshaking == 0 and sockets.turns.value == 0
            gate.set()
        assert sockets.turns.value == 1


async def test_one_task_probes_every_origin_and_a_slow_one_holds_up_no_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two origins share the rounds: one whose connects hang and whose answers never come, one
    that answers. The second is probed quietly all along; the first's probes time out."""
    slow, fast = ScriptedHttpServer(gate=trio.Event()), ScriptedHttpServer()
    connect = probe_rounds.RoundOrigin.connect

    async def hanging_connect(self: probe_rounds.RoundOrigin, timeout: float) -> Any:
        if self.port == slow.port and self.sent:  # its first socket connects, then none does
            await trio.sleep(timeout)
            raise httpx2.ConnectTimeout("connecting timed out")
        return await connect(self, timeout)

    monkeypatch.setattr(probe_rounds.RoundOrigin, "connect", hanging_connect)
    told = Told()
    async with serving(slow), serving(fast), trio.open_nursery() as nursery:
        pool = http.HttpPool()
        pool.run_rounds_in(nursery)
        entries = {}
        # The slow origin's probes time out soon; the fast one's bound is generous, so that
        # a busy machine does not time out its connect on loopback.
        for server, healthy, timeout in ((slow, Told(), 4 * INTERVAL), (fast, told, 2.0)):
            sockets = pool.probe_sockets(server.host, server.port)
            probe = PlainDiscoverProbe(sockets, httpx2.URL(server.url), {}, base.Link("web"))
            origin = probe.rounds = pool.probe_rounds(server.host, server.port)
            assert origin is not None
            entries[server.port] = entry = RoundEntry(
                probe,
                lambda: "2026-07-28",
                origin=origin,
                interval=INTERVAL,
                timeout=timeout,
                first_due=trio.current_time(),
                skip=lambda since: False,
                healthy=healthy,
            )
            origin.enrol(entry)
        slow_entry, fast_entry = entries[slow.port], entries[fast.port]
        assert slow_entry.origin.rounds is fast_entry.origin.rounds  # one task for both
        await healthy_and_learned(fast_entry, fast_entry.origin)
        escalation = await slow_entry.escalated()  # its first probe: no answer
        with pytest.raises(trio.TooSlowError):
            await escalation.check()
        slow_entry.origin.enrol(slow_entry)  # its next probe: no socket ever
        quiet = len(told.healthy)
        await told.until(quiet + 8)
        assert not fast_entry._escalated.is_set()
        escalation = await slow_entry.escalated()
        with pytest.raises(httpx2.ConnectTimeout):
            await escalation.check()
        for entry in entries.values():
            entry.withdrawn = True
        await pool.aclose()
        nursery.cancel_scope.cancel()
