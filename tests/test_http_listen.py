"""The list-change stream of a plain-HTTP 2026-07-28 connection, held outside the SDK session:
one long POST over h11 (real sockets, real clock; the server side is scripted, so that every way
a server could answer or drop the stream can be given on purpose)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
import trio
import trio.testing
from _http_script import ERROR, RESULT, Answer, ScriptedHttpServer, refused_url
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import SUBSCRIPTION_ID_META_KEY

from trio_mcp._transports import base, http, http_listen, http_probe, wire
from trio_mcp._transports.probe_rounds import ROUND_BUSY_HANDSHAKES, ROUND_DEFER_SECONDS


def stamped(method: str, subscription_id: str = "ID", **params: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "method": method,
        "params": {**params, "_meta": {SUBSCRIPTION_ID_META_KEY: subscription_id}},
    }


ACK = stamped("notifications/subscriptions/acknowledged", notifications={"toolsListChanged": True})
TOOLS = stamped("notifications/tools/list_changed")
PROMPTS = stamped("notifications/prompts/list_changed")


def events(*messages: dict[str, Any] | str) -> str:
    """An event stream of ``messages`` (a string goes as it is)."""
    return "".join(
        f"event: message\ndata: {m if isinstance(m, str) else json.dumps(m)}\n\n" for m in messages
    )


@asynccontextmanager
async def listening(
    server: ScriptedHttpServer, *, headers: dict[str, str] | None = None, max_bytes: int = 1 << 20
) -> AsyncIterator[tuple[http_listen.PlainListen, base.Link]]:
    """``server`` running, and a plain listen stream of it, closed afterwards."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            pool = http.HttpPool()
            link = base.Link("web")
            sockets = pool.probe_sockets(server.host, server.port)
            stream = http_listen.PlainListen(sockets, httpx2.URL(server.url), headers or {}, link, max_bytes)
            try:
                yield stream, link
            finally:
                await pool.aclose()
                nursery.cancel_scope.cancel()


async def listen_to(
    answer: Answer, **options: Any
) -> tuple[list[dict[str, Any]], BaseException | None, base.Link]:
    """Listen to a server that gives ``answer``: the messages handed over, what the listen
    ended with (``None``: the server's graceful close), and the connection's link."""
    got: list[dict[str, Any]] = []

    async def on_message(subscription_id: str, message: dict[str, Any]) -> None:
        assert subscription_id.startswith("trio-mcp-listen-")
        got.append(json.loads(json.dumps(message).replace(subscription_id, "ID")))

    ended: BaseException | None = None
    server = ScriptedHttpServer(answer=lambda connection, request: answer)
    async with listening(server, **options) as (stream, link):
        try:
            await stream("2026-07-28", ("tools",), on_message)
        except Exception as exc:
            ended = exc
        await server.wait_closed(1)  # the socket is closed whatever the end
    return got, ended, link


def test_a_stream_message_says_acknowledged_or_which_list_changed_for_its_own_subscription_only() -> None:
    assert wire.stream_event(ACK, "ID") == "acknowledged"
    assert wire.stream_event(TOOLS, "ID") == "tools"
    assert wire.stream_event(PROMPTS, "ID") == "prompts"
    assert wire.stream_event(stamped("notifications/resources/list_changed"), "ID") == "resources"
    assert wire.stream_event(TOOLS, "other") is None  # stamped for another stream
    assert wire.stream_event({"method": "notifications/tools/list_changed"}, "ID") is None
    assert wire.stream_event(stamped("notifications/message", level="info"), "ID") is None
    # An acknowledgement must say what it honours.
    assert wire.stream_event(stamped("notifications/subscriptions/acknowledged"), "ID") is None
    assert wire.stream_event({"method": "x", "params": "not an object"}, "ID") is None


def test_events_are_found_however_the_stream_is_cut() -> None:
    stream = (
        b': a comment\r\n\r\nevent: message\r\ndata: {"a": 1}\r\n\r\n'
        b"data: line one\ndata: line two\n\nid: 7\n\n"
        b'data:no space\r\rdata: {"b": 2}\n\ndata: unfinished'
    )
    want = [b'{"a": 1}', b"line one\nline two", b"no space", b'{"b": 2}']
    whole = http_listen.EventData()
    assert whole.feed(stream) == want
    assert whole.pending == len(b"data: unfinished")
    for size in (1, 2, 3, 7):
        parts = http_listen.EventData()
        found = [d for i in range(0, len(stream), size) for d in parts.feed(stream[i : i + size])]
        assert found == want, size


