"""HTTP/1.1 as the plain POSTs write and read it (``_transports.http1``, and
``PlainPost._exchange_on`` over it): a request written out byte for byte as h11 writes it, the
headers h11 refuses refused alike, and an answer read the same however it arrives (in pieces,
larger than one read, framed by ``Content-Length`` or not), with the socket reused only when
the answer ends exactly and the server keeps the connection."""

from __future__ import annotations

from collections.abc import Sequence

import h11
import httpx2
import pytest
import trio
import trio.testing

from trio_mcp._transports import base, http, http1, http_probe

BODY = b'{"jsonrpc": "2.0", "id": "trio-mcp-1", "result": {"tools": []}}'


def framed(body: bytes = BODY, *, extra: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    head = b" 200 OK\r\nServer: test\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    return version + head + extra + b"\r\n" + body


CHUNKED = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    + b"%x\r\n%s\r\n" % (len(BODY[:20]), BODY[:20])
    + b"%x\r\n%s\r\n" % (len(BODY[20:]), BODY[20:])
    + b"0\r\n\r\n"
)
EVENTS = b'event: message\ndata: {"jsonrpc": "2.0", "id": "trio-mcp-1", "result": {}}\n\n'
EVENT_STREAM = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n" + EVENTS


# -- writing ------------------------------------------------------------------------------------


def test_a_request_head_is_written_byte_for_byte_as_h11_writes_it() -> None:
    headers = [
        ("host", "127.0.0.1:8000"),
        ("Authorization", "Bearer abc.def"),
        ("accept", "application/json, text/event-stream"),
        ("content-type", "application/json"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("content-length", "57"),
    ]
    ours = http1.request_line("POST", b"/mcp?x=1") + http1.header_lines(headers) + b"\r\n"
    theirs = h11.Connection(h11.CLIENT).send(h11.Request(method="POST", target="/mcp?x=1", headers=headers))
    assert ours == theirs


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x-ok", "a value with  inner spaces"),
        ("x-ok", ""),
        ("x-tab", "a\tb"),
        ("x-injected", "a\r\nx-evil: 1"),
        ("x-newline", "a\nb"),
        ("x-nul", "a\x00b"),
        ("x-leading", " padded"),
        ("x-trailing", "padded "),
        ("bad name", "v"),
        ("bad:name", "v"),
        ("", "v"),
        ("x-cr", "a\rb"),
    ],
)
def test_a_header_is_refused_exactly_when_h11_refuses_it(name: str, value: str) -> None:
    try:
        h11.Request(method="POST", target="/", headers=[("host", "h"), (name, value)])
    except h11.LocalProtocolError:
        with pytest.raises(h11.LocalProtocolError):
            http1.header_lines([(name, value)])
    else:
        assert http1.header_lines([(name, value)]) == f"{name}: {value}\r\n".encode()


def plain_calls(headers: dict[str, str] | None = None, max_bytes: int = 1 << 20) -> http_probe.PlainCalls:
    """A connection's plain calls to a server that is never connected to."""
    sockets = http.HttpPool().probe_sockets("127.0.0.1", 1)
    url = httpx2.URL("http://127.0.0.1:1/mcp")
    return http_probe.PlainCalls(sockets, url, headers or {}, base.Link("s"), max_bytes)


def test_a_header_that_may_not_be_written_fails_the_request_before_anything_is_sent() -> None:
    """A tool name or a configured header with a line break in it cannot smuggle a second
    request onto the connection: the request fails before a byte is written."""
    with pytest.raises(h11.LocalProtocolError):
        plain_calls()._post({"mcp-name": "echo\r\nx-evil: 1"}, 10)
    with pytest.raises(h11.LocalProtocolError):
        plain_calls({"x-team": "a\r\nb"})._post({}, 10)


# -- reading ------------------------------------------------------------------------------------


async def exchange(
    pieces: Sequence[bytes], *, max_bytes: int = 1 << 20, reused: bool = False, close_after: bool = False
) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
    """One POST through ``PlainPost._exchange_on`` on an in-memory socket whose server reads the
    request, then writes ``pieces`` one at a time (each read by the client on its own), then
    closes the connection if ``close_after``."""
    client, server = trio.testing.memory_stream_pair()
    post = plain_calls(max_bytes=max_bytes)
    request = post._post({"mcp-method": "tools/list"}, 2) + b"{}"
    written = bytearray()

    async def serve() -> None:
        while not written.endswith(b"{}"):
            written.extend(await server.receive_some())
        for piece in pieces:
            await server.send_all(piece)
            await trio.testing.wait_all_tasks_blocked()
        if close_after:
            await server.aclose()

    error: Exception | None = None
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            try:
                answer = await post._exchange_on(
                    http_probe._ProbeSocket(client), request, "trio-mcp-1", reused=reused
                )
            except Exception as exc:
                error = exc
            nursery.cancel_scope.cancel()
    assert bytes(written) == request
    if error is not None:
        raise error
    return answer


