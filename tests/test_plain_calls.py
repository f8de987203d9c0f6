"""The calls of a plain-HTTP 2026-07-28 connection, each one POST over h11 on the origin's
keep-alive sockets (``http_probe.PlainCalls``): what the answer's event stream carries, what a
failure says about whether the request was sent, and when a request is sent again (real
sockets, real clock; the server side is a scripted HTTP/1.1 server so that each answer and each
dropped connection is given on purpose)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
import trio
import trio.testing
from _http_script import Answer, ScriptedHttpServer, refused_url, serving
from mcp.shared.exceptions import MCPError

from trio_mcp._transports import base, http
from trio_mcp._transports.http_probe import PlainCalls
from trio_mcp._transports.wire import REQUEST_TIMEOUT

CALL_RESULT = '{"jsonrpc": "2.0", "id": "ID", "result": {"content": [{"type": "text", "text": "done"}]}}'


def event(message: str) -> str:
    return f"event: message\ndata: {message}\n\n"


@asynccontextmanager
async def plain_calls(url: str) -> AsyncIterator[tuple[PlainCalls, base.Link]]:
    pool = http.HttpPool()
    try:
        link = base.Link("web")
        parsed = httpx2.URL(url)
        sockets = pool.probe_sockets(parsed.host, parsed.port or 80)
        yield PlainCalls(sockets, parsed, {"x-server": "web"}, link), link
    finally:
        await pool.aclose()


def call_params() -> dict[str, Any]:
    return {"name": "work", "arguments": {}}


async def test_an_event_stream_answer_gives_its_progress_and_notifications_as_they_arrive() -> None:
    """Progress for the request goes to the caller's ``on_progress`` (the request carries its
    id as the progress token), every other notification to ``on_notification``, and the
    answer at the end of the stream is the result."""
    stream = "".join(
        [
            event(
                '{"jsonrpc": "2.0", "method": "notifications/progress", '
                '"params": {"progressToken": "ID", "progress": 1, "total": 2, "message": "half"}}'
            ),
            event(
                '{"jsonrpc": "2.0", "method": "notifications/progress", '
                '"params": {"progressToken": "someone-else", "progress": 9}}'
            ),
            event('{"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}'),
            event(CALL_RESULT),
        ]
    )
    answer: Answer = (200, "text/event-stream", stream)
    progress: list[tuple[Any, ...]] = []
    heard: list[dict[str, Any]] = []

    async def on_progress(*args: Any) -> None:
        progress.append(args)

    async def on_notification(message: dict[str, Any]) -> None:
        heard.append(message)

    with trio.fail_after(10):
        async with (
            serving(ScriptedHttpServer(answer=lambda connection, request: answer)) as server,
            plain_calls(server.url) as (calls, link),
        ):
            calls.on_notification = on_notification
            opts = {"on_progress": on_progress, "headers": {"mcp-method": "tools/call"}}
            result = await calls.send_raw_request("tools/call", call_params(), opts)
    assert result == {"content": [{"type": "text", "text": "done"}]}
    assert progress == [(1, 2, "half")]
    assert [m["method"] for m in heard] == ["notifications/tools/list_changed"]
    [(_, sent, headers)] = server.requests
    assert sent["method"] == "tools/call"
    assert sent["params"]["_meta"]["progressToken"] == sent["id"]
    assert headers["mcp-method"] == "tools/call" and headers["x-server"] == "web"
    assert not link.dead.is_set()


async def test_a_json_rpc_error_or_an_http_error_is_the_requests_own_and_leaves_the_connection_up() -> None:
    answers: list[Answer] = [
        (
            200,
            "application/json",
            '{"jsonrpc": "2.0", "id": "ID", "error": {"code": -32602, "message": "no"}}',
        ),
        (500, "text/plain", "boom"),
    ]
    with trio.fail_after(10):
        async with (
            serving(
                ScriptedHttpServer(answer=lambda connection, request: answers[len(server.requests) - 1])
            ) as server,
            plain_calls(server.url) as (calls, link),
        ):
            with pytest.raises(MCPError) as first:
                await calls.send_raw_request("tools/call", call_params())
            with pytest.raises(MCPError) as second:
                await calls.send_raw_request("tools/call", call_params())
    assert (first.value.code, first.value.error.message) == (-32602, "no")
    assert second.value.code == -32603
    assert link.http_status == 500
    assert not link.dead.is_set()
    assert server.connections == 1  # both on one keep-alive socket


async def test_a_request_no_socket_could_be_opened_for_is_not_sent() -> None:
    """The server is down: the failure says the request never reached it (a tool with side
    effects may then be tried elsewhere), and the connection is dead."""
    marker = base.SentMarker()
    token = base.sent_marker.set(marker)
    try:
        async with plain_calls(await refused_url()) as (calls, link):
            with pytest.raises(httpx2.ConnectError):
                await calls.send_raw_request("tools/call", call_params())
    finally:
        base.sent_marker.reset(token)
    assert not marker.delivered
    assert link.dead.is_set()


async def test_a_request_written_and_dropped_without_an_answer_may_have_run() -> None:
    marker = base.SentMarker()
    token = base.sent_marker.set(marker)
    try:
        with trio.fail_after(10):
            async with (
                serving(ScriptedHttpServer(answer=lambda connection, request: None)) as server,
                plain_calls(server.url) as (calls, link),
            ):
                with pytest.raises(httpx2.HTTPError):
                    await calls.send_raw_request("tools/call", call_params())
    finally:
        base.sent_marker.reset(token)
    assert marker.delivered
    assert len(server.requests) == 1  # not sent again
    assert link.dead.is_set()


async def test_a_timeout_closes_the_socket_which_cancels_the_request_at_the_server() -> None:
    """On this wire a request is cancelled by closing its answer's stream: the socket is
    closed (not given back) and the caller gets the SDK's timeout error; the connection stays
    up."""
    gate = trio.Event()  # the answer waits for it
    with trio.fail_after(10):
        async with (
            serving(ScriptedHttpServer(gate=gate)) as server,
            plain_calls(server.url) as (calls, link),
        ):
            with pytest.raises(MCPError) as info:
                await calls.send_raw_request("tools/call", call_params(), {"timeout": 0.2})
            assert calls._sockets.idle == 0
            gate.set()  # answering late, the server finds the connection closed
            await server.wait_closed(1)
    assert info.value.code == REQUEST_TIMEOUT
    assert not link.dead.is_set()


async def test_an_idle_socket_the_server_closed_is_not_used_for_a_call() -> None:
    """A restarted server closed every keep-alive socket: a call checks the one it takes and
    opens another, so it is sent once and answered."""
    answer: Answer = (200, "application/json", CALL_RESULT)
    with trio.fail_after(10):
        async with (
            serving(ScriptedHttpServer(answer=lambda connection, request: answer)) as server,
            plain_calls(server.url) as (calls, link),
        ):
            await calls.send_raw_request("tools/call", call_params())
            [idle] = list(calls._sockets._idle)
            await server.wait_requests(1)
            # The server side ends that connection (as a restart does), the socket stays idle here.
            await server_close_all(server)
            result = await calls.send_raw_request("tools/call", call_params())
    assert result["content"][0]["text"] == "done"
    assert [connection for connection, _, _ in server.requests] == [0, 1]
    assert idle.stream.socket.fileno() == -1
    assert not link.dead.is_set()


async def server_close_all(server: ScriptedHttpServer) -> None:
    """Make ``server`` close its open connections and wait until they are closed."""
    server.close_all()
    await server.wait_closed(1)
    await trio.sleep(0.05)  # the FIN on its way to this side


async def test_requests_under_way_when_the_session_closes_fail_as_connection_closed() -> None:
    """The connection was dropped while a call waited for its answer: the call fails as an SDK
    session's do when it closes (it may have run: it was sent), and its socket is closed."""
    marker = base.SentMarker()
    outcome: list[BaseException] = []
    gate = trio.Event()

    async def call(calls: PlainCalls) -> None:
        base.sent_marker.set(marker)
        try:
            await calls.send_raw_request("tools/call", call_params())
        except MCPError as exc:
            outcome.append(exc)

    with trio.fail_after(10):
        async with (
            serving(ScriptedHttpServer(gate=gate)) as server,
            plain_calls(server.url) as (calls, link),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(call, calls)
            await server.wait_requests(1)
            calls.abandon()
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
            await server.wait_closed(1)
    [error] = outcome
    assert isinstance(error, MCPError) and (error.code, error.error.message) == (-32000, "Connection closed")
    assert marker.delivered
    assert calls._sockets.idle == 0
    assert not link.dead.is_set()  # the connection was closed on purpose, not found dead