async def test_the_listen_request_names_the_lists_and_carries_the_connection_headers() -> None:
    server = ScriptedHttpServer(answer=lambda connection, request: (200, "application/json", RESULT))
    async with listening(server, headers={"x-team": "blue", "Accept": "text/html"}) as (stream, _):

        async def on_message(subscription_id: str, message: dict[str, Any]) -> None:
            raise AssertionError(message)

        await stream("2026-07-28", ("tools", "resources"), on_message)
    [(_, sent, headers)] = server.requests
    assert sent["method"] == "subscriptions/listen"
    assert sent["id"].startswith("trio-mcp-listen-")
    assert sent["params"]["notifications"] == {"toolsListChanged": True, "resourcesListChanged": True}
    assert sent["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] == "2026-07-28"
    assert headers["mcp-method"] == "subscriptions/listen"
    assert headers["mcp-protocol-version"] == "2026-07-28"
    assert headers["accept"] == "application/json, text/event-stream"  # ours, not the configured one
    assert headers["x-team"] == "blue"
    assert headers["host"] == f"127.0.0.1:{server.port}"


async def test_messages_are_handed_over_in_order_until_the_servers_graceful_close() -> None:
    got, ended, link = await listen_to(
        (200, "text/event-stream", events(ACK, TOOLS, "not json", PROMPTS, RESULT))
    )
    assert ended is None
    assert got == [ACK, TOOLS, PROMPTS]
    assert not link.dead.is_set()


@pytest.mark.parametrize(
    ("answer", "raised"),
    [
        ((200, "text/event-stream", events(ACK, ERROR)), (-32603, "overloaded")),
        ((400, "application/json", ERROR), (-32603, "overloaded")),
        ((404, None, ""), (-32601, "Not Found")),
        ((202, None, ""), (-32600, "server answered subscriptions/listen with HTTP 202")),
        ((200, "text/plain", "hello"), (-32600, "Unexpected content type: text/plain")),
    ],
)
async def test_a_refused_listen_raises_what_the_server_said(answer: Answer, raised: tuple[int, str]) -> None:
    _, ended, link = await listen_to(answer)
    assert isinstance(ended, MCPError)
    assert (ended.error.code, ended.error.message) == raised
    assert link.http_status == (answer[0] if answer[0] >= 400 else None)
    assert not link.dead.is_set()  # the connection's other requests go on


async def test_a_stream_that_ends_without_an_answer_is_lost_and_the_connection_is_not_marked() -> None:
    got, ended, link = await listen_to((200, "text/event-stream", events(ACK, TOOLS)))
    assert got == [ACK, TOOLS]
    assert isinstance(ended, http_listen.ListenLostError)
    assert not link.dead.is_set()


async def test_an_event_over_the_message_bound_closes_the_connection_as_a_protocol_error() -> None:
    big = stamped("notifications/tools/list_changed", pad="x" * 4096)
    got, ended, link = await listen_to((200, "text/event-stream", events(ACK, big)), max_bytes=1024)
    assert got == [ACK]
    assert isinstance(ended, http_probe.MessageRefusedError)
    assert link.exit_reason == ("protocol_error", "message over 1 KiB (max_message_bytes)")


async def test_an_event_that_never_ends_is_cut_at_the_message_bound() -> None:
    endless = "data: " + "x" * 4096
    _, ended, link = await listen_to((200, "text/event-stream", events(ACK) + endless), max_bytes=1024)
    assert isinstance(ended, http_probe.MessageRefusedError)
    assert link.exit_reason is not None and link.exit_reason[0] == "protocol_error"


async def test_a_refused_connection_is_a_connect_error_that_leaves_the_connection_alone() -> None:
    with trio.fail_after(5):
        url = httpx2.URL(await refused_url())
        pool = http.HttpPool()
        link = base.Link("web")
        stream = http_listen.PlainListen(pool.probe_sockets(url.host, url.port or 80), url, {}, link)

        async def on_message(subscription_id: str, message: dict[str, Any]) -> None:
            raise AssertionError(message)

        with pytest.raises(httpx2.ConnectError):
            await stream("2026-07-28", ("tools",), on_message)
        await pool.aclose()
    assert not link.dead.is_set()


async def test_a_stream_held_open_ends_with_its_owner_and_its_socket_is_closed() -> None:
    server = ScriptedHttpServer(
        answer=lambda connection, request: (200, "text/event-stream", events(ACK)), hold_open=True
    )
    got: list[dict[str, Any]] = []
    heard = trio.Event()

    async def on_message(subscription_id: str, message: dict[str, Any]) -> None:
        got.append(message)
        heard.set()

    async with listening(server) as (stream, link):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream, "2026-07-28", ("tools",), on_message)
            await heard.wait()
            nursery.cancel_scope.cancel()
        await server.wait_closed(1)
    assert [wire.stream_event(m, m["params"]["_meta"][SUBSCRIPTION_ID_META_KEY]) for m in got] == [
        "acknowledged"
    ]
    assert not link.dead.is_set()


