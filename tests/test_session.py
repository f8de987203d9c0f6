"""Handshake modes and health-probe kinds, seen from the server (virtual time)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from _fleet import policy
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import UNSUPPORTED_PROTOCOL_VERSION

import trio_mcp
from trio_mcp import ServerStatus
from trio_mcp.testing import ScriptedServer, memory_server


@pytest.mark.parametrize(
    ("era", "protocol", "expected_era", "handshake_requests"),
    [
        ("dual", "auto", "modern", {"server/discover": 1}),
        ("dual", "modern", "modern", {"server/discover": 1}),
        ("dual", "legacy", "legacy", {"initialize": 1}),
        # auto falls back to initialize when server/discover is not understood
        ("legacy", "auto", "legacy", {"server/discover": 1, "initialize": 1}),
        ("legacy", "legacy", "legacy", {"initialize": 1}),
    ],
)
async def test_handshake_modes(
    era: str,
    protocol: str,
    expected_era: str,
    handshake_requests: dict[str, int],
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = ScriptedServer("s", era=era)
    async with trio_mcp.open_manager([memory_server(server, policy=policy(protocol=protocol))]) as manager:
        snap = await manager.wait_for("s", lambda s: s.session.active)
        assert snap.capabilities is not None and snap.capabilities.era == expected_era
        seen = {m: server.requests[m] for m in ("server/discover", "initialize") if server.requests[m]}
        assert seen == handshake_requests


async def test_modern_only_against_a_legacy_server_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    server = ScriptedServer("old", era="legacy")
    config = memory_server(server, policy=policy(protocol="modern"))
    async with trio_mcp.open_manager([config]) as manager:
        snap = await manager.wait_for("old", lambda s: s.consecutive_failures >= 1)
        assert (snap.status, snap.last_error_category) == (ServerStatus.DEGRADED, "protocol_error")
        assert (snap.last_error or "").startswith("handshake refused: ")
        assert server.requests["initialize"] == 0


@pytest.mark.parametrize(
    ("era", "probe", "method"),
    [
        ("dual", "auto", "server/discover"),
        ("legacy", "auto", "ping"),
        ("legacy", "ping", "ping"),
        ("dual", "discover", "server/discover"),
        ("dual", "list_tools", "tools/list"),
        ("legacy", "list_tools", "tools/list"),
    ],
)
async def test_probe_kinds_send_their_request(
    era: str, probe: str, method: str, autojump_clock: trio.testing.MockClock
) -> None:
    server = ScriptedServer("s", era=era)
    config = memory_server(server, policy=policy(probe=probe, health_interval=10.0))
    async with trio_mcp.open_manager([config]) as manager:
        await manager.wait_for("s", lambda s: s.session.active)
        before = server.requests[method]
        (snap,) = await manager.health_check("s")
        assert server.requests[method] == before + 1
        assert snap.status is ServerStatus.HEALTHY
        # The periodic probe sends the same request, every health interval.
        await trio.sleep(25)
        assert server.requests[method] == before + 3


async def test_a_discover_probe_of_a_legacy_server_fails_as_an_rpc_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = ScriptedServer("old", era="legacy")
    config = memory_server(server, policy=policy(probe="discover", health_interval=1000.0))
    async with trio_mcp.open_manager([config]) as manager:
        await manager.wait_for("old", lambda s: s.session.active)
        (snap,) = await manager.health_check("old")
        # "method not found" on a probe says the server is alive: not the caller's error.
        assert (snap.status, snap.last_error_category) == (ServerStatus.DEGRADED, "rpc_error")
        assert snap.session.active


async def test_no_probe_means_no_probe_requests(autojump_clock: trio.testing.MockClock) -> None:
    server = ScriptedServer("s")
    async with trio_mcp.open_manager([memory_server(server, policy=policy(probe="none"))]) as manager:
        await manager.wait_for("s", lambda s: s.session.active)
        await trio.sleep(100)
        assert (server.requests["ping"], server.requests["server/discover"]) == (0, 1)  # the handshake


def odd_server(discover_fault: Exception | dict[str, bool]) -> MCPServer:
    """An SDK server whose ``server/discover`` raises ``discover_fault`` (or answers it, if a dict)."""
    server = MCPServer("odd")

    @server.tool()
    async def echo(text: str) -> str:
        return text

    async def middleware(ctx: Any, call_next: Any) -> Any:
        if ctx.method == "server/discover":
            if isinstance(discover_fault, Exception):
                raise discover_fault
            return discover_fault
        return await call_next(ctx)

    server._lowlevel_server.middleware.insert(0, middleware)
    return server


# An SDK 2.x server refuses ``initialize`` on a connection that has seen ``server/discover``:
# the refusal says so, which tells whether the auto mode fell back to ``initialize``.
FELL_BACK = (
    "handshake refused: connection is serving the 2026-07-28 protocol; "
    "the initialize handshake is not accepted (JSON-RPC -32022)"
)


@pytest.mark.parametrize(
    ("fault", "last_error"),
    [
        # Only versions we do not share: refused at once, no initialize attempted.
        (
            MCPError(UNSUPPORTED_PROTOCOL_VERSION, "unsupported", {"supported": ["2099-01-01"]}),
            "handshake refused: unsupported (JSON-RPC -32022)",
        ),
        # A handshake-era version offered: fall back to initialize.
        (MCPError(UNSUPPORTED_PROTOCOL_VERSION, "unsupported", {"supported": ["2025-11-25"]}), FELL_BACK),
        (MCPError(UNSUPPORTED_PROTOCOL_VERSION, "unsupported"), FELL_BACK),
        # An answer that is no discover result: fall back too.
        ({"bogus": True}, FELL_BACK),
    ],
)
async def test_auto_mode_falls_back_to_initialize_unless_no_version_is_shared(
    fault: Exception | dict[str, bool], last_error: str, autojump_clock: trio.testing.MockClock
) -> None:
    # Over streams: the SDK server's own refusal of ``initialize`` says that it was sent.
    transport = trio_mcp.MemoryTransport(server=odd_server(fault), direct=False)
    config = trio_mcp.ServerConfig(name="odd", transport=transport, policy=policy())
    async with trio_mcp.open_manager([config]) as manager:
        snap = await manager.wait_for("odd", lambda s: s.consecutive_failures == 1)
        assert (snap.last_error_category, snap.last_error) == ("protocol_error", last_error)


async def test_connection_repr_says_whether_it_is_alive(autojump_clock: trio.testing.MockClock) -> None:
    async with trio_mcp.open_manager([memory_server(ScriptedServer("s"), policy=policy())]) as manager:
        conn = await manager.acquire("s")
        assert repr(conn) == "<Connection s#1 alive>"
        manager.invalidate("s")
        await manager.wait_for("s", lambda s: not s.session.active)
        assert repr(conn) == "<Connection s#1 dropped (invalidated)>"


async def test_a_discover_timeout_is_not_taken_for_a_legacy_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``server/discover`` unanswered within the SDK's 10 s cap (a loaded machine) says nothing
    about the era: no ``initialize`` follows on that connection (a 2026-07-28 server that gets
    to the discover later would refuse it). The attempt fails as a timeout and is retried;
    only an answer saying ``server/discover`` is unknown makes the auto mode fall back."""
    server = ScriptedServer("slow")
    server.delay_handshake(12.0)
    config = memory_server(server, policy=policy(handshake_timeout=30.0))
    async with trio_mcp.open_manager([config]) as manager:
        snap = await manager.wait_for("slow", lambda s: s.consecutive_failures == 1)
        assert trio.current_time() == 10.0
        assert snap.last_error_category == "timeout"
        assert server.requests["initialize"] == 0
        server.delay_handshake(0.0)
        snap = await manager.wait_for("slow", lambda s: s.session.active)
        assert snap.protocol_version == "2026-07-28"
        assert server.requests["initialize"] == 0


