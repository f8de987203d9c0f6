"""The health probe of a plain-HTTP 2026-07-28 connection: h11 over shared keep-alive sockets
(real sockets, real clock; the server side is a scripted HTTP/1.1 server, so that every answer
a server could give, and every way it could drop a connection, can be given on purpose)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
import trio
from _http_script import ERROR, OK, RESULT, Answer, ScriptedHttpServer, refused_url
from mcp.shared.exceptions import MCPError

import trio_mcp
from trio_mcp._transports import base, http, http_probe


@asynccontextmanager
async def probing(
    server: ScriptedHttpServer, *, headers: dict[str, str] | None = None, max_bytes: int = 1 << 20
) -> AsyncIterator[tuple[http_probe.PlainDiscoverProbe, http.HttpPool, base.Link]]:
    """``server`` running, and a plain probe of it through a pool, closed afterwards."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            pool = http.HttpPool()
            link = base.Link("web")
            url = httpx2.URL(server.url)
            sockets = pool.probe_sockets(server.host, server.port)
            probe = http_probe.PlainDiscoverProbe(sockets, url, headers or {}, link, max_bytes)
            try:
                yield probe, pool, link
            finally:
                await pool.aclose()
                nursery.cancel_scope.cancel()


ANSWERS = [
    (OK, None),
    ((200, "application/json; charset=utf-8", RESULT), None),
    ((200, "text/event-stream", f"event: message\ndata: {RESULT}\n\n"), None),
    ((200, "text/event-stream", f"event: message\ndata: {ERROR}\n\n"), (-32603, "overloaded")),
    ((200, "text/event-stream", ""), (-32000, "SSE stream ended without a response")),
    (
        (200, "application/json", '{"jsonrpc": "2.0", "id": "ID"}'),
        (-32600, "server/discover answered without a result"),
    ),
    ((200, "text/plain", "hello"), (-32600, "Unexpected content type: text/plain")),
    ((202, None, ""), (-32600, "server answered server/discover with HTTP 202")),
    ((400, "application/json", ERROR), (-32603, "overloaded")),
    ((404, None, ""), (-32601, "Not Found")),
    ((503, "text/html", "<h1>down</h1>"), (-32603, "Server returned an error response")),
]