async def open_while_handshaking(
    server: ScriptedHttpServer, gate: trio.Event, wait: float = 0.05
) -> tuple[http_probe.ProbeSockets, list[str]]:
    """``ROUND_BUSY_HANDSHAKES`` handshakes to ``server`` under way (answered once ``gate`` is
    set), and a listen stream opened meanwhile; the methods ``server`` had read ``wait``
    seconds later (every task blocked), and the origin's sockets."""
    pool = http.HttpPool()
    sockets = pool.probe_sockets(server.host, server.port)
    url = httpx2.URL(server.url)
    stream = http_listen.PlainListen(sockets, url, {}, base.Link("web"))
    seen: list[str] = []

    async def on_message(subscription_id: str, message: dict[str, Any]) -> None:
        raise AssertionError(message)

    async with trio.open_nursery() as nursery:
        for _ in range(ROUND_BUSY_HANDSHAKES):
            dispatcher = http_probe.SessionlessDispatcher(sockets, url, {}, base.Link("web"))
            nursery.start_soon(dispatcher.send_raw_request, "server/discover", None)
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert sockets.handshaking == ROUND_BUSY_HANDSHAKES
        nursery.start_soon(stream, "2026-07-28", ("tools",), on_message)
        await trio.sleep(wait)
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        seen = [request["method"] for _, request, _ in server.requests]
        gate.set()
    await pool.aclose()
    return sockets, seen


async def test_a_stream_is_opened_once_the_origin_is_not_busy_handshaking() -> None:
    """While a fleet comes up, the origin's capacity goes to the handshakes first: a new stream
    waits until fewer than ``ROUND_BUSY_HANDSHAKES`` of them are under way."""
    gate = trio.Event()
    server = ScriptedHttpServer(gate=gate)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            sockets, seen = await open_while_handshaking(server, gate)
            nursery.cancel_scope.cancel()
    assert seen == ["server/discover"] * ROUND_BUSY_HANDSHAKES  # the stream waited
    assert [request["method"] for _, request, _ in server.requests][-1] == "subscriptions/listen"
    assert sockets.handshaking == 0


