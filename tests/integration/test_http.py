"""Real streamable HTTP servers (the demo server under hypercorn's trio worker), real clock."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from _support import (
    HttpDemoServer,
    PostFilter,
    free_port,
    policy,
    serve_asgi,
    stdio_demo,
    text_of,
    wait_probed,
)
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ToolListChangedNotification

import trio_mcp
from trio_mcp import ServerSnapshot, ServerStatus
from trio_mcp.demo_server import build_server

pytestmark = pytest.mark.integration

ERAS = [
    pytest.param("legacy", "2025-11-25", "legacy", id="legacy"),
    pytest.param("auto", "2026-07-28", "modern", id="auto"),
]


def healthy(snap: ServerSnapshot) -> bool:
    return snap.status is ServerStatus.HEALTHY and snap.session.active


@pytest.mark.parametrize(("protocol", "version", "era"), ERAS)
async def test_stopped_server_is_detected_and_reconnected(
    nursery: trio.Nursery, protocol: str, version: str, era: str
) -> None:
    """Connect and probe; stop the server: the probe notices (connect_error) and the server
    becomes unreachable; restart it on the same port: the supervisor reconnects by itself."""
    with trio.fail_after(30):
        server = HttpDemoServer(nursery, "web")
        await server.start()
        async with trio_mcp.open_manager([server.config(policy(protocol=protocol))]) as manager:
            snap = await manager.wait_for("web", healthy)
            assert snap.capabilities is not None
            assert snap.capabilities.protocol_version == version
            assert snap.capabilities.era == era
            assert snap.capabilities.server_name == "web"
            first_session = snap.session.session_id
            await wait_probed(manager, "web")
            assert text_of(await manager.call_tool("echo", {"text": "hi"})) == "hi"

            await server.stop()
            stopped_at = trio.current_time()
            down = await manager.wait_for("web", lambda s: s.status is not ServerStatus.HEALTHY)
            assert trio.current_time() - stopped_at < 2.0  # one health interval, plus slack
            assert down.status is ServerStatus.DEGRADED
            assert down.last_error_category in ("connect_error", "transport_error")
            # Reconnect attempts keep failing while it is down.
            down = await manager.wait_for("web", lambda s: s.status is ServerStatus.UNREACHABLE)
            assert down.last_error_category == "connect_error"
            assert not down.session.active

            await server.start()
            back = await manager.wait_for("web", lambda s: s.session.active)
            assert back.session.session_id != first_session
            assert back.status is ServerStatus.RECOVERED
            assert text_of(await manager.call_tool("whoami")) == "web"
            await manager.wait_for("web", healthy)

            events = manager.connection_events(server="web")
            assert [(e.from_status, e.to_status) for e in events] == [
                ("unknown", "healthy"),
                ("healthy", "degraded"),
                ("degraded", "unreachable"),
                ("unreachable", "recovered"),
                ("recovered", "healthy"),
            ]
            assert events[1].category in ("connect_error", "transport_error")
            assert events[1].reason.startswith("connection lost")


@pytest.mark.parametrize(
    ("protocol", "version", "era"),
    [
        ERAS[0],
        ERAS[1],
    ],
)
async def test_restart_between_calls(nursery: trio.Nursery, protocol: str, version: str, era: str) -> None:
    """The server restarts between two calls, unnoticed (no probe in between). A legacy session
    is gone (HTTP 404 'Session not found' → session_expired): the manager re-handshakes and
    retries once, and nothing ran twice. A 2026-07-28 connection has no session to lose."""
    with trio.fail_after(30):
        server = HttpDemoServer(nursery, "web")
        await server.start()
        config = server.config(policy(protocol=protocol, health_interval=60))
        async with trio_mcp.open_manager([config]) as manager:
            snap = await manager.wait_for("web", healthy)
            assert snap.protocol_version == version
            first_session = snap.session.session_id
            assert text_of(await manager.call_tool("echo", {"text": "before"})) == "before"

            await server.stop()
            await server.start()

            outcome = await manager.invoke(
                "tools/call", "echo", {"text": "after"}, preferred=["web"], timeout=10
            )
            assert text_of(outcome.result) == "after"
            steps = [(a.stage, a.success, a.category, a.sent) for a in outcome.attempts]
            if era == "legacy":
                assert steps == [
                    ("invoke", False, "session_expired", False),
                    ("handshake", True, None, False),
                    ("invoke", True, None, True),
                ]
                assert manager.server("web").session.session_id != first_session
            else:
                assert steps == [("invoke", True, None, True)]
                assert manager.server("web").session.session_id == first_session


async def test_demo_server_cli_over_http() -> None:
    """``python -m trio_mcp.demo_server --http PORT`` serves streamable HTTP at /mcp."""
    with trio.fail_after(30):
        port = free_port()
        command = [sys.executable, "-m", "trio_mcp.demo_server", "--name", "cli", "--http", str(port)]
        process = await trio.lowlevel.open_process(command, stderr=subprocess.DEVNULL)
        try:
            config = trio_mcp.ServerConfig(
                name="cli",
                transport=trio_mcp.HttpTransport(url=f"http://127.0.0.1:{port}/mcp"),
                policy=policy(),
            )
            async with trio_mcp.open_manager([config]) as manager:
                await manager.wait_for("cli", lambda s: s.session.active)
                assert text_of(await manager.call_tool("whoami")) == "cli"
                assert text_of(await manager.read_resource("demo://readme")) == (
                    "This is cli, a trio_mcp demo server."
                )
                prompt = await manager.get_prompt("greet", {"name": "Ada"})
                assert "Ada" in prompt.messages[0].content.text  # type: ignore[union-attr]
        finally:
            process.terminate()
            with trio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_refused_post_is_not_sent_so_a_side_effect_fails_over(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """The HTTP server is gone, unnoticed (no probe yet): the POST carrying a non-idempotent call
    cannot even connect, so the request provably never ran and failover to the backup is safe."""
    with trio.fail_after(30):
        server = HttpDemoServer(nursery, "web")
        await server.start()
        ledger = tmp_path / "ledger.txt"
        configs = [
            server.config(policy(health_interval=60)),
            stdio_demo("backup", ledger=ledger),
        ]
        async with trio_mcp.open_manager(configs) as manager:
            await manager.wait_for("web", healthy)
            await manager.wait_for("backup", healthy)
            await server.stop()
            outcome = await manager.invoke("tools/call", "charge", {"amount": 7}, preferred=["web", "backup"])
            assert outcome.server == "backup"
            first = outcome.attempts[0]
            assert (first.server, first.stage, first.sent) == ("web", "invoke", False)
            assert first.category == "connect_error"
            assert len(ledger.read_text().splitlines()) == 1  # charged once, on the backup


@asynccontextmanager
async def three_at_one_origin(url: str, *, bearer: bool) -> AsyncIterator[trio_mcp.Manager]:
    """A manager of the servers ``a``, ``b`` and ``c`` at ``url``, each with a header of its own
    (and a token of its own: an auth flow, which goes through ``httpx2``), all healthy."""
    configs = [
        trio_mcp.ServerConfig(
            name=name,
            transport=trio_mcp.HttpTransport(
                url=url,
                headers={"x-server": name},
                auth=trio_mcp.BearerAuth(token=f"token-{name}") if bearer else None,
            ),
            policy=policy(health_interval=60),
        )
        for name in ("a", "b", "c")
    ]
    async with trio_mcp.open_manager(configs) as manager:
        for name in ("a", "b", "c"):
            await manager.wait_for(name, healthy)
        yield manager


async def test_servers_at_one_origin_share_a_pool_closed_with_the_manager(nursery: trio.Nursery) -> None:
    """Three servers at one URL that go through ``httpx2`` (an auth flow) lease one keep-alive
    pool (each connection keeps its own client, headers and auth); leaving the manager closes
    the pool and every socket in it."""
    with trio.fail_after(30):
        server = HttpDemoServer(nursery, "web")
        await server.start()
        async with three_at_one_origin(server.url, bearer=True) as manager:
            pool = manager._http_pool
            assert pool is not None
            assert pool.statistics() == {"origins": 1, "pools": 1, "leases": 3}
            for name in ("a", "b", "c"):
                result = await manager.call_tool("whoami", preferred=[name], failover="never")
                assert text_of(result) == "web"
            assert pool.statistics() == {"origins": 1, "pools": 1, "leases": 3}
            transport = pool.transport_for(("http", "127.0.0.1", server.port))
            connections = transport._pool.connections  # type: ignore[attr-defined]
            assert connections
            await manager.remove_server("c")
            assert pool.statistics() == {"origins": 1, "pools": 1, "leases": 2}
        assert pool.statistics() == {"origins": 0, "pools": 0, "leases": 0}
        assert all(connection.is_closed() for connection in connections)


async def test_plain_servers_at_one_origin_call_on_its_shared_sockets(nursery: trio.Nursery) -> None:
    """Three plain ``http://`` servers at one URL (2026-07-28, no auth flow) are handshaken and
    called without ``httpx2``: no pool is leased, calls go out on the origin's keep-alive
    sockets, which the next call reuses and leaving the manager closes."""
    with trio.fail_after(30):
        server = HttpDemoServer(nursery, "web")
        await server.start()
        async with three_at_one_origin(server.url, bearer=False) as manager:
            pool = manager._http_pool
            assert pool is not None
            sockets = pool.probe_sockets("127.0.0.1", server.port)
            opened = sockets.idle  # by the handshakes
            assert opened >= 1
            for name in ("a", "b", "c", "a", "b", "c"):
                result = await manager.call_tool("whoami", preferred=[name], failover="never")
                assert text_of(result) == "web"
                assert sockets.idle == opened  # a socket taken for the call and given back
            assert pool.statistics() == {"origins": 0, "pools": 0, "leases": 0}
            idle = list(sockets._idle)
        assert [sock.stream.socket.fileno() for sock in idle] == [-1] * opened


def announcing_server(name: str) -> MCPServer:
    """The demo server with two more tools: ``announce`` says that the tool list changed, and
    ``grow`` adds the tool ``late`` and says so."""
    server = build_server(name)

    async def late() -> str:
        return "late"

    @server.tool()
    async def announce(ctx: Context) -> str:
        await ctx.notify_tools_changed()
        return "announced"

    @server.tool()
    async def grow(ctx: Context) -> str:
        server.add_tool(late, name="late")
        await ctx.notify_tools_changed()
        return "grown"

    return server


async def test_a_plain_http_server_announces_list_changes_on_a_stream_held_outside_the_session(
    nursery: trio.Nursery,
) -> None:
    """A 2026-07-28 server over plain HTTP: its list-change stream is held by the transport, not
    by the SDK session. A tool it adds is routed to once it says so, without a new listing being
    asked for, and the user's message handler sees the notification as the session would give it."""
    notified: list[object] = []

    async def on_message(message: object) -> None:
        notified.append(message)

    with trio.fail_after(30):
        server = HttpDemoServer(nursery, "web", build=announcing_server)
        await server.start()
        async with trio_mcp.open_manager(
            [server.config(policy(health_interval=60))], session_options={"message_handler": on_message}
        ) as manager:
            await manager.wait_for("web", healthy)
            conn = manager._supervisors["web"].connection
            assert conn is not None and conn.link.listen_stream is not None
            # The stream is opened beside the connection: announce until it is heard.
            while not notified:
                await manager.call_tool("announce")
                await trio.sleep(0.05)
            assert all(isinstance(n, ToolListChangedNotification) for n in notified)
            await manager.list_tools()
            assert manager.candidates("tools/call", "late") == []

            await manager.call_tool("grow")
            for _ in range(500):  # until the notification is heard
                if manager.candidates("tools/call", "late") == ["web"]:
                    break
                await trio.sleep(0.01)
            assert text_of(await manager.call_tool("late")) == "late"
            assert [t.key for t in await manager.list_tools() if t.key == "late"] == ["late"]


