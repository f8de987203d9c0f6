"""``max_message_bytes``: every message a server sends is bounded (8 MiB by default, set per
server), and a server that goes over it is closed as a ``protocol_error``.

Unit tests drive the pieces at small bounds: the stdio line splitter, the stderr tail, the
event-stream bound and the bounded HTTP body (from scripted byte chunks: no socket), and the
``maxMessageBytes`` key of an ``mcpServers`` entry. The integration tests run the hostile server
of the F4 suite (``chaos/_hostile_server.py``) at a few KiB, two servers with different bounds
side by side, and check that a stdio request that never reached the server's pipe is not
counted as sent.
"""

from __future__ import annotations

import gzip
import random
import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import trio
from mcp.shared.message import SessionMessage
from mcp_types import JSONRPCNotification, JSONRPCRequest

import trio_mcp
from trio_mcp import ConfigError, HttpTransport, StdioTransport, parse_mcp_servers
from trio_mcp._config import DEFAULT_MAX_MESSAGE_BYTES
from trio_mcp._transports import Link, SentMarker, open_transport, sent_marker, stdio
from trio_mcp._transports.base import LineSplitter, _LinkedWriteStream, over_bound, size_text
from trio_mcp._transports.http import EventBound, MessageRefusedError, bound_response
from trio_mcp._transports.stdio import STDERR_LINE_CHARS, StderrTail

KIB = 1024
HOSTILE_SERVER = Path(__file__).parent / "chaos" / "_hostile_server.py"

# ---------------------------------------------------------------------------------------------
# the setting
# ---------------------------------------------------------------------------------------------


def test_the_default_bound_is_8_mib() -> None:
    assert DEFAULT_MAX_MESSAGE_BYTES == 8 * 1024 * 1024
    assert StdioTransport(command="a").max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES
    assert HttpTransport(url="http://h/mcp").max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES
    (stdio, http) = parse_mcp_servers({"mcpServers": {"a": {"command": "a"}, "b": {"url": "http://h/mcp"}}})
    assert stdio.transport.max_message_bytes == http.transport.max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES  # type: ignore[union-attr]