async def probe_answered(answer: Answer, *, plain: bool) -> None:
    """One probe of a server that gives ``answer``: the plain probe over a socket, or the probe
    through an ``httpx2`` client (an in-process handler)."""
    if plain:
        error: MCPError | None = None
        async with probing(ScriptedHttpServer(answer=lambda connection, request: answer)) as (probe, _, link):
            try:
                await probe("2026-07-28")
            except MCPError as exc:
                error = exc  # raised below, not through the server's nursery
            assert link.http_status == (answer[0] if answer[0] >= 400 else None)
            assert not link.dead.is_set()
        if error is not None:
            raise error
        return

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent = json.loads(request.content)
        assert (sent["method"], request.headers["mcp-method"]) == ("server/discover", "server/discover")
        assert request.headers["mcp-protocol-version"] == "2026-07-28"
        assert sent["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] == "2026-07-28"
        status, content_type, body = answer
        headers = {"content-type": content_type} if content_type else {}
        return httpx2.Response(status, headers=headers, content=body.replace("ID", sent["id"]).encode())

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as client:  # type: ignore[arg-type]
        await http_probe.DiscoverProbe(client, "http://mcp.test/mcp")("2026-07-28")


@pytest.mark.parametrize("plain", [True, False], ids=["plain", "httpx2"])
@pytest.mark.parametrize(("answer", "raised"), ANSWERS)
async def test_a_probe_raises_what_the_sdk_would(
    answer: Answer, raised: tuple[int, str] | None, plain: bool
) -> None:
    """One POST, no SDK session: success is a JSON-RPC result for this request (a JSON body or an
    event stream); anything else raises the ``MCPError`` the SDK's transport would make of it,
    so a failed probe is classified as before. The plain probe and the probe through httpx2
    end alike, and the plain one records an HTTP error status on the connection as its client
    would."""
    if raised is None:
        await probe_answered(answer, plain=plain)
    else:
        with pytest.raises(MCPError) as info:
            await probe_answered(answer, plain=plain)
        assert (info.value.code, info.value.error.message) == raised


async def test_the_plain_probe_sends_server_discover_with_the_connection_headers() -> None:
    """The POST carries what the SDK's would (method and version headers, the discover request
    with its _meta) and the connection's own headers, without letting them replace ours."""
    server = ScriptedHttpServer()
    configured = {"authorization": "Bearer t0ken", "X-Team": "blue", "Accept": "text/html"}
    async with probing(server, headers=configured) as (probe, _, _):
        await probe("2026-07-28")
        await probe("2026-07-28")
    (_, first, headers), (_, second, _) = server.requests
    assert first["method"] == "server/discover"
    assert first["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] == "2026-07-28"
    assert first["id"] != second["id"]
    assert headers["mcp-method"] == "server/discover"
    assert headers["mcp-protocol-version"] == "2026-07-28"
    assert headers["accept"] == "application/json, text/event-stream"
    assert headers["host"] == f"127.0.0.1:{server.port}"
    assert (headers["authorization"], headers["x-team"]) == ("Bearer t0ken", "blue")


async def test_an_event_stream_left_open_after_the_answer_ends_the_probe_at_the_answer() -> None:
    """The answer came as an event, and the server keeps the stream open: the probe succeeds at
    once (not at its deadline), and its socket, mid-answer, is closed rather than reused."""
    events = (200, "text/event-stream", f"event: message\ndata: {RESULT}\n\n")
    server = ScriptedHttpServer(answer=lambda connection, request: events, hold_open=True)
    async with probing(server) as (probe, pool, link):
        with trio.fail_after(2):
            await probe("2026-07-28")
        await server.wait_closed(1)
        assert pool.probe_sockets("127.0.0.1", server.port).idle == 0
        assert not link.dead.is_set()


async def test_an_ipv6_server_is_named_in_brackets() -> None:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as probe_socket:
            probe_socket.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    server = ScriptedHttpServer(host="::1")
    async with probing(server) as (probe, _, _):
        await probe("2026-07-28")
    [(_, _, headers)] = server.requests
    assert headers["host"] == f"[::1]:{server.port}"


async def test_probes_of_one_origin_take_turns_on_one_keep_alive_socket() -> None:
    """Probe after probe reuses one socket: one connection for the lot, kept idle between."""
    server = ScriptedHttpServer()
    async with probing(server) as (probe, pool, _):
        other = http_probe.PlainDiscoverProbe(
            pool.probe_sockets("127.0.0.1", server.port), httpx2.URL(server.url), {}, base.Link("other")
        )
        for _ in range(3):
            await probe("2026-07-28")
            await other("2026-07-28")
        assert server.connections == 1
        assert pool.probe_sockets("127.0.0.1", server.port).idle == 1
    await server.wait_closed(1)  # closed with the pool


async def test_a_keep_alive_socket_the_server_closed_is_replaced_without_a_failure() -> None:
    """The server closed the idle socket as the probe went out on it (its keep-alive timeout):
    the request was not taken, so it goes out again on a new socket, and the probe succeeds
    without marking the connection."""
    server = ScriptedHttpServer(answer=lambda connection, request: OK if len(server.requests) != 2 else None)
    async with probing(server) as (probe, _, link):
        await probe("2026-07-28")
        await probe("2026-07-28")
        assert [connection for connection, _, _ in server.requests] == [0, 0, 1]
        assert not link.dead.is_set()


async def test_a_fresh_socket_dropped_without_an_answer_fails_the_probe() -> None:
    """A new socket dropped with no answer is the server's failure: no second try; the
    connection is marked as its transport would (a transport error)."""
    server = ScriptedHttpServer(answer=lambda connection, request: None)
    async with probing(server) as (probe, pool, link):
        with pytest.raises(httpx2.TransportError):
            await probe("2026-07-28")
        assert server.connections == 1
        assert link.exit_reason is not None and link.exit_reason[0] == "transport_error"
        assert pool.probe_sockets("127.0.0.1", server.port).idle == 0


async def test_a_refused_connection_fails_the_probe_as_a_connect_error() -> None:
    from trio_mcp._errors import classify

    with trio.fail_after(5):
        url = httpx2.URL(await refused_url())
        pool = http.HttpPool()
        link = base.Link("web")
        probe = http_probe.PlainDiscoverProbe(pool.probe_sockets(url.host, url.port or 80), url, {}, link)
        with pytest.raises(httpx2.ConnectError) as info:
            await probe("2026-07-28")
        await pool.aclose()
    assert classify(info.value).category == "connect_error"
    assert link.exit_reason is not None and link.exit_reason[0] == "connect_error"


async def test_an_answer_over_the_message_bound_is_refused_and_its_socket_closed() -> None:
    big = '{"jsonrpc": "2.0", "id": "ID", "result": {"pad": "' + "x" * 4096 + '"}}'
    server = ScriptedHttpServer(answer=lambda connection, request: (200, "application/json", big))
    async with probing(server, max_bytes=1024) as (probe, pool, link):
        with pytest.raises(http_probe.MessageRefusedError, match=r"message over 1 KiB \(max_message_bytes\)"):
            await probe("2026-07-28")
        assert link.exit_reason == ("protocol_error", "message over 1 KiB (max_message_bytes)")
        assert pool.probe_sockets("127.0.0.1", server.port).idle == 0
        await server.wait_closed(1)


async def test_probes_of_a_busy_origin_wait_their_turn_and_then_reuse_its_sockets() -> None:
    """At most PROBES_IN_FLIGHT probes of one origin are under way: the others wait their turn and
    go out on the sockets given back, so a slow origin meets a bounded number of probes and no
    new sockets."""
    bound = http_probe.PROBES_IN_FLIGHT
    server = ScriptedHttpServer(gate=trio.Event())
    order: list[int] = []
    async with probing(server) as (probe, pool, link):

        async def one(index: int) -> None:
            await probe("2026-07-28")
            order.append(index)

        async with trio.open_nursery() as nursery:
            for index in range(bound + 8):
                nursery.start_soon(one, index)
                await trio.testing.wait_all_tasks_blocked()
            for _ in range(100):  # until the first ones have arrived
                if len(server.requests) == bound:
                    break
                await trio.sleep(0.01)
            await trio.sleep(0.1)
            assert (server.connections, len(server.requests), order) == (bound, bound, [])
            assert server.gate is not None
            server.gate.set()
        assert sorted(order) == list(range(bound + 8))
        ids = [sent["id"] for _, sent, _ in server.requests]  # a probe's ids count its calls
        assert sorted(ids[bound:]) == sorted(ids)[bound:]  # the waiting ones went after the others
        assert server.connections == bound  # the waiting ones reused sockets given back
        assert pool.probe_sockets("127.0.0.1", server.port).idle == bound
        assert not link.dead.is_set()


async def test_a_probe_waiting_its_turn_is_bounded_by_its_own_deadline() -> None:
    """A hung origin holds every turn: a probe waiting for one still ends at its deadline, so a
    server behind the others is seen down as soon as they are."""
    bound = http_probe.PROBES_IN_FLIGHT
    server = ScriptedHttpServer(gate=trio.Event())  # never set: no answer ever comes
    ended: list[float] = []
    async with probing(server) as (probe, _, link):

        async def one() -> None:
            with trio.move_on_after(1.0):
                await probe("2026-07-28")
            ended.append(trio.current_time())

        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(bound + 4):
                nursery.start_soon(one)
        assert len(ended) == bound + 4
        # Nobody waited for the ones ahead of it to time out: that would end the last ones after
        # 2 s (their wait, then their own deadline); the slack is for a loaded machine.
        assert max(ended) - started < 1.9
        assert server.connections == bound
        assert not link.dead.is_set()


async def test_probes_through_httpx2_take_the_origins_turns_too() -> None:
    """A server probed through its httpx2 client (TLS, an auth flow, ...) takes a turn of its
    origin like a plain one: a slow origin meets at most PROBES_IN_FLIGHT probes at once, and the
    others go out as turns are given back."""
    bound = http_probe.PROBES_IN_FLIGHT
    gate = trio.Event()
    under_way = most = 0

    async def handler(request: httpx2.Request) -> httpx2.Response:
        nonlocal under_way, most
        under_way += 1
        most = max(most, under_way)
        await gate.wait()
        under_way -= 1
        sent = json.loads(request.content)
        return httpx2.Response(200, json={"jsonrpc": "2.0", "id": sent["id"], "result": {}})

    pool = http.HttpPool()
    turns = pool.probe_turns(("https", "mcp.test", None))
    assert pool.probe_turns(("https", "mcp.test", 443)) is turns  # one set per origin
    plain = pool.probe_sockets("mcp.test", 80).turns
    assert pool.probe_turns(("http", "mcp.test", None)) is plain  # plain or not
    done = 0
    with trio.fail_after(5):
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as client:  # type: ignore[arg-type]
            probe = http_probe.DiscoverProbe(client, "https://mcp.test/mcp", turns=turns)

            async def one() -> None:
                nonlocal done
                await probe("2026-07-28")
                done += 1

            async with trio.open_nursery() as nursery:
                for _ in range(bound + 8):
                    nursery.start_soon(one)
                await trio.testing.wait_all_tasks_blocked()
                assert (most, done) == (bound, 0)
                gate.set()
    assert (most, done) == (bound, bound + 8)
    await pool.aclose()


async def test_a_probe_cancelled_while_waiting_closes_its_socket() -> None:
    """The probe's deadline passes while the server says nothing: the socket (in an unknown
    state) is closed at once (the server reads its end), not kept for the next probe, and the
    connection is not marked."""

    class SilentServer(ScriptedHttpServer):
        async def _handle(self, stream: trio.SocketStream) -> None:
            self.connections += 1
            async with stream:
                await stream.receive_some()  # the request, never answered
                while await stream.receive_some():
                    pass
            self._end()  # the client closed its socket

    server = SilentServer()
    async with probing(server) as (probe, pool, link):
        with trio.move_on_after(0.2) as scope:
            await probe("2026-07-28")
        assert scope.cancelled_caught
        await server.wait_closed(1)
        assert pool.probe_sockets("127.0.0.1", server.port).idle == 0
        assert not link.dead.is_set()


def closed(sock: Any) -> bool:
    return bool(sock.stream.socket.fileno() == -1)


async def test_idle_sockets_older_than_the_keep_alive_bound_are_closed_not_used() -> None:
    """A server closes idle keep-alive connections after its own timeout: a socket idle for
    longer than :data:`PROBE_SOCKET_IDLE_SECONDS` is closed rather than tried (and does not
    linger behind fresher ones), the most recently used is taken first, and at most
    :data:`PROBE_SOCKETS_IDLE` are kept."""
    expiry, most = http_probe.PROBE_SOCKET_IDLE_SECONDS, http_probe.PROBE_SOCKETS_IDLE
    sockets = http_probe.ProbeSockets("127.0.0.1", 1, http_probe.probe_turns())
    pairs = [trio.socket.socketpair() for _ in range(most + 3)]
    made = [http_probe._ProbeSocket(trio.SocketStream(a)) for a, _ in pairs]
    for sock in made[:-1]:
        sockets.give_back(sock, 100.0)
    assert sockets.idle == most
    assert [closed(sock) for sock in made[most:-1]] == [True, True]  # over the bound
    # Given back later: the ones idle since 100.0 are too old by now, and closed.
    sockets.give_back(made[-1], 100.0 + expiry)
    assert sockets.idle == 1
    assert all(closed(sock) for sock in made[:-1])
    assert sockets.take(100.0 + 2 * expiry - 0.5) is made[-1]
    sockets.give_back(made[-1], 100.0 + 2 * expiry)
    assert sockets.take(100.0 + 3 * expiry) is None
    assert closed(made[-1]) and sockets.idle == 0
    for _, b in pairs:
        b.close()


async def test_the_most_recently_used_idle_socket_is_taken_first() -> None:
    sockets = http_probe.ProbeSockets("127.0.0.1", 1, http_probe.probe_turns())
    pairs = [trio.socket.socketpair() for _ in range(2)]
    older, newer = (http_probe._ProbeSocket(trio.SocketStream(a)) for a, _ in pairs)
    sockets.give_back(older, 100.0)
    sockets.give_back(newer, 101.0)
    assert sockets.take(102.0) is newer
    assert sockets.take(102.0) is older
    assert sockets.take(102.0) is None
    for sock in (older, newer):
        sock.stream.socket.close()  # type: ignore[attr-defined]
    for _, b in pairs:
        b.close()


async def test_a_plain_http_server_is_probed_without_httpx_and_others_through_it() -> None:
    """A plain ``http://`` server without an auth flow gets the plain probe; a server that
    needs httpx2 (TLS, an auth flow, address checks) keeps the probe through its client."""
    from trio_mcp._transports import Link, open_transport

    url = "http://127.0.0.1:9/mcp"
    configs = [
        trio_mcp.HttpTransport(url=url),
        trio_mcp.HttpTransport(url="https://127.0.0.1:9/mcp"),
        trio_mcp.HttpTransport(url=url, auth=trio_mcp.BearerAuth(token="t0ken")),
        trio_mcp.HttpTransport(url=url, public_only=True),
        trio_mcp.HttpTransport(url="http://user:secret@127.0.0.1:9/mcp"),
    ]
    pool = http.HttpPool()
    kinds = []
    with trio.fail_after(5):
        for config in configs:
            link = Link("web")
            async with open_transport(config, link, http_pool=pool):  # nothing is sent yet
                kinds.append(type(link.discover_probe))
        await pool.aclose()
    assert kinds == [http_probe.PlainDiscoverProbe] + [http_probe.DiscoverProbe] * 4


DISCOVERED = {
    "supportedVersions": ["2026-07-28"],
    "capabilities": {"tools": {}},
    "ttlMs": 0,
    "cacheScope": "private",
    "resultType": "complete",
}
LISTED = {
    "tools": [
        {"name": "kept", "inputSchema": {"type": "object"}},
        # A malformed x-mcp-header designation: the SDK drops the tool from the listing.
        {"name": "dropped", "inputSchema": {"type": "object", "properties": {"a": {"x-mcp-header": ""}}}},
    ],
    "ttlMs": 0,
    "cacheScope": "private",
    "resultType": "complete",
}


def scripted_mcp(connection: int, request: dict[str, Any]) -> Answer:
    result = {"server/discover": DISCOVERED, "tools/list": LISTED}.get(request["method"])
    if result is None:
        return (200, "application/json", ERROR)
    return (200, "application/json", json.dumps({"jsonrpc": "2.0", "id": "ID", "result": result}))


async def test_a_session_never_entered_sends_its_handshake_as_plain_posts() -> None:
    """An SDK session over the sessionless dispatcher: ``server/discover`` and a listing go as
    one POST each, stamped by the session itself (its headers and ``_meta``), and their answers
    are checked and adopted by the session's own code (the malformed tool is dropped)."""
    from mcp.client.session import ClientSession

    server = ScriptedHttpServer(answer=scripted_mcp)
    async with probing(server) as (_, pool, link):
        http.plain_http(trio_mcp.HttpTransport(url=server.url), link, pool)
        assert link.sessionless is not None
        session = ClientSession(dispatcher=link.sessionless)  # type: ignore[arg-type]
        result = await session.discover()
        assert session.protocol_version == "2026-07-28" and result.capabilities.tools is not None
        listed = await session.list_tools()
        assert [tool.name for tool in listed.tools] == ["kept"]
        with pytest.raises(RuntimeError, match="tools/call needs a session"):
            await session.call_tool("kept", {})
        with pytest.raises(MCPError, match="overloaded"):
            await session.list_prompts()
    methods = [sent["method"] for _, sent, _ in server.requests]
    assert methods == ["server/discover", "tools/list", "prompts/list"]
    _, listing, headers = server.requests[1]
    assert (headers["mcp-method"], headers["mcp-protocol-version"]) == ("tools/list", "2026-07-28")
    assert listing["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] == "2026-07-28"
    assert "io.modelcontextprotocol/clientCapabilities" in listing["params"]["_meta"]
    assert len({connection for connection, _, _ in server.requests}) == 1  # one keep-alive socket


def discover_error(code: int, data: Any = None) -> str:
    error = {"code": code, "message": "no", **({"data": data} if data is not None else {})}
    return json.dumps({"jsonrpc": "2.0", "id": "ID", "error": error})


@pytest.mark.parametrize(
    ("mode", "body", "outcome"),
    [
        ("auto", json.dumps({"jsonrpc": "2.0", "id": "ID", "result": DISCOVERED}), True),
        ("auto", discover_error(-32601), False),
        ("auto", discover_error(-32022, {"supported": ["2025-11-25"]}), False),
        ("auto", discover_error(-32022, {"supported": ["2099-01-01"]}), MCPError),
        (
            "auto",
            json.dumps(
                {"jsonrpc": "2.0", "id": "ID", "result": {**DISCOVERED, "supportedVersions": ["2099-01-01"]}}
            ),
            False,
        ),
        ("modern", discover_error(-32601), MCPError),
    ],
    ids=[
        "adopted",
        "unknown-method",
        "names-a-2025-version",
        "names-only-unknown-versions",
        "no-shared-version",
        "modern",
    ],
)
async def test_a_discover_without_a_session_falls_back_as_the_handshake_would(
    mode: Any, body: str, outcome: bool | type[Exception]
) -> None:
    """Adopted, or handed to a session for ``initialize`` alone (``False``) exactly where the
    handshake through a session would fall back to it; raised where it would raise."""
    from mcp.client.session import ClientSession

    from trio_mcp._session import discover_without_session

    server = ScriptedHttpServer(answer=lambda connection, request: (200, "application/json", body))
    async with probing(server) as (_, pool, link):
        http.plain_http(trio_mcp.HttpTransport(url=server.url), link, pool)
        session = ClientSession(dispatcher=link.sessionless)  # type: ignore[arg-type]
        if isinstance(outcome, bool):
            assert await discover_without_session(session, mode) is outcome
        else:
            with pytest.raises(outcome):
                await discover_without_session(session, mode)
