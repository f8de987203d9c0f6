"""Parked connections: an idle 2026-07-28 server over plain HTTP closes its SDK session while its
probes and its list-change stream go on, and the next use opens one again without a round trip.
Real SDK servers under hypercorn, real clock."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
import trio
from _support import HttpDemoServer, PostFilter, policy, serve_asgi, settled_tasks, text_of
from mcp.server.mcpserver import MCPServer
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.subscriptions import ToolsListChanged
from mcp_types import CLIENT_CAPABILITIES_META_KEY
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import trio_mcp
from trio_mcp import ServerSnapshot, ServerStatus, _supervisor
from trio_mcp._transports import http_probe
from trio_mcp.demo_server import build_server
from trio_mcp.metrics import FleetCollector

pytestmark = pytest.mark.integration

PARK_AFTER = 0.4


def all_task_names() -> list[str]:
    names: list[str] = []

    def walk(task: trio.lowlevel.Task) -> None:
        names.append(task.name)
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    walk(trio.lowlevel.current_root_task())
    return names


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
        self.metas: dict[str, Any] = {}
        """The ``_meta`` of the last request of each method."""

    async def answer(self, sent: dict[str, Any], send: Any) -> bool:
        if "method" in sent:
            self.seen[sent["method"]] += 1
            self.metas[sent["method"]] = (sent.get("params") or {}).get("_meta")
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


SERVING = sorted(
    [
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


async def test_a_server_starts_parked_and_a_call_opens_its_session_without_a_round_trip(
    nursery: trio.Nursery,
) -> None:
    """The handshake (``server/discover`` and the listings) needs no SDK session: the connection
    comes up parked, healthy and probed, with only its probe and list-change tasks. A call opens
    a session and sends the call alone: no ``server/discover``, no listing (the output schema
    the result is checked against is the one listed before). The session is one the call's own
    task sends each request of, one POST each: no transport task runs. Idle for ``park_after``,
    the connection closes its session and its tasks again, with the same session number."""
    app, url = await serve_counted(nursery, build_server("web"))
    with trio.fail_after(30):
        async with trio_mcp.open_manager([config_of(url)]) as manager:
            first = await manager.wait_for("web", healthy)
            assert first.session.parked
            assert first.connection is trio_mcp.ConnectionState.READY
            assert parked_gauge(manager) == 1.0
            assert await settled_tasks("web", PARKED) == PARKED
            assert app.seen["tools/list"] == 1  # listed at the handshake, without a session
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
            # Opening the session again is no handshake: the call is the only attempt.
            assert [(a.server, a.stage, a.success) for a in result.attempts] == [("web", "invoke", True)]
            after = manager.server("web")
            assert after.session.session_id == first.session.session_id
            assert not after.session.parked
            assert parked_gauge(manager) == 0.0
            assert await settled_tasks("web", SERVING) == SERVING
            assert [name for name in all_task_names() if "mcp.client.streamable_http" in name] == []

            again = await manager.wait_for("web", parked)
            assert again.session.session_id == first.session.session_id
            assert await settled_tasks("web", PARKED) == PARKED


async def test_a_handshake_without_a_session_sees_what_the_sdk_session_sees(nursery: trio.Nursery) -> None:
    """The same server handshaken without a session (parking on) and through the SDK session
    (``park_after=None``): the same capability snapshot and catalog, and requests stamped with
    the same ``_meta`` (protocol version, client identity and capabilities)."""
    app, url = await serve_counted(nursery, build_server("web"))

    async def elicit(context: Any, params: Any) -> Any:
        raise AssertionError("not asked")

    seen: dict[bool, tuple[Any, Any]] = {}
    with trio.fail_after(30):
        for plain in (True, False):
            app.metas.clear()
            park_after = PARK_AFTER if plain else None
            options = {"elicitation_callback": elicit}
            config = config_of(url, park_after=park_after, probe="none")
            async with trio_mcp.open_manager([config], session_options=options) as manager:
                snap = await manager.wait_for("web", healthy)
                assert snap.session.parked is plain
                capabilities = snap.capabilities
                assert capabilities is not None and capabilities.server_name == "web"
                keys = sorted(entry.key for entry in await manager.list_tools())
                seen[plain] = (replace(capabilities, captured_at=0, captured_timestamp=0), keys)
                assert set(app.metas) >= {"server/discover", "tools/list"}
                metas = dict(app.metas)
            if plain:
                plain_metas = metas
            else:
                assert plain_metas == metas
        assert seen[True] == seen[False]
        assert "elicitation" in plain_metas["tools/list"][CLIENT_CAPABILITIES_META_KEY]


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


def echo_server(bus: InMemorySubscriptionBus) -> MCPServer:
    """A server ``web`` with one tool, ``echo``, announcing its list changes on ``bus``."""
    server = MCPServer("web", subscriptions=bus)

    @server.tool()
    async def echo(text: str) -> str:
        return text

    return server


def add_late_tool(server: MCPServer) -> None:
    """Add a tool ``late`` to ``server`` (announced to nobody)."""

    async def late() -> str:
        return "late"

    server.add_tool(late, name="late")


async def test_a_list_change_announced_while_parked_is_listed_without_a_session(
    nursery: trio.Nursery,
) -> None:
    """The list-change stream goes on while parked: a tool the server adds meanwhile is listed
    without opening a session, and routed to."""
    bus = InMemorySubscriptionBus()
    server = echo_server(bus)
    app, url = await serve_counted(nursery, server)
    with trio.fail_after(30):
        async with trio_mcp.open_manager([config_of(url)]) as manager:
            first = await manager.wait_for("web", parked)
            assert manager.candidates("tools/call", "late") == []
            listings = app.seen["tools/list"]

            add_late_tool(server)
            # The stream is opened beside the connection: announce until it is heard.
            while app.seen["tools/list"] == listings:
                await bus.publish(ToolsListChanged())
                await trio.sleep(0.05)

            def routed(_: ServerSnapshot) -> bool:
                return manager.candidates("tools/call", "late") == ["web"]

            snap = await manager.wait_for("web", routed)
            assert snap.session.parked
            # Listed without opening a session.
            assert snap.session.session_id == first.session.session_id and app.seen["tools/call"] == 0
            assert await settled_tasks("web", PARKED) == PARKED


async def test_a_catalog_listed_again_while_parked_is_not_counted_as_a_handshake(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handshake's requests are counted as handshakes under way (they hold back the
    origin's probes and streams while a fleet comes up); a listing after a list change is not:
    it takes one of the probes' turns."""
    sent: list[tuple[str, bool]] = []
    exchange = http_probe.SessionlessDispatcher._exchange

    async def recorded(self: Any, request: bytes, request_id: str, *, turn: bool = True) -> Any:
        body = request.partition(b"\r\n\r\n")[2]
        sent.append((json.loads(body)["method"], turn))
        return await exchange(self, request, request_id, turn=turn)

    monkeypatch.setattr(http_probe.SessionlessDispatcher, "_exchange", recorded)
    bus = InMemorySubscriptionBus()
    server = echo_server(bus)
    _, url = await serve_counted(nursery, server)
    with trio.fail_after(30):
        async with trio_mcp.open_manager([config_of(url)]) as manager:
            await manager.wait_for("web", parked)
            assert sent and all(not turn for _, turn in sent)  # the handshake: discover, listings
            assert ("server/discover", False) in sent and ("tools/list", False) in sent
            handshake = len(sent)
            add_late_tool(server)
            while len(sent) == handshake:
                await bus.publish(ToolsListChanged())
                await trio.sleep(0.05)
            await manager.wait_for("web", lambda _: manager.candidates("tools/call", "late") == ["web"])
            assert sent[handshake:] == [("tools/list", True)]


