"""Probe rounds: the health probes of plain-HTTP 2026-07-28 servers at one origin are sent by
one task in rounds; a quiet success wakes no task of the server, and anything else is checked
and reported by the server's own probe task as its own probe would have. Real SDK servers
under hypercorn, real clock."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest
import trio
from _support import PostFilter, policy, serve_asgi

import trio_mcp
from trio_mcp import ServerSnapshot, ServerStatus
from trio_mcp._transports.http_probe import PlainDiscoverProbe
from trio_mcp._transports.probe_rounds import ROUND_SECONDS
from trio_mcp.demo_server import build_server

pytestmark = pytest.mark.integration

INTERVAL = 0.2


class Discover(PostFilter):
    """Counts the JSON-RPC methods POSTed; while :attr:`mode` is set, answers ``server/discover``
    itself: with HTTP 500 (``"error"``), or never (``"hang"``)."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.seen: Counter[str] = Counter()
        self.mode: str | None = None

    async def answer(self, sent: dict[str, Any], send: Any) -> bool:
        method = sent.get("method")
        if method is not None:
            self.seen[method] += 1
        if method != "server/discover" or self.mode is None:
            return False
        if self.mode == "hang":
            await trio.sleep_forever()
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"4")]
        await send({"type": "http.response.start", "status": 500, "headers": headers})
        await send({"type": "http.response.body", "body": b"boom"})
        return True


def configs(url: str, names: list[str], **overrides: Any) -> list[trio_mcp.ServerConfig]:
    settings: dict[str, Any] = {"health_interval": INTERVAL, "park_after": None, **overrides}
    return [
        trio_mcp.ServerConfig(name=name, transport=trio_mcp.HttpTransport(url=url), policy=policy(**settings))
        for name in names
    ]


def healthy(snap: ServerSnapshot) -> bool:
    return snap.status is ServerStatus.HEALTHY


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rounds_of(manager: trio_mcp.Manager, name: str) -> Any:
    conn = manager._supervisors[name].connection
    assert conn is not None
    probe = conn.link.discover_probe
    assert isinstance(probe, PlainDiscoverProbe)
    return probe.rounds


async def test_healthy_servers_are_probed_in_rounds_without_a_state_change(nursery: trio.Nursery) -> None:
    app = Discover(build_server("web").streamable_http_app(host="127.0.0.1"))
    url = await serve_asgi(nursery, app)
    names = ["a", "b", "c"]
    fds_before = open_fds()
    async with trio_mcp.open_manager(configs(url, names)) as manager:
        for name in names:
            await manager.wait_for(name, healthy)
        rounds = rounds_of(manager, "a")
        assert all(rounds_of(manager, name) is rounds for name in names)  # one per origin
        changes: list[Any] = []
        manager.stream.add_listener(lambda event: changes.append(event))
        checked = {snap.name: snap.last_checked_at for snap in manager.servers()}
        sent, seen = rounds.sent, app.seen["server/discover"]
        await trio.sleep(8 * INTERVAL)
        # Each server checked about every interval, by probes the rounds sent...
        assert rounds.sent - sent >= 3 * 5
        assert app.seen["server/discover"] - seen == rounds.sent - sent
        for snap in manager.servers():
            old = checked[snap.name]
            assert snap.last_checked_at is not None and old is not None
            assert snap.last_checked_at > old
            assert trio.current_time() - snap.last_checked_at <= INTERVAL + 3 * ROUND_SECONDS + 0.1
        # ... and a healthy server found healthy publishes nothing.
        assert [e for e in changes if isinstance(e, trio_mcp.StateChange)] == []
    # The rounds' sockets are closed with the manager (and then the server's ends of them).
    for _ in range(50):
        if open_fds() <= fds_before:
            break
        await trio.sleep(0.02)
    assert open_fds() <= fds_before


async def test_an_error_answer_is_reported_by_the_server_and_it_recovers(nursery: trio.Nursery) -> None:
    app = Discover(build_server("web").streamable_http_app(host="127.0.0.1"))
    url = await serve_asgi(nursery, app)
    async with trio_mcp.open_manager(configs(url, ["web"], unreachable_threshold=1)) as manager:
        await manager.wait_for("web", healthy)
        app.mode = "error"
        with trio.fail_after(5):
            snap = await manager.wait_for("web", lambda s: s.status is not ServerStatus.HEALTHY)
        assert snap.last_error_category == "http_status"
        assert snap.last_error is not None and "500" in snap.last_error
        app.mode = None
        with trio.fail_after(10):
            await manager.wait_for("web", healthy)


async def test_a_probe_without_an_answer_times_out(nursery: trio.Nursery) -> None:
    app = Discover(build_server("web").streamable_http_app(host="127.0.0.1"))
    url = await serve_asgi(nursery, app)
    async with trio_mcp.open_manager(configs(url, ["web"], probe_timeout=0.3)) as manager:
        await manager.wait_for("web", healthy)
        app.mode = "hang"
        started = trio.current_time()
        with trio.fail_after(5):
            snap = await manager.wait_for("web", lambda s: s.consecutive_failures > 0)
        assert snap.last_error_category == "timeout"
        assert snap.last_error == "probe timed out after 0.3s"
        # Due within an interval, then the timeout, read at a round's end.
        assert trio.current_time() - started <= INTERVAL + 0.3 + 3 * ROUND_SECONDS + 0.2