async def test_a_successful_call_stands_in_for_the_next_probe(autojump_clock: trio.testing.MockClock) -> None:
    """A call that succeeded since the last check says more than a probe would: the probe due
    next is skipped; without calls, probing goes on every interval."""
    server = ScriptedServer("s")
    async with trio_mcp.open_manager([memory_server(server, policy=policy(health_interval=10))]) as manager:
        await manager.wait_for("s", lambda s: s.status is ServerStatus.HEALTHY)
        await trio.sleep(5)
        await manager.call_tool("echo", {"text": "x"})
        await trio.sleep(10)  # t = 15: the probe due at 10 was skipped
        assert server.requests["server/discover"] == 1  # the handshake
        await trio.sleep(10)  # t = 25: nothing used it since 10, so the probe at 20 ran
        assert server.requests["server/discover"] == 2
        assert manager.server("s").last_checked_at == 20.0


async def test_a_server_that_is_not_healthy_is_probed_on_schedule_despite_calls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Only a healthy server skips a probe for a call: one that has not recovered fully is
    probed when due, so it is healthy again within one health interval, calls or not."""
    server = ScriptedServer("s")
    async with trio_mcp.open_manager([memory_server(server, policy=policy(health_interval=10))]) as manager:
        await manager.wait_for("s", lambda s: s.status is ServerStatus.HEALTHY)
        server.fail_probes()
        await trio.sleep_until(10.5)
        assert manager.server("s").status is ServerStatus.DEGRADED
        server.fail_probes(None)
        await trio.sleep_until(12)
        await manager.call_tool("echo", {"text": "x"})
        assert manager.server("s").status is ServerStatus.RECOVERED
        await trio.sleep_until(20.5)
        assert server.requests["server/discover"] == 3  # the handshake, and the probes at 10 and 20
        snap = manager.server("s")
        assert (snap.status, snap.last_checked_at) == (ServerStatus.HEALTHY, 20.0)