async def test_a_tool_added_before_a_held_back_stream_was_held_is_listed(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A list-change stream held back (its origin busy with a fleet's handshakes) is held only
    after a while: a tool the server added meanwhile was announced to nobody, so the catalogs
    are listed again once it is held, and the tool is routed to."""
    gate = trio.Event()

    async def busy_origin(self: http_probe.ProbeSockets) -> None:
        await gate.wait()

    monkeypatch.setattr(http_probe.ProbeSockets, "until_quiet", busy_origin)
    monkeypatch.setattr(_supervisor, "UNWATCHED_SECONDS", 0.1)
    monkeypatch.setattr(_supervisor, "UNWATCHED_RELIST_SPREAD", 0.2)
    server = echo_server(InMemorySubscriptionBus())
    app, url = await serve_counted(nursery, server)
    with trio.fail_after(30):
        async with trio_mcp.open_manager([config_of(url)]) as manager:
            await manager.wait_for("web", parked)
            listings = app.seen["tools/list"]

            add_late_tool(server)  # announced on no stream: none is held yet
            await trio.sleep(0.2)
            assert manager.supervisor("web").tool_info("late") is None
            assert manager.candidates("tools/call", "late") == []
            gate.set()

            def listed(_: ServerSnapshot) -> bool:
                return manager.supervisor("web").tool_info("late") is not None

            snap = await manager.wait_for("web", listed)
            assert manager.candidates("tools/call", "late") == ["web"]
            assert app.seen["tools/list"] == listings + 1 and app.seen["subscriptions/listen"] == 1
            assert snap.session.parked  # listed without a session


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
            # Never parked, it is served through an SDK session over the transport.
            serving = sorted([*SERVING, "web: cancel notices"])
            serving.remove("web: park when idle")
            assert await settled_tasks("web", serving) == serving


class LegacyOnly(Methods):
    """Answers ``server/discover`` as a server of the 2025-11-25 era does: it does not know it."""

    async def answer(self, sent: dict[str, Any], send: Any) -> bool:
        await super().answer(sent, send)
        if sent.get("method") != "server/discover":
            return False
        error = {"code": -32601, "message": "Method not found"}
        await self.reply(send, {"jsonrpc": "2.0", "id": sent["id"], "error": error})
        return True


async def test_a_server_that_does_not_know_discover_is_handshaken_through_a_session(
    nursery: trio.Nursery,
) -> None:
    """The handshake without a session is only for the 2026-07-28 era: a server that answers
    ``server/discover`` with an error gets ``initialize`` through an SDK session (without being
    asked ``server/discover`` again), and that connection is never parked (its session is the
    server's state)."""
    app = LegacyOnly(build_server("web").streamable_http_app(host="127.0.0.1"))
    url = await serve_asgi(nursery, app)
    with trio.fail_after(30):
        async with trio_mcp.open_manager([config_of(url)]) as manager:
            snap = await manager.wait_for("web", healthy)
            assert snap.capabilities is not None and snap.capabilities.era == "legacy"
            assert not snap.session.parked
            # Asked server/discover once: its answer is what the fallback follows.
            assert (app.seen["server/discover"], app.seen["initialize"]) == (1, 1)
            assert text_of(await manager.call_tool("echo", {"text": "old"})) == "old"
            await trio.sleep(PARK_AFTER * 3)
            assert not manager.server("web").session.parked


async def test_a_call_made_before_the_handshake_waits_for_it_and_the_session(nursery: trio.Nursery) -> None:
    """A call made as the manager opens waits for the handshake (one attempt, ``handshake``),
    then for the session opened for it, and is answered."""
    app, url = await serve_counted(nursery, build_server("web"))
    with trio.fail_after(30):
        async with trio_mcp.open_manager([config_of(url)]) as manager:
            result = await manager.invoke("tools/call", "echo", {"text": "early"}, preferred=["web"])
            assert text_of(result.result) == "early"
            stages = [(a.stage, a.success) for a in result.attempts]
            assert stages in ([("handshake", True), ("invoke", True)], [("invoke", True)])
            assert app.seen["tools/call"] == 1 and app.seen["initialize"] == 0
            assert not manager.server("web").session.parked


class SaysCapabilities(Methods):
    """Answers ``server/discover`` itself, with ``capabilities`` (changed as a test goes)."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.capabilities: dict[str, Any] = {"tools": {"listChanged": False}}

    async def answer(self, sent: dict[str, Any], send: Any) -> bool:
        await super().answer(sent, send)
        if sent.get("method") != "server/discover":
            return False
        result = {
            "supportedVersions": ["2026-07-28"],
            "capabilities": self.capabilities,
            "ttlMs": 0,
            "cacheScope": "private",
            "resultType": "complete",
        }
        await self.reply(send, {"jsonrpc": "2.0", "id": sent["id"], "result": result})
        return True


async def test_a_rehandshake_that_changes_what_the_server_announces_opens_the_stream_anew(
    nursery: trio.Nursery,
) -> None:
    """The list-change stream follows the server's capabilities: none while it says its tools
    never change; once a re-handshake finds that they may, the stream is opened; once another
    finds more lists announced, the stream held is closed and opened anew for them."""
    app = SaysCapabilities(build_server("web").streamable_http_app(host="127.0.0.1"))
    url = await serve_asgi(nursery, app)
    with trio.fail_after(30):
        async with trio_mcp.open_manager([config_of(url)]) as manager:
            await manager.wait_for("web", healthy)
            await trio.sleep(0.5)
            assert app.seen["subscriptions/listen"] == 0
            app.capabilities = {"tools": {"listChanged": True}}
            await manager.initialize("web")
            for _ in range(200):
                if app.seen["subscriptions/listen"]:
                    break
                await trio.sleep(0.01)
            assert app.seen["subscriptions/listen"] == 1

            # Held, and the server now announces its prompts too: the stream is opened anew.
            app.capabilities = {"tools": {"listChanged": True}, "prompts": {"listChanged": True}}
            await manager.initialize("web")
            for _ in range(200):
                if app.seen["subscriptions/listen"] == 2:
                    break
                await trio.sleep(0.01)
            assert app.seen["subscriptions/listen"] == 2


@pytest.mark.parametrize("park_after", [PARK_AFTER, None], ids=["parking", "open-session"])
async def test_a_kind_a_rehandshake_finds_newly_offered_is_listed(
    nursery: trio.Nursery, park_after: float | None
) -> None:
    """A server that begins to offer prompts (its re-handshake says so) has them listed and
    routed to, on the same connection, whether it is listed with its session open or parked."""
    app = SaysCapabilities(build_server("web").streamable_http_app(host="127.0.0.1"))
    url = await serve_asgi(nursery, app)
    with trio.fail_after(30):
        async with trio_mcp.open_manager([config_of(url, park_after=park_after)]) as manager:
            first = await manager.wait_for("web", healthy)
            assert app.seen["prompts/list"] == 0
            app.capabilities = {"tools": {}, "prompts": {}}
            [snap] = await manager.initialize("web")
            assert snap.session.session_id == first.session.session_id
            for _ in range(200):
                if app.seen["prompts/list"]:
                    break
                await trio.sleep(0.01)
            assert app.seen["prompts/list"] == 1
            assert [entry.key for entry in await manager.list_prompts()] != []
