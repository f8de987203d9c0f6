"""An invocation its caller cancels (a cancel scope of the caller's own) still ends on the
manager's stream: the abandoned attempt is traced with category ``cancelled``, the end is
published once (``unknown`` if the request was sent, ``failed`` if not), and the server's
health is left alone. Virtual time, in-memory SDK servers."""

from __future__ import annotations

import trio
import trio.testing

import trio_mcp
from trio_mcp import ServerStatus
from trio_mcp.testing import ScriptedServer, memory_server

POLICY = trio_mcp.ServerPolicy(health_interval=3600, call_timeout=30)


class Recorder:
    def __init__(self, manager: trio_mcp.Manager) -> None:
        self.events: list[object] = []
        manager.stream.add_listener(self.events.append)

    def finished(self) -> list[trio_mcp.InvocationFinished]:
        return [e for e in self.events if isinstance(e, trio_mcp.InvocationFinished)]

    def kinds(self) -> list[tuple[str, str, str | None]]:
        return [
            (e.kind, e.server, e.category) for e in self.events if isinstance(e, trio_mcp.InvocationEvent)
        ]


def trace(attempts: tuple[trio_mcp.Attempt, ...]) -> list[tuple[str, str, str | None, bool]]:
    return [(a.server, str(a.stage), a.category, a.sent) for a in attempts]


async def test_a_call_its_caller_cancels_ends_as_unknown_and_leaves_the_server_healthy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = ScriptedServer("a")
    async with trio_mcp.open_manager([memory_server(server, policy=POLICY)]) as manager:
        await manager.acquire("a")
        seen = Recorder(manager)
        with trio.move_on_after(0.5) as scope:
            await manager.call_tool("sleep", {"seconds": 5})
        assert scope.cancelled_caught
        [end] = seen.finished()
        assert end.outcome == "unknown"  # it was sent: it may run to its end on the server
        assert trace(end.attempts) == [("a", "invoke", "cancelled", True)]
        assert end.attempts[0].budget is trio_mcp.Budget.CALLER
        assert end.attempts[0].duration == 0.5
        assert seen.kinds() == [("invoke_start", "a", None), ("invoke_failure", "a", "cancelled")]
        # The caller's choice says nothing about the server.
        snapshot = manager.server("a")
        assert snapshot.status is ServerStatus.HEALTHY
        assert snapshot.consecutive_failures == 0
        outcome = await manager.invoke("tools/call", "echo", {"text": "still here"})
        assert outcome.server == "a"


async def test_a_call_cancelled_while_connecting_ends_as_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = ScriptedServer("a")
    server.delay_handshake(5)
    async with trio_mcp.open_manager([memory_server(server, policy=POLICY)]) as manager:
        seen = Recorder(manager)
        with trio.move_on_after(1):
            await manager.call_tool("echo", {"text": "x"})
        [end] = seen.finished()
        assert end.outcome == "failed"  # nothing was sent
        assert trace(end.attempts) == [("a", "handshake", "cancelled", False)]
        assert ("handshake_failure", "a", "cancelled") in seen.kinds()
        assert server.executions("echo") == 0


async def test_a_hedged_read_cancelled_by_its_caller_ends_once_with_both_attempts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, second = ScriptedServer("first"), ScriptedServer("second")
    first.delay_tool("lookup", 5)
    second.delay_tool("lookup", 5)
    configs = [memory_server(s, policy=POLICY, idempotent_tools={"lookup"}) for s in (first, second)]
    async with trio_mcp.open_manager(configs) as manager:
        await manager.acquire("first")
        await manager.acquire("second")
        seen = Recorder(manager)
        with trio.move_on_after(1):
            await manager.invoke(
                "tools/call", "lookup", {"key": "k"}, preferred=["first", "second"], hedge_after=0.25
            )
        [end] = seen.finished()
        assert end.outcome == "unknown"
        assert sorted(trace(end.attempts)) == [
            ("first", "invoke", "cancelled", True),
            ("second", "invoke", "cancelled", True),
        ]
        assert [manager.server(name).status for name in ("first", "second")] == [ServerStatus.HEALTHY] * 2
