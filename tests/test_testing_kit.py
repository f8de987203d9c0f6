"""``trio_mcp.testing``: the scripted server's faults and observations, and ``memory_server``."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from _fleet import policy

import trio_mcp
from trio_mcp.testing import ScriptedServer, memory_server


def text(result: object) -> str:
    content = getattr(result, "content", None) or getattr(result, "contents", None)
    assert content, result
    value: str = content[0].text
    return value


def test_memory_server_options() -> None:
    server = ScriptedServer("s")
    config = memory_server(server, health_interval=5, idempotent_tools={"charge"}, trusted=True)
    assert config.name == "s"
    assert config.policy.health_interval == 5
    assert config.idempotent_tools == frozenset({"charge"})
    assert (config.idempotent, config.trusted) == (False, True)
    assert memory_server(server, name="other").name == "other"
    with pytest.raises(TypeError, match="either policy or policy keyword overrides"):
        memory_server(server, policy=policy(), health_interval=5)
    with pytest.raises(ValueError, match="era"):
        ScriptedServer("s", era="future")
    assert repr(server) == "<ScriptedServer s era=dual live=0>"


async def test_legacy_era_server_speaks_initialize_only(autojump_clock: trio.testing.MockClock) -> None:
    server = ScriptedServer("old", era="legacy")
    async with trio_mcp.open_manager([memory_server(server, policy=policy())]) as manager:
        snap = await manager.wait_for("old", lambda s: s.session.active)
        assert snap.capabilities is not None and snap.capabilities.era == "legacy"
        assert server.requests["initialize"] == 1
        assert text(await manager.call_tool("echo", {"text": "hi"})) == "hi"
        assert repr(server) == "<ScriptedServer old era=legacy live=1>"


async def test_tool_faults_are_scripted_and_cleared(autojump_clock: trio.testing.MockClock) -> None:
    server = ScriptedServer("s")
    async with trio_mcp.open_manager([memory_server(server, policy=policy())]) as manager:
        await manager.wait_for("s", lambda s: s.session.active)

        server.fail_tool("echo", "echo is broken")
        with pytest.raises(trio_mcp.InvocationFailedError) as info:
            await manager.call_tool("echo", {"text": "x"}, failover="never")
        (attempt,) = info.value.attempts
        assert (attempt.category, attempt.sent) == ("rpc_error", True)
        assert "echo is broken" in (attempt.error or "")
        assert (server.executions("echo"), server.completed["echo"]) == (1, 0)
        server.fail_tool("echo", None)
        assert text(await manager.call_tool("echo", {"text": "x"})) == "x"
        assert (server.executions("echo"), server.completed["echo"]) == (2, 1)

        server.delay_tool("sleep", 3)
        start = trio.current_time()
        assert text(await manager.call_tool("sleep", {"seconds": 1})) == "slept 1"
        assert trio.current_time() - start == pytest.approx(4.0)

        # crash_during: the tool started (it may have executed), then the connection dropped.
        server.crash_during("charge")
        opened = server.connections_opened
        with pytest.raises(trio_mcp.InvocationFailedError) as info:
            await manager.call_tool("charge", {"amount": 1}, failover="never")
        assert info.value.outcome == "unknown"
        assert server.executions("charge") == 1 and server.in_flight["charge"] == 0
        assert server.live_connections == 0

        server.heal()
        assert (server.tool_delays, server.tool_errors, server.tool_crash) == ({}, {}, set())
        snap = await manager.wait_for("s", lambda s: s.session.active)
        assert server.connections_opened == opened + 1
        assert snap.session.active
        assert text(await manager.call_tool("charge", {"amount": 2})) == "charged 2"


async def test_handshake_and_probe_faults(autojump_clock: trio.testing.MockClock) -> None:
    server = ScriptedServer("s")
    server.fail_handshake("not today")
    config = memory_server(server, policy=policy(protocol="modern", probe_timeout=2.0, health_interval=10.0))
    async with trio_mcp.open_manager([config]) as manager:
        snap = await manager.wait_for("s", lambda s: s.consecutive_failures >= 1)
        assert snap.last_error_category == "protocol_error"
        assert "not today" in (snap.last_error or "")
        assert not snap.session.active

        server.fail_handshake(None)
        server.delay_handshake(1.5)
        start = trio.current_time()
        (snap,) = await manager.connect("s")
        assert snap.session.active and snap.status is trio_mcp.ServerStatus.HEALTHY  # handshake + probe
        assert trio.current_time() - start == pytest.approx(1.5)

        server.fail_probes("sick")
        (snap,) = await manager.health_check("s")
        assert (snap.status, snap.last_error_category) == (trio_mcp.ServerStatus.DEGRADED, "rpc_error")
        assert "sick" in (snap.last_error or "")
        server.fail_probes(None)
        server.delay_probes(5)  # longer than the probe timeout
        (snap,) = await manager.health_check("s")
        assert snap.last_error_category == "timeout"
        assert snap.consecutive_failures == 2
        server.heal()
        (snap,) = await manager.health_check("s")
        assert (snap.status, snap.consecutive_failures) == (trio_mcp.ServerStatus.RECOVERED, 0)


@pytest.mark.parametrize("era", ["dual", "legacy"])
async def test_expired_sessions_are_answered_before_anything_runs(
    era: str, autojump_clock: trio.testing.MockClock
) -> None:
    server = ScriptedServer("s", era=era)
    async with trio_mcp.open_manager([memory_server(server, policy=policy())]) as manager:
        await manager.wait_for("s", lambda s: s.session.active)
        server.expire_sessions()
        # The invoker sees "session expired" (nothing ran: not sent), re-handshakes, retries once.
        outcome = await manager.invoke("tools/call", "charge", {"amount": 1, "invocation_id": "i1"})
        expired, handshake, answered = outcome.attempts
        assert (expired.category, expired.sent) == ("session_expired", False)
        assert (handshake.stage, handshake.success) == ("handshake", True)
        assert (answered.stage, answered.success, answered.sent) == ("invoke", True, True)
        assert server.invocations == {"i1": 1}
        assert server.connections_opened == 2
        assert not server.faulty


async def test_answering_an_http_status_refuses_before_anything_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = ScriptedServer("s")
    with pytest.raises(ValueError, match="HTTP error status"):
        server.answer_status(200)
    async with trio_mcp.open_manager([memory_server(server, policy=policy(protocol="legacy"))]) as manager:
        await manager.wait_for("s", lambda s: s.session.active)
        server.answer_status(401)
        assert server.faulty
        with pytest.raises(trio_mcp.InvocationFailedError) as info:
            await manager.call_tool("charge", {"amount": 1}, failover="never")
        (attempt,) = info.value.attempts
        assert (attempt.category, attempt.error, attempt.sent) == (
            "rpc_error",
            "Server returned an error response (JSON-RPC -32603)",
            True,
        )
        assert server.executions("charge") == 0
        # A new connection is refused at its handshake too.
        server.close_connections()
        snap = await manager.wait_for("s", lambda s: s.last_error_category == "protocol_error")
        assert snap.last_error == "handshake refused: Server returned an error response (JSON-RPC -32603)"
        server.heal()
        assert server.status is None
        await manager.wait_for("s", lambda s: s.session.active)
        assert text(await manager.call_tool("charge", {"amount": 1})) == "charged 1"
        # A 404 is what an HTTP server says of a session it forgot (handshakes included).
        server.answer_status(404)
        with pytest.raises(trio_mcp.InvocationFailedError) as info:
            await manager.call_tool("charge", {"amount": 1}, failover="never")
        steps = [(a.stage, a.category, a.sent) for a in info.value.attempts]
        assert steps == [("invoke", "session_expired", False), ("handshake", "session_expired", False)]
        assert info.value.outcome == "failed"
        assert server.executions("charge") == 1


@pytest.mark.parametrize(
    ("how", "category"),
    [("frame", "timeout"), ("parse_error", "protocol_error"), ("result", "protocol_error")],
)
@pytest.mark.parametrize("era", ["dual", "legacy"])
async def test_mangled_answers_after_the_tool_ran(
    how: str, category: str, era: str, autojump_clock: trio.testing.MockClock
) -> None:
    server = ScriptedServer("s", era=era)
    async with trio_mcp.open_manager([memory_server(server, policy=policy())]) as manager:
        await manager.wait_for("s", lambda s: s.session.active)
        server.mangle_responses("charge", how)  # type: ignore[arg-type]
        start = trio.current_time()
        with pytest.raises(trio_mcp.InvocationFailedError) as info:
            await manager.call_tool("charge", {"amount": 1, "invocation_id": "i1"}, attempt_timeout=2)
        (attempt,) = info.value.attempts
        assert (attempt.category, attempt.sent, info.value.outcome) == (category, True, "unknown")
        assert trio.current_time() - start == (2.0 if how == "frame" else 0.0)
        assert server.invocations == {"i1": 1} and server.completed["charge"] == 1
        # Other tools are answered as usual.
        assert text(await manager.call_tool("echo", {"text": "x"})) == "x"
        server.mangle_responses("charge", None)
        assert not server.faulty


async def test_duplicate_answers_are_one_answer(autojump_clock: trio.testing.MockClock) -> None:
    server = ScriptedServer("s")
    with pytest.raises(ValueError, match="how must be one of duplicate, frame, parse_error, result"):
        server.mangle_responses("charge", "twice")  # type: ignore[arg-type]
    async with trio_mcp.open_manager([memory_server(server, policy=policy())]) as manager:
        await manager.wait_for("s", lambda s: s.session.active)
        server.mangle_responses("charge")
        for amount in (1, 2, 3):
            result = await manager.call_tool("charge", {"amount": amount, "invocation_id": f"i{amount}"})
            assert text(result) == f"charged {amount}"
        assert server.invocations == {"i1": 1, "i2": 1, "i3": 1}
        assert manager.server("s").consecutive_failures == 0