def test_max_message_bytes_is_set_per_server() -> None:
    servers = {
        "a": {"command": "a", "maxMessageBytes": 1024},
        "b": {"url": "http://h/mcp", "maxMessageBytes": 65536.0},  # JSON does not tell 3 from 3.0
        "c": {"command": "c", "maxMessageBytes": None},
    }
    a, b, c = parse_mcp_servers({"mcpServers": servers})
    assert a.transport == StdioTransport(command="a", max_message_bytes=1024)
    assert b.transport == HttpTransport(url="http://h/mcp", max_message_bytes=65536)
    assert c.transport.max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "must be >= 1, got 0"),
        (-5, "must be >= 1, got -5"),
        (1.5, "must be an integer, got number"),
        ("8MiB", "must be an integer, got string"),
        (True, "must be an integer, got boolean"),
    ],
)
def test_a_bad_max_message_bytes_names_the_key(value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_mcp_servers({"mcpServers": {"x": {"command": "a", "maxMessageBytes": value}}})
    assert info.value.key == "mcpServers.x.maxMessageBytes"
    assert message in str(info.value)


@pytest.mark.parametrize("value", [0, -1, True, 2.0, "1024"])
def test_a_bad_max_message_bytes_in_code_is_refused(value: Any) -> None:
    for build in (
        lambda: StdioTransport(command="a", max_message_bytes=value),
        lambda: HttpTransport(url="http://h/mcp", max_message_bytes=value),
    ):
        with pytest.raises(ConfigError, match="must be an integer >= 1") as info:
            build()
        assert info.value.key == "max_message_bytes"


def test_the_reason_names_the_bound_and_the_setting() -> None:
    assert over_bound(8 * 1024 * 1024) == "message over 8 MiB (max_message_bytes)"
    assert over_bound(1024) == "message over 1 KiB (max_message_bytes)"
    assert over_bound(1000) == "message over 1000 bytes (max_message_bytes)"
    assert size_text(3 << 30) == "3 GiB"
    assert size_text(1536) == "1536 bytes"


# ---------------------------------------------------------------------------------------------
# stdio: lines and stderr
# ---------------------------------------------------------------------------------------------


def test_lines_are_split_across_chunks() -> None:
    lines = LineSplitter(KIB)
    assert lines.feed(b'{"a": 1}\n{"b"') == [b'{"a": 1}']
    assert lines.pending == 4
    assert lines.feed(b": 2}") == []
    assert lines.feed(b"\n\n{}\n") == [b'{"b": 2}', b"", b"{}"]
    assert lines.pending == 0 and not lines.overflowed


def test_a_line_of_exactly_the_bound_passes_and_one_byte_more_does_not() -> None:
    lines = LineSplitter(KIB)
    assert lines.feed(b"x" * KIB + b"\n") == [b"x" * KIB]
    assert lines.feed(b"x" * 1000) == []
    assert lines.feed(b"x" * 24 + b"\n") == [b"x" * KIB]
    assert lines.feed(b"x" * (KIB + 1) + b"\n") == []
    assert lines.overflowed


def test_the_lines_before_a_long_one_are_delivered_and_nothing_after_it() -> None:
    lines = LineSplitter(KIB)
    assert lines.feed(b"one\ntwo\n" + b"x" * 2000 + b"\nthree\n") == [b"one", b"two"]
    assert lines.overflowed
    assert lines.feed(b"four\n") == []


def test_a_line_that_never_ends_is_cut_at_the_bound_without_holding_more() -> None:
    lines = LineSplitter(KIB)
    assert lines.feed(b"first\n" + b"x" * 100) == [b"first"]
    held = []
    for _ in range(100):  # 100 KiB of one line, in 1000-byte chunks
        assert lines.feed(b"x" * 1000) == []
        held.append(lines.pending)
        if lines.overflowed:
            break
    assert lines.overflowed
    assert max(held) <= KIB
    assert len(held) == 1  # 100 + 1000 bytes is over 1 KiB already


def test_a_long_line_split_over_many_small_chunks_is_whole() -> None:
    lines = LineSplitter(KIB)
    data = b"y" * KIB + b"\n"
    out = []
    for i in range(0, len(data), 7):
        out.extend(lines.feed(data[i : i + 7]))
    assert out == [b"y" * KIB]


def test_the_stderr_tail_keeps_the_last_lines_each_cut_to_its_start() -> None:
    tail: deque[str] = deque(maxlen=3)
    keeper = StderrTail(tail)
    keeper.feed(b"one\ntwo\nthree\nfou")
    keeper.feed(b"r\n\n  \nfive")
    assert list(tail) == ["two", "three", "four"]
    keeper.flush()
    assert list(tail) == ["three", "four", "five"]
    keeper.feed(b"\n".join(f"line {i}".encode() for i in range(1000)) + b"\n")
    assert list(tail) == ["line 997", "line 998", "line 999"]


def test_100_mb_of_stderr_without_a_newline_holds_only_the_start_of_the_line() -> None:
    tail: deque[str] = deque(maxlen=20)
    keeper = StderrTail(tail)
    keeper.feed(b"Traceback: boom ")
    chunk = b"e" * 65536
    for _ in range(100 * 1024 * 1024 // len(chunk)):
        keeper.feed(chunk)
        assert len(keeper._line) <= 4 * STDERR_LINE_CHARS
    keeper.feed(b"\nlast words\n")
    assert tail[-2].startswith("Traceback: boom eee") and len(tail[-2]) == STDERR_LINE_CHARS
    assert tail[-1] == "last words"


def test_stderr_that_is_not_utf8_is_kept_readable() -> None:
    tail: deque[str] = deque(maxlen=20)
    keeper = StderrTail(tail)
    keeper.feed(b"caf\xe9 \xff\n")
    assert tail[-1] == "caf\ufffd \ufffd"


# ---------------------------------------------------------------------------------------------
# event streams: the bytes of one event
# ---------------------------------------------------------------------------------------------


def feed_all(bound: EventBound, data: bytes, cuts: list[int]) -> bool:
    """Feed ``data`` cut at ``cuts``; whether it stayed within the bound throughout."""
    start = 0
    for end in [*cuts, len(data)]:
        if not bound.feed(data[start:end]):
            return False
        start = end
    return True


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_events_end_at_an_empty_line_whatever_the_line_terminator(terminator: bytes) -> None:
    event = b"event: message" + terminator + b"data: " + b"x" * 900 + terminator + terminator
    data = event * 10  # 10 events under 1 KiB each: 9 KiB in all
    for cut in range(0, len(event) + 1, 3):  # an event end straddling two chunks, everywhere
        assert feed_all(EventBound(KIB), data, [cut, len(event) + cut]), cut
    assert feed_all(EventBound(KIB), data, [])  # one chunk of many events


def test_an_event_over_the_bound_is_refused_in_one_chunk_or_many() -> None:
    big = b"data: " + b"x" * 2000 + b"\n\n"
    assert not feed_all(EventBound(KIB), b"data: ok\n\n" + big + b"data: ok\n\n", [])
    assert not feed_all(EventBound(KIB), big, list(range(100, len(big), 100)))


def test_a_never_ending_event_is_cut_at_the_bound() -> None:
    bound = EventBound(KIB)
    assert bound.feed(b"data: first\n\n")
    fed = 0
    line = b"data: " + b"x" * 57 + b"\n"  # lines, but never an empty one
    while bound.feed(line):
        fed += len(line)
        assert fed < 2 * KIB
    assert KIB - len(line) < fed <= KIB
    # Comments count too: an endless comment holds the stream open just the same.
    bound = EventBound(KIB)
    assert not feed_all(bound, b": keep-alive\n" * 100, [])


def test_the_event_bound_agrees_with_the_events_whatever_the_chunks() -> None:
    """Random events under the bound never trip it, cut anywhere; one event over it always does."""
    rng = random.Random(4)
    terminators = (b"\n", b"\r\n", b"\r")
    for _ in range(300):
        events = []
        for _ in range(rng.randint(1, 8)):
            lines = [
                rng.choice((b"data: ", b"id: ", b": ")) + b"z" * rng.randint(0, 150)
                for _ in range(rng.randint(1, 5))
            ]
            terminator = rng.choice(terminators)
            events.append(terminator.join(lines) + terminator + rng.choice(terminators))
        over = rng.random() < 0.5
        if over:
            events.insert(rng.randrange(len(events) + 1), b"data: " + b"z" * KIB + b"\n\n")
        data = b"".join(events)
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 12))))
        # Each event counts at most its bytes plus one (a CRLF's LF before the next event):
        # under 1 KiB each (the longest is 5 x 156 + 4 + 2 bytes).
        assert feed_all(EventBound(KIB), data, cuts) is not over


