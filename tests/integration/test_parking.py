"""Parked connections: an idle 2026-07-28 server over plain HTTP closes its SDK session while its
probes and its list-change stream go on, and the next use opens one again without a round trip.
Real SDK servers under hypercorn, real clock."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import trio
from _support import HttpDemoServer, PostFilter, policy, serve_asgi, text_of
from mcp.server.mcpserver import MCPServer
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.subscriptions import ToolsListChanged
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import trio_mcp
from trio_mcp import ServerSnapshot, ServerStatus
from trio_mcp.demo_server import build_server
from trio_mcp.metrics import FleetCollector

pytestmark = pytest.mark.integration

PARK_AFTER = 0.4


def healthy(snap: ServerSnapshot) -> bool:
    return snap.status is ServerStatus.HEALTHY and snap.session.active


def parked(snap: ServerSnapshot) -> bool:
    return healthy(snap) and snap.session.parked


def unparked(snap: ServerSnapshot) -> bool:
    return healthy(snap) and not snap.session.parked


class Methods(PostFilter):
    """Counts the JSON-RPC methods POSTed to the server in front of which it is put."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.seen: Counter[str] = Counter()

    async def answer(self, sent: dict[str, Any], send: Any) -> bool:
        if "method" in sent:
            self.seen[sent["method"]] += 1
        return False


async def serve_counted(nursery: trio.Nursery, server: MCPServer) -> tuple[Methods, str]:
    app = Methods(server.streamable_http_app(host="127.0.0.1"))
    return app, await serve_asgi(nursery, app)


def parked_gauge(manager: trio_mcp.Manager) -> float:
    """``trio_mcp_server_session_parked`` of the server ``web``, as a scrape reads it."""
    registry = CollectorRegistry()
    collector = FleetCollector(manager)
    registry.register(collector)
    try:
        text = generate_latest(registry).decode()
    finally:
        collector.close()
    [value] = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "trio_mcp_server_session_parked" and sample.labels == {"server": "web"}
    ]
    return value


def config_of(url: str, **overrides: Any) -> trio_mcp.ServerConfig:
    settings: dict[str, Any] = {"health_interval": 0.2, "park_after": PARK_AFTER, **overrides}
    return trio_mcp.ServerConfig(
        name="web", transport=trio_mcp.HttpTransport(url=url), policy=policy(**settings)
    )


def tasks_of(server: str) -> list[str]:
    """The names of the running tasks that belong to ``server``'s supervisor."""
    names: list[str] = []

    def walk(task: trio.lowlevel.Task) -> None:
        if task.name.startswith(f"{server}:"):
            names.append(task.name)
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    walk(trio.lowlevel.current_root_task())
    return sorted(names)


async def settled_tasks(server: str, wanted: list[str]) -> list[str]:
    """``server``'s tasks once they are ``wanted`` (tasks start and end a moment after the state
    that causes it is published), or as they are after a second."""
    for _ in range(100):
        if tasks_of(server) == wanted:
            break
        await trio.sleep(0.01)
    return tasks_of(server)


SERVING = sorted(
    [
        "web: cancel notices",
        "web: catalog",
        "web: connection",
        "web: health probes",
        "web: listen",
        "web: park when idle",
        "web: re-handshake",
        "web: watch connection",
    ]
)
PARKED = ["web: connection", "web: health probes", "web: listen"]


async def test_an_idle_server_is_parked_and_a_call_resumes_it_without_a_round_trip(
    nursery: trio.Nursery,
) -> None:
    """Idle for ``park_after``, the connection closes its SDK session (and its tasks) but stays
    up: healthy, the same session number, probed all along. A call on it opens a session again
    and sends the call alone: no ``server/discover``, no listing (the output schema the result
    is checked against is the one listed before), and the connection parks again afterwards."""
    app, url = await serve_counted(nursery, build_server("web"))
    with trio.fail_after(30):
        async with trio_mcp.open_manager([config_of(url)]) as manager:
            first = await manager.wait_for("web", healthy)
            assert not first.session.parked
            assert await settled_tasks("web", SERVING) == SERVING
            snap = await manager.wait_for("web", parked)
            assert snap.session.session_id == first.session.session_id
            assert snap.connection is trio_mcp.ConnectionState.READY
            assert parked_gauge(manager) == 1.0
            # Its session's tasks end; the probes and the list-change stream go on.
            assert await settled_tasks("web", PARKED) == PARKED
            probes = app.seen["server/discover"]
            await trio.sleep(0.5)
            assert app.seen["server/discover"] >= probes + 2
            assert manager.server("web").session.parked

            before = app.seen.copy()
            result = await manager.invoke("tools/call", "echo", {"text": "hi"})
            assert text_of(result.result) == "hi"
            assert result.result.structured_content == {"result": "hi"}
            sent = app.seen - before
            assert sent["tools/call"] == 1
            assert sent["tools/list"] == 0
            # Probes may have gone out meanwhile; nothing else did.
            assert set(sent) <= {"tools/call", "server/discover"}
            assert [a.server for a in result.attempts if a.success] == ["web", "web"]
            after = manager.server("web")
            assert after.session.session_id == first.session.session_id
            assert not after.session.parked
            assert parked_gauge(manager) == 0.0

            again = await manager.wait_for("web", parked)
            assert again.session.session_id == first.session.session_id