class ListenClosedAtOnce(PostFilter):
    """Answers every ``subscriptions/listen`` with a result at once (the server's graceful close
    of the stream) and passes the rest through."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.listens = 0

    async def answer(self, sent: dict[str, Any], send: Any) -> bool:
        if sent.get("method") != "subscriptions/listen":
            return False
        self.listens += 1
        await self.reply(send, {"jsonrpc": "2.0", "id": sent["id"], "result": {}})
        return True


async def test_a_listen_stream_the_server_closes_at_once_is_asked_for_again_once_an_interval(
    nursery: trio.Nursery,
) -> None:
    """A server that ends every list-change stream as soon as it is asked for gets asked again
    once per health interval, not in a loop as fast as it answers."""
    app = ListenClosedAtOnce(build_server("web").streamable_http_app(host="127.0.0.1"))
    url = await serve_asgi(nursery, app)
    server = trio_mcp.ServerConfig(
        name="web",
        transport=trio_mcp.HttpTransport(url=url),
        policy=policy(health_interval=0.5),
    )
    with trio.fail_after(30):
        async with trio_mcp.open_manager([server]) as manager:
            await manager.wait_for("web", healthy)
            await trio.sleep(2.0)
            assert 2 <= app.listens <= 6  # one at once, then one per 0.5 s
            assert text_of(await manager.call_tool("echo", {"text": "hi"})) == "hi"


async def test_a_server_restarted_with_other_tools_is_listed_anew_on_the_same_connection(
    nursery: trio.Nursery,
) -> None:
    """A 2026-07-28 connection outlives its server's restart; the list-change stream does not,
    and losing it lists the catalogs again: the tools the restarted server offers are routed to,
    on the same connection, without anyone asking for a listing."""
    starts: list[str] = []

    def numbered(name: str) -> MCPServer:
        server = build_server(name)
        tool = f"tool{len(starts)}"
        starts.append(tool)

        async def answer() -> str:
            return tool

        server.add_tool(answer, name=tool)
        return server

    def listed_anew(manager: trio_mcp.Manager) -> bool:
        return manager.candidates("tools/call", "tool0") == [] and manager.candidates(
            "tools/call", "tool1"
        ) == ["web"]

    with trio.fail_after(30):
        server = HttpDemoServer(nursery, "web", build=numbered)
        await server.start()
        config = server.config(policy(health_interval=0.5, unreachable_threshold=100))
        async with trio_mcp.open_manager([config]) as manager:
            first = (await manager.wait_for("web", healthy)).session.session_id
            await manager.list_tools()
            assert manager.candidates("tools/call", "tool1") == []
            await server.stop()
            await server.start()
            for _ in range(500):  # until the catalog is listed again, by itself
                if listed_anew(manager):
                    break
                await trio.sleep(0.02)
            assert listed_anew(manager)
            assert text_of(await manager.call_tool("tool1")) == "tool1"
            assert manager.server("web").session.session_id == first