# ---------------------------------------------------------------------------------------------
# HTTP: bounded response bodies (scripted chunks, no socket)
# ---------------------------------------------------------------------------------------------


class Chunks(httpx2.AsyncByteStream):
    """A response body from scripted chunks; counts how many were read."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.read = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.read += 1
            await trio.lowlevel.checkpoint()
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


REQUEST = httpx2.Request("POST", "http://h/mcp")


def respond(
    chunks: list[bytes], link: Link, bound: int = KIB, **headers: str
) -> tuple[httpx2.Response, Chunks]:
    body = Chunks(chunks)
    response = httpx2.Response(200, headers={k.replace("_", "-"): v for k, v in headers.items()}, stream=body)
    return bound_response(response, REQUEST, link, bound), body


async def test_a_body_within_the_bound_passes_untouched() -> None:
    link = Link("h")
    response, body = respond([b'{"a":', b" 1}"], link, content_type="application/json")
    assert await response.aread() == b'{"a": 1}'
    assert link.exit_reason is None and not link.dead.is_set()
    await response.aclose()
    assert body.closed


async def test_a_body_over_the_bound_is_refused_while_it_streams() -> None:
    link = Link("h")
    response, body = respond([b"x" * 300] * 100, link, content_type="application/json")
    with pytest.raises(MessageRefusedError, match=r"message over 1 KiB \(max_message_bytes\)"):
        await response.aread()
    assert body.read == 4  # 1200 bytes: the fourth chunk went over, and no more was read
    assert link.exit_reason == ("protocol_error", "message over 1 KiB (max_message_bytes)")
    assert link.dead.is_set()


async def test_a_declared_length_over_the_bound_is_refused_before_reading() -> None:
    link = Link("h")
    response, body = respond([b"x" * 300] * 10, link, content_type="application/json", content_length="3000")
    with pytest.raises(MessageRefusedError):
        await response.aread()
    assert body.read == 0
    assert link.exit_reason is not None and link.exit_reason[0] == "protocol_error"


async def test_a_refused_body_is_an_error_the_sdk_answers_the_request_with() -> None:
    """A JSON body's request gets a parse error, an event stream's a failed stream: in both
    cases the SDK ends that request, without tearing the connection down under its owner."""
    assert issubclass(MessageRefusedError, httpx2.StreamError)
    assert issubclass(MessageRefusedError, httpx2.SSEError)


async def test_a_compressed_body_is_bounded_once_decoded() -> None:
    link = Link("h")
    small = gzip.compress(b'{"a": 1}')
    response, _ = respond([small], link, content_type="application/json", content_encoding="gzip")
    assert "content-encoding" not in response.headers
    assert await response.aread() == b'{"a": 1}'

    bomb = gzip.compress(b"x" * (1024 * KIB))  # 1 MiB that is 1 KiB on the wire
    assert len(bomb) < 2 * KIB
    pieces = [bomb[i : i + 100] for i in range(0, len(bomb), 100)]
    response, body = respond(pieces, link, content_type="application/json", content_encoding="gzip")
    with pytest.raises(MessageRefusedError):
        await response.aread()
    assert body.read < len(pieces)
    assert link.exit_reason == ("protocol_error", "message over 1 KiB (max_message_bytes)")


async def test_an_event_stream_is_bounded_event_by_event() -> None:
    link = Link("h")
    events = [b"event: message\ndata: " + b"x" * 900 + b"\n\n"] * 20  # 18 KiB of events under 1 KiB
    response, _ = respond(events, link, content_type="text/event-stream")
    assert len(await response.aread()) == sum(map(len, events))
    assert link.exit_reason is None

    endless = [b"data: " + b"x" * 100 + b"\n"] * 1000  # no empty line, ever
    response, body = respond(endless, link, content_type="text/event-stream")
    with pytest.raises(MessageRefusedError, match="max_message_bytes"):
        async for _ in response.aiter_bytes():
            pass
    assert body.read == 10
    assert link.exit_reason == ("protocol_error", "message over 1 KiB (max_message_bytes)")


async def test_an_event_stream_that_is_not_utf8_is_refused() -> None:
    link = Link("h")
    snowman = "data: \u2603\n\n".encode()
    response, _ = respond([snowman[:7], snowman[7:]], link, content_type="text/event-stream")
    assert await response.aread() == snowman  # a character split between two chunks is fine

    response, _ = respond([b"data: caf\xe9\n\n"], link, content_type="text/event-stream")
    with pytest.raises(MessageRefusedError, match="not UTF-8"):
        await response.aread()
    assert link.exit_reason == ("protocol_error", "the server sent an event stream that is not UTF-8 text")

    link = Link("h")
    response, _ = respond([b"data: \xe2\x98"], link, content_type="text/event-stream")
    with pytest.raises(MessageRefusedError, match="not UTF-8"):
        await response.aread()  # it ends in the middle of a character


# ---------------------------------------------------------------------------------------------
# integration: the bound of each server, end to end
# ---------------------------------------------------------------------------------------------

POLICY = trio_mcp.ServerPolicy(protocol="legacy", handshake_timeout=15, call_timeout=15)


async def hold_and_trigger(manager: trio_mcp.Manager, name: str) -> tuple[str, str]:
    """Park a ``hold`` call on ``name`` and ``trigger`` it: the hold's answer, and the
    trigger's (its text, or its failure category and message)."""
    held: list[str] = []

    async def hold() -> None:
        result = await manager.call_tool("hold", preferred=[name], failover="never")
        held.append(result.content[0].text)  # type: ignore[union-attr]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        try:
            result = await manager.call_tool("trigger", preferred=[name], failover="never")
        except trio_mcp.InvocationFailedError as exc:
            outcome = f"{exc.attempts[-1].category}: {exc.attempts[-1].error}"
        else:
            outcome = result.content[0].text  # type: ignore[union-attr]
    return held[0], outcome


