"""Hedged reads (``invoke(..., hedge_after=...)``) in virtual time against in-memory SDK servers:
the same read or idempotent call goes to the next candidate when the first is slow, the first
answer wins and the other attempt is cancelled; a call that may not be repeated is never sent
twice."""

from __future__ import annotations

import pytest
import trio

import trio_mcp
from trio_mcp import InvocationFailedError, ServerStatus
from trio_mcp.testing import ScriptedServer, memory_server

POLICY = trio_mcp.ServerPolicy(health_interval=3600, call_timeout=30)


def fleet(*servers: ScriptedServer, idempotent: bool = True) -> list[trio_mcp.ServerConfig]:
    return [
        memory_server(server, policy=POLICY, idempotent_tools={"lookup"} if idempotent else set())
        for server in servers
    ]


async def ready(manager: trio_mcp.Manager, *servers: ScriptedServer) -> None:
    for server in servers:
        await manager.acquire(server.name)


def trace(
    outcome_attempts: tuple[trio_mcp.Attempt, ...] | list[trio_mcp.Attempt],
) -> list[tuple[str, str, bool]]:
    return [(a.server, a.category or "ok", a.sent) for a in outcome_attempts]


async def test_a_slow_read_is_hedged_and_the_first_answer_wins(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slow, fast = ScriptedServer("slow"), ScriptedServer("fast")
    slow.delay_tool("lookup", 5)
    async with trio_mcp.open_manager(fleet(slow, fast)) as manager:
        await ready(manager, slow, fast)
        start = trio.current_time()
        outcome = await manager.invoke(
            "tools/call", "lookup", {"key": "k"}, preferred=["slow", "fast"], hedge_after=0.5
        )
        took = trio.current_time() - start
        assert outcome.server == "fast"
        assert took == pytest.approx(0.5)
        # Both attempts are traced: the hedge's success, then the first one, cancelled for it.
        assert trace(outcome.attempts) == [("fast", "ok", True), ("slow", "superseded", True)]
        assert "fast answered first" in (outcome.attempts[1].error or "")
        assert (slow.executions("lookup"), fast.executions("lookup")) == (1, 1)
        # Losing a hedge says nothing about the server's health.
        assert manager.server("slow").status is ServerStatus.HEALTHY
        await trio.sleep(10)  # the cancelled execution never answers later
        assert manager.server("slow").status is ServerStatus.HEALTHY


async def test_a_side_effecting_tool_is_never_sent_twice(autojump_clock: trio.testing.MockClock) -> None:
    slow, fast = ScriptedServer("slow"), ScriptedServer("fast")
    slow.delay_tool("charge", 5)
    async with trio_mcp.open_manager(fleet(slow, fast)) as manager:
        await ready(manager, slow, fast)
        start = trio.current_time()
        outcome = await manager.invoke(
            "tools/call", "charge", {"amount": 5}, preferred=["slow", "fast"], hedge_after=0.5
        )
        assert outcome.server == "slow"
        assert trio.current_time() - start == pytest.approx(5)
        assert trace(outcome.attempts) == [("slow", "ok", True)]
        assert (slow.executions("charge"), fast.executions("charge")) == (1, 0)


async def test_no_hedge_when_the_first_answers_in_time(autojump_clock: trio.testing.MockClock) -> None:
    slow, fast = ScriptedServer("slow"), ScriptedServer("fast")
    slow.delay_tool("lookup", 0.4)
    async with trio_mcp.open_manager(fleet(slow, fast)) as manager:
        await ready(manager, slow, fast)
        outcome = await manager.invoke(
            "tools/call", "lookup", {"key": "k"}, preferred=["slow", "fast"], hedge_after=0.5
        )
        assert outcome.server == "slow"
        assert trace(outcome.attempts) == [("slow", "ok", True)]
        assert fast.executions("lookup") == 0


async def test_p95_hedges_only_past_the_recent_tail(autojump_clock: trio.testing.MockClock) -> None:
    slow, fast = ScriptedServer("slow"), ScriptedServer("fast")
    slow.delay_tool("lookup", 0.2)
    async with trio_mcp.open_manager(fleet(slow, fast)) as manager:
        await ready(manager, slow, fast)

        async def lookup() -> trio_mcp.InvocationResult[object]:
            return await manager.invoke(
                "tools/call", "lookup", {"key": "k"}, preferred=["slow", "fast"], hedge_after="p95"
            )

        # Too few latencies known: no percentile, no hedge (even for a slow answer).
        slow.delay_tool("lookup", 3)
        assert (await lookup()).server == "slow"
        slow.delay_tool("lookup", 0.2)
        for _ in range(19):
            assert (await lookup()).server == "slow"
        assert fast.executions("lookup") == 0
        # 20 latencies known, the 95th percentile is 0.2 s: a faster answer is not hedged...
        slow.delay_tool("lookup", 0.1)
        assert (await lookup()).server == "slow"
        assert fast.executions("lookup") == 0
        # Now the tail is known (about 0.2 s): a slower answer is hedged right after it.
        slow.delay_tool("lookup", 3)
        start = trio.current_time()
        outcome = await lookup()
        assert outcome.server == "fast"
        assert trio.current_time() - start == pytest.approx(0.2)


async def test_a_partner_without_a_ready_session_is_left_to_the_failover(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slow, later = ScriptedServer("slow"), ScriptedServer("later")
    slow.fail_tool("lookup", "boom")
    slow.delay_tool("lookup", 2)
    on_demand = trio_mcp.ServerPolicy(health_interval=3600, connect_on_start=False)
    configs = [*fleet(slow), memory_server(later, policy=on_demand, idempotent_tools={"lookup"})]
    async with trio_mcp.open_manager(configs) as manager:
        await ready(manager, slow)
        outcome = await manager.invoke(
            "tools/call", "lookup", {"key": "k"}, preferred=["slow", "later"], hedge_after=0.5
        )
        # No hedge (no session to send it on at once); the failure fails over to it as usual.
        assert outcome.server == "later"
        assert [(a.server, a.stage) for a in outcome.attempts] == [
            ("slow", "invoke"),
            ("later", "handshake"),
            ("later", "invoke"),
        ]
        assert later.executions("lookup") == 1


async def test_when_both_fail_the_outcome_is_one_failure(autojump_clock: trio.testing.MockClock) -> None:
    a, b = ScriptedServer("a"), ScriptedServer("b")
    for server in (a, b):
        server.fail_tool("lookup", "boom")
        server.delay_tool("lookup", 1)
    async with trio_mcp.open_manager(fleet(a, b)) as manager:
        await ready(manager, a, b)
        with pytest.raises(InvocationFailedError) as info:
            await manager.invoke("tools/call", "lookup", {"key": "k"}, preferred=["a", "b"], hedge_after=0.5)
        assert sorted((x.server, x.category) for x in info.value.attempts) == [
            ("a", "rpc_error"),
            ("b", "rpc_error"),
        ]
        assert (a.executions("lookup"), b.executions("lookup")) == (1, 1)


async def test_hedge_after_is_checked(autojump_clock: trio.testing.MockClock) -> None:
    async with trio_mcp.open_manager(fleet(ScriptedServer("a"))) as manager:
        for bad in (-1, float("nan"), "p99"):
            with pytest.raises(ValueError, match="hedge_after"):
                await manager.invoke("tools/call", "lookup", {"key": "k"}, hedge_after=bad)  # type: ignore[arg-type]


async def test_a_server_whose_slow_answers_are_hedged_away_is_still_seen_as_slow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A hedge cancels the slow attempt, so its answer is never timed; that it had not answered
    # after the hedge delay is what the routing learns (the least loaded of two goes first).
    a, b = ScriptedServer("a"), ScriptedServer("b")
    async with trio_mcp.open_manager(fleet(a, b)) as manager:
        await ready(manager, a, b)
        for server in ("a", "b"):  # both measured: instant answers
            await manager.invoke("tools/call", "lookup", {"key": "k"}, preferred=[server])
        a.delay_tool("lookup", 5)
        outcome = await manager.invoke(
            "tools/call", "lookup", {"key": "k"}, preferred=["a", "b"], hedge_after=0.5
        )
        assert trace(outcome.attempts) == [("b", "ok", True), ("a", "superseded", True)]
        # From now on the fleet's calls go to b first: a took at least 0.5 s, b answers at once.
        servers = [
            (await manager.invoke("tools/call", "lookup", {"key": "k"}, hedge_after=0.5)).server
            for _ in range(10)
        ]
        assert servers == ["b"] * 10
        assert a.executions("lookup") == 2  # the measuring call and the one hedged away
        assert manager.server("a").status is ServerStatus.HEALTHY  # slow is not unhealthy