def splits(data: bytes) -> list[list[bytes]]:
    """``data`` whole, cut at the end of the head and inside it, and a byte at a time."""
    head_end = data.index(b"\r\n\r\n")
    return [
        [data],
        [data[: head_end + 4], data[head_end + 4 :]],
        [data[:10], data[10 : head_end + 2], data[head_end + 2 :]],
        [data[i : i + 1] for i in range(len(data))],
    ]


@pytest.mark.parametrize("pieces", splits(framed()))
async def test_an_answer_framed_by_content_length_reads_the_same_in_any_pieces(pieces: list[bytes]) -> None:
    status, headers, body, reusable = await exchange(pieces)
    assert (status, body, reusable) == (200, BODY, True)
    assert (b"content-type", b"application/json") in headers  # names in lower case, as h11 gives


@pytest.mark.parametrize("pieces", splits(CHUNKED))
async def test_a_chunked_answer_is_read_by_h11_in_any_pieces(pieces: list[bytes]) -> None:
    status, headers, body, reusable = await exchange(pieces)
    assert (status, body, reusable) == (200, BODY, True)
    assert (b"transfer-encoding", b"chunked") in headers


async def test_an_answer_larger_than_one_read_is_read_whole() -> None:
    big = b'{"pad": "' + b"x" * (3 * http1.RECEIVE) + b'"}'
    status, _, body, reusable = await exchange([framed(big)])
    assert (status, body, reusable) == (200, big, True)


async def test_an_event_stream_ends_at_the_answer_and_its_socket_is_not_reused() -> None:
    """The stream may go on after the answer: the socket is given up, not reused."""
    status, _, body, reusable = await exchange([EVENT_STREAM])
    assert (status, body, reusable) == (200, EVENTS, False)


@pytest.mark.parametrize(
    "answer",
    [
        framed(extra=b"Connection: close\r\n"),
        framed(version=b"HTTP/1.0"),
        framed() + b"HTTP/1.1 200 OK\r\n",  # more than was asked for
    ],
    ids=["connection-close", "http-1.0", "bytes-after-the-answer"],
)
async def test_a_socket_is_reused_only_when_the_answer_ends_exactly_and_the_server_keeps_it(
    answer: bytes,
) -> None:
    status, _, body, reusable = await exchange([answer])
    assert (status, body, reusable) == (200, BODY, False)


async def test_an_answer_whose_length_is_over_the_bound_is_refused_before_its_body() -> None:
    with pytest.raises(http_probe.MessageRefusedError, match="message over"):
        await exchange([framed(b"x" * 2048)[:120]], max_bytes=1024)


async def test_a_connection_closed_within_the_body_is_a_protocol_error() -> None:
    with pytest.raises(httpx2.RemoteProtocolError, match="within an answer"):
        await exchange([framed()[:-5]], close_after=True)


async def test_a_reused_socket_closed_before_a_byte_of_answer_is_stale_and_a_fresh_one_fails() -> None:
    """On a reused socket the request was most likely never taken (sent again elsewhere); on a
    fresh one it may have been (the request fails)."""
    with pytest.raises(http_probe._Stale):
        await exchange([], reused=True, close_after=True)
    with pytest.raises(httpx2.RemoteProtocolError, match="without an answer"):
        await exchange([], reused=False, close_after=True)


async def test_what_is_not_http_is_a_protocol_error() -> None:
    with pytest.raises(httpx2.RemoteProtocolError, match=r"did not answer with HTTP/1\.1"):
        await exchange([b"SSH-2.0-OpenSSH_9.6\r\n\r\n"])


def test_an_h11_connection_after_a_request_reads_an_answer_of_any_framing() -> None:
    for answer, body in ((CHUNKED, BODY), (framed(), BODY)):
        conn = http1.h11_after_request()
        conn.receive_data(answer)
        events = []
        while (event := conn.next_event()) is not h11.NEED_DATA:
            events.append(event)
            if isinstance(event, h11.EndOfMessage):
                break
        assert isinstance(events[0], h11.Response) and events[0].status_code == 200
        assert b"".join(bytes(e.data) for e in events if isinstance(e, h11.Data)) == body
        assert conn.our_state is h11.DONE and conn.their_state is h11.DONE