@pytest.mark.integration
async def test_each_stdio_server_has_its_own_bound() -> None:
    """The same 4 KiB line: over the 1 KiB bound of one server, within the 64 KiB of another."""
    args = (str(HOSTILE_SERVER), "stdio", "--behaviour", "long_line", "--size", "4096")
    servers = [
        trio_mcp.ServerConfig(
            name=name,
            transport=StdioTransport(command=sys.executable, args=args, max_message_bytes=bound),
            policy=POLICY,
        )
        for name, bound in (("small", KIB), ("large", 64 * KIB))
    ]
    with trio.fail_after(60):
        async with trio_mcp.open_manager(servers) as manager:
            for name in ("small", "large"):
                await manager.wait_for(name, lambda s: s.session.active)
            assert await hold_and_trigger(manager, "small") == (
                "held",
                "protocol_error: message over 1 KiB (max_message_bytes)",
            )
            assert await hold_and_trigger(manager, "large") == ("held", "x" * 4096)
            snap = await manager.wait_for("small", lambda s: s.last_error_category is not None)
            assert snap.last_error_category == "protocol_error"
            assert manager.server("large").last_error_category is None


@pytest.mark.integration
async def test_each_http_server_has_its_own_bound() -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, str(HOSTILE_SERVER), "http", "--behaviour", "huge_json", "--size", "4096"],
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(30):
            port = b""
            while not port.endswith(b"\n"):
                port += await process.stdout.receive_some(16)
        url = f"http://127.0.0.1:{int(port)}/mcp"
        servers = [
            trio_mcp.ServerConfig(
                name=name, transport=HttpTransport(url=url, max_message_bytes=bound), policy=POLICY
            )
            for name, bound in (("small", KIB), ("large", 64 * KIB))
        ]
        with trio.fail_after(60):
            async with trio_mcp.open_manager(servers) as manager:
                for name in ("small", "large"):
                    await manager.wait_for(name, lambda s: s.session.active)
                held, outcome = await hold_and_trigger(manager, "small")
                assert held == "held"
                assert outcome.startswith("protocol_error: ")
                assert "message over 1 KiB (max_message_bytes)" in outcome
                assert await hold_and_trigger(manager, "large") == ("held", "x" * 4096)
                snap = await manager.wait_for("small", lambda s: s.last_error_category is not None)
                assert snap.last_error_category == "protocol_error"
    finally:
        process.kill()
        await process.wait()