async def test_a_connection_in_use_is_not_parked(nursery: trio.Nursery) -> None:
    """A call under way for longer than ``park_after`` keeps the session open: parking waits
    until nothing is in flight and ``park_after`` has passed since."""
    _, url = await serve_counted(nursery, build_server("web"))
    with trio.fail_after(30):
        async with trio_mcp.open_manager([config_of(url, call_timeout=10)]) as manager:
            await manager.wait_for("web", healthy)
            async with trio.open_nursery() as calls:
                calls.start_soon(manager.call_tool, "sleep", {"seconds": PARK_AFTER * 3})
                await trio.sleep(PARK_AFTER * 2.5)
                assert not manager.server("web").session.parked
            done = trio.current_time()
            await manager.wait_for("web", parked)
            assert trio.current_time() >= done + PARK_AFTER * 0.9


async def test_a_connection_borrowed_with_acquire_is_never_parked(nursery: trio.Nursery) -> None:
    """Whoever borrowed the connection may call its session at any time: it stays open."""
    _, url = await serve_counted(nursery, build_server("web"))
    with trio.fail_after(30):
        async with trio_mcp.open_manager([config_of(url)]) as manager:
            conn = await manager.acquire("web")
            await trio.sleep(PARK_AFTER * 4)
            assert not manager.server("web").session.parked
            assert not conn.parked
            result = await conn.session.call_tool("echo", {"text": "kept"})
            assert text_of(result) == "kept"


async def test_a_list_change_announced_while_parked_is_listed_and_the_connection_parks_again(
    nursery: trio.Nursery,
) -> None:
    """The list-change stream outlives the parked session: a tool the server adds meanwhile is
    listed (a session is opened for it) and routed to, and the connection parks again."""
    bus = InMemorySubscriptionBus()
    server = MCPServer("web", subscriptions=bus)

    @server.tool()
    async def echo(text: str) -> str:
        return text

    app, url = await serve_counted(nursery, server)
    with trio.fail_after(30):
        async with trio_mcp.open_manager([config_of(url)]) as manager:
            await manager.wait_for("web", parked)
            assert manager.candidates("tools/call", "late") == []
            listings = app.seen["tools/list"]

            async def late() -> str:
                return "late"

            server.add_tool(late, name="late")
            await bus.publish(ToolsListChanged())
            await manager.wait_for("web", lambda s: app.seen["tools/list"] > listings)
            await manager.wait_for("web", parked)
            assert manager.candidates("tools/call", "late") == ["web"]


async def test_a_parked_connection_whose_server_stops_is_dropped_and_recovers(nursery: trio.Nursery) -> None:
    """Probes go on while parked: a server that stops is found unreachable and the connection
    is dropped; once the server is back, a new connection comes up (and parks in turn)."""
    with trio.fail_after(30):
        server = HttpDemoServer(nursery, "web")
        await server.start()
        config = server.config(policy(health_interval=0.2, park_after=PARK_AFTER, unreachable_threshold=2))
        async with trio_mcp.open_manager([config]) as manager:
            first = await manager.wait_for("web", parked)
            await server.stop()
            down = await manager.wait_for("web", lambda s: s.status is ServerStatus.UNREACHABLE)
            assert not down.session.parked
            await server.start()
            back = await manager.wait_for("web", healthy)
            assert back.session.session_id != first.session.session_id
            assert text_of(await manager.call_tool("echo", {"text": "back"})) == "back"
            await manager.wait_for("web", parked)


async def test_a_rehandshake_demanded_while_parked_resumes_and_runs_discover(nursery: trio.Nursery) -> None:
    """``initialize`` on a parked connection opens its session again and re-runs
    ``server/discover`` on it: the handshake is new, the session number the same."""
    app, url = await serve_counted(nursery, build_server("web"))
    with trio.fail_after(30):
        async with trio_mcp.open_manager([config_of(url, probe="none")]) as manager:
            first = await manager.wait_for("web", parked)
            discovers = app.seen["server/discover"]
            [snap] = await manager.initialize("web")
            assert snap.status is ServerStatus.HEALTHY
            assert snap.handshaken_at is not None and first.handshaken_at is not None
            assert snap.handshaken_at > first.handshaken_at
            assert app.seen["server/discover"] == discovers + 1
            assert snap.session.session_id == first.session.session_id


async def test_parking_is_off_with_park_after_none(nursery: trio.Nursery) -> None:
    _, url = await serve_counted(nursery, build_server("web"))
    with trio.fail_after(30):
        async with trio_mcp.open_manager([config_of(url, park_after=None)]) as manager:
            await manager.wait_for("web", healthy)
            await trio.sleep(PARK_AFTER * 3)
            assert not manager.server("web").session.parked
            serving = [name for name in SERVING if name != "web: park when idle"]
            assert await settled_tasks("web", serving) == serving