async def test_a_stream_waits_for_the_handshakes_for_a_bounded_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Handshakes that never end hold a stream back for ``ROUND_DEFER_SECONDS`` at most."""
    monkeypatch.setattr(http_probe, "ROUND_DEFER_SECONDS", 0.2)
    never = trio.Event()
    server = ScriptedHttpServer(gate=never)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            sockets, seen = await open_while_handshaking(server, never, wait=0.4)
            nursery.cancel_scope.cancel()
    assert seen == ["server/discover"] * ROUND_BUSY_HANDSHAKES + ["subscriptions/listen"]
    assert sockets.handshaking == 0


async def test_waiting_for_a_quiet_origin_takes_no_longer_than_the_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sockets = http_probe.ProbeSockets("127.0.0.1", 9, trio.Semaphore(1))
    start = trio.current_time()
    sockets.handshaking = ROUND_BUSY_HANDSHAKES - 1
    await sockets.until_quiet()
    assert trio.current_time() == start  # not busy: at once
    sockets.handshaking = ROUND_BUSY_HANDSHAKES
    await sockets.until_quiet()
    assert trio.current_time() - start == pytest.approx(ROUND_DEFER_SECONDS)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sockets.until_quiet)
        await trio.sleep(1.0)
        sockets.handshake_ended()  # now below the mark: the waiter goes on at once
    assert trio.current_time() - start == pytest.approx(ROUND_DEFER_SECONDS + 1.0)


async def test_streams_are_opened_a_few_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streams that all open together (a fleet whose start is over) are let through
    ``LISTENS_OPENING`` at a time, each until the server's answer begins, so they are not all
    queued at the origin in front of the handshakes still under way."""
    monkeypatch.setattr(http_probe, "LISTENS_OPENING", 2)
    gate = trio.Event()
    server = ScriptedHttpServer(gate=gate)
    ended: list[int] = []

    async def on_message(subscription_id: str, message: dict[str, Any]) -> None:
        raise AssertionError(message)

    async def listen(stream: http_listen.PlainListen, number: int) -> None:
        await stream("2026-07-28", ("tools",), on_message)
        ended.append(number)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            pool = http.HttpPool()
            sockets = pool.probe_sockets(server.host, server.port)
            async with trio.open_nursery() as streams:
                for number in range(5):
                    stream = http_listen.PlainListen(
                        sockets, httpx2.URL(server.url), {}, base.Link(f"s{number}")
                    )
                    streams.start_soon(listen, stream, number)
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                assert (server.connections, len(server.requests)) == (2, 2)  # the others wait
                gate.set()
            await pool.aclose()
            nursery.cancel_scope.cancel()
    assert sorted(ended) == [0, 1, 2, 3, 4] and server.connections == 5


async def test_a_stream_that_fails_to_open_lets_the_next_one_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_probe, "LISTENS_OPENING", 1)
    with trio.fail_after(5):
        url = httpx2.URL(await refused_url())
        pool = http.HttpPool()
        sockets = pool.probe_sockets(url.host, url.port or 80)

        async def on_message(subscription_id: str, message: dict[str, Any]) -> None:
            raise AssertionError(message)

        for _ in range(2):
            with pytest.raises(httpx2.ConnectError):
                await http_listen.PlainListen(sockets, url, {}, base.Link("web"))(
                    "2026-07-28", ("tools",), on_message
                )
        assert sockets.opening.value == 1
        await pool.aclose()


async def test_streams_whose_answers_never_begin_hold_the_others_back_for_a_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_probe, "LISTENS_OPENING", 1)
    monkeypatch.setattr(http_probe, "ROUND_DEFER_SECONDS", 0.2)
    never = trio.Event()
    server = ScriptedHttpServer(gate=never)

    async def on_message(subscription_id: str, message: dict[str, Any]) -> None:
        raise AssertionError(message)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            pool = http.HttpPool()
            sockets = pool.probe_sockets(server.host, server.port)
            for number in range(2):
                stream = http_listen.PlainListen(sockets, httpx2.URL(server.url), {}, base.Link(f"s{number}"))
                nursery.start_soon(stream, "2026-07-28", ("tools",), on_message)
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert len(server.requests) == 1  # the first holds the one turn, unanswered
            await trio.sleep(0.3)
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert len(server.requests) == 2  # the second went without one
            nursery.cancel_scope.cancel()
        await pool.aclose()
    assert sockets.opening.value == 1  # the turn taken was given back


async def test_waiting_for_no_handshake_at_all_takes_no_longer_than_asked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """What matters least (listing a catalog again) waits until no handshake to the origin is
    under way, or for as long as asked."""
    sockets = http_probe.ProbeSockets("127.0.0.1", 9, trio.Semaphore(1))
    start = trio.current_time()
    await sockets.until_still(30.0)
    assert trio.current_time() == start  # none under way: at once
    sockets.handshaking = 2
    await sockets.until_still(30.0)
    assert trio.current_time() - start == pytest.approx(30.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sockets.until_still, 30.0)
        await trio.sleep(1.0)
        sockets.handshake_ended()  # one left: it still waits
        await trio.sleep(1.0)
        sockets.handshake_ended()  # none left: it goes on at once
    assert trio.current_time() - start == pytest.approx(32.0)