WRITES_NOT_UTF8 = (
    "import sys, time; out = sys.stdout.buffer; "
    'out.write(b\'{"jsonrpc": "2.0", "method": "notifications/first"}\\n\\n\'); '
    "out.write(b'not json\\n'); "
    'out.write(b\'{"jsonrpc": "2.0", "method": "caf\\xe9"}\\n\'); '
    'out.write(b\'{"jsonrpc": "2.0", "method": "notifications/never"}\\n\'); out.flush(); '
    "sys.stderr.write('partial line, no newline'); sys.stderr.flush(); time.sleep(30)"
)


@pytest.mark.integration
async def test_a_stdout_line_that_is_not_utf8_closes_the_connection_after_the_lines_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Lines before it arrive (a line of valid text that is not JSON is passed on as an error,
    as the SDK does); the line that is not UTF-8 ends the read stream: a protocol error."""
    monkeypatch.setattr(stdio, "STDIO_CLOSE_GRACE", 0.2)
    link = Link("s")
    with trio.fail_after(20):
        async with open_transport(
            StdioTransport(command=sys.executable, args=("-c", WRITES_NOT_UTF8)), link
        ) as (
            read,
            _,
        ):
            first = await read.receive()
            assert first.message.method == "notifications/first"
            assert isinstance(await read.receive(), ValueError)
            with pytest.raises(anyio.EndOfStream):
                await read.receive()
    assert link.exit_reason == ("protocol_error", "the server wrote a line that is not UTF-8 text")


# ---------------------------------------------------------------------------------------------
# a request that never reached the server is not counted as sent
# ---------------------------------------------------------------------------------------------

CLOSES_STDIN = (
    "import os, sys, time; os.close(0); "
    'sys.stdout.write(\'{"jsonrpc": "2.0", "method": "notifications/ready"}\\n\'); sys.stdout.flush(); '
    "time.sleep(30)"
)
"""A server that stops reading: its stdin is closed, so a write to it fails (EPIPE)."""


def request(request_id: int) -> SessionMessage:
    return SessionMessage(
        JSONRPCRequest(jsonrpc="2.0", id=request_id, method="tools/call", params={"name": "t"})
    )


@pytest.mark.integration
async def test_a_request_the_stdio_server_never_read_is_not_counted_as_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stdio, "STDIO_CLOSE_GRACE", 0.2)
    config = StdioTransport(command=sys.executable, args=("-c", CLOSES_STDIN))
    link = Link("s")
    with trio.fail_after(20):
        async with open_transport(config, link) as (read, write):
            ready = await read.receive()
            assert isinstance(ready.message, JSONRPCNotification)
            marker = SentMarker()
            token = sent_marker.set(marker)
            try:
                # Written from this task, which finds the pipe closed: the SDK then fails the
                # request with "Connection closed".
                with pytest.raises(anyio.BrokenResourceError):
                    await write.send(request(1))
            finally:
                sent_marker.reset(token)
            assert link.dead.is_set()
            assert marker.refused and not marker.delivered
            assert link.exit_reason == ("transport_error", "could not write to the server's stdin")
            assert link.awaiting_delivery == {}


async def test_a_request_on_a_dead_link_is_not_written() -> None:
    inner_send, inner_receive = anyio.create_memory_object_stream[SessionMessage](1)
    link = Link("s")
    link.track_delivery = True
    write = _LinkedWriteStream(inner_send, link)
    marker = SentMarker()
    token = sent_marker.set(marker)
    try:
        await write.send(request(1))
        assert marker.sent and link.awaiting_delivery.keys() == {"1"}
        link.mark_dead("process_exited", "server process exited with code -9")
        second = SentMarker()
        sent_marker.set(second)
        with pytest.raises(anyio.BrokenResourceError):
            await write.send(request(2))
        assert not second.sent and "2" not in link.awaiting_delivery
    finally:
        sent_marker.reset(token)
    assert inner_receive.receive_nowait().message.id == 1  # type: ignore[union-attr]
    with pytest.raises(anyio.WouldBlock):
        inner_receive.receive_nowait()
    inner_send.close()
    inner_receive.close()
