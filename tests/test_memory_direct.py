"""A plain SDK server in this process, in the 2026-07-28 era, is called directly (as the SDK's
``Client(server)`` calls it): its handler runs in the caller's task. What a caller relies on
holds there as over streams: the deadline cuts a handler that never answers, the caller's
cancellation reaches the handler, a request that may have run is not repeated elsewhere, and
progress reaches the caller. Servers of the test kit, and the ``initialize`` era, keep the
in-memory streams. Virtual time."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing
from mcp.server.mcpserver import Context, MCPServer

import trio_mcp
from trio_mcp.testing import ScriptedServer, memory_server

POLICY = trio_mcp.ServerPolicy(health_interval=3600, call_timeout=30)


class Plain:
    """A plain ``MCPServer`` whose tools note what they saw."""

    def __init__(self, name: str) -> None:
        self.server = MCPServer(name)
        self.tasks: list[trio.lowlevel.Task] = []
        self.runs: dict[str, int] = {}
        self.cancelled: dict[str, int] = {}
        server = self.server

        @server.tool()
        async def where() -> str:
            self.tasks.append(trio.lowlevel.current_task())
            return "here"

        @server.tool()
        async def hang() -> str:
            return await self._hang("hang")

        @server.tool()
        async def charge(amount: int) -> str:
            return await self._hang("charge")

        @server.tool()
        async def count(steps: int, ctx: Context) -> str:
            for step in range(steps):
                await trio.sleep(1)
                await ctx.report_progress(step + 1, steps, f"step {step + 1}")
            return f"{steps} steps"

    async def _hang(self, name: str) -> str:
        self.runs[name] = self.runs.get(name, 0) + 1
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled[name] = self.cancelled.get(name, 0) + 1
            raise
        raise AssertionError("unreachable")


async def test_a_plain_sdk_server_runs_the_handler_in_the_callers_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    plain = Plain("p")
    async with trio_mcp.open_manager([memory_server(plain.server, policy=POLICY)]) as manager:
        result = await manager.call_tool("where", {})
        assert result.content[0].text == "here"  # type: ignore[union-attr]
        assert plain.tasks == [trio.lowlevel.current_task()]
        assert manager.server("p").protocol_version == "2026-07-28"


async def test_the_initialize_era_keeps_the_streams(autojump_clock: trio.testing.MockClock) -> None:
    plain = Plain("p")
    policy = trio_mcp.ServerPolicy(health_interval=3600, call_timeout=30, protocol="legacy")
    async with trio_mcp.open_manager([memory_server(plain.server, policy=policy)]) as manager:
        await manager.call_tool("where", {})
        [task] = plain.tasks
        assert task is not trio.lowlevel.current_task()  # the SDK's server loop ran it
        assert manager.server("p").protocol_version == "2025-11-25"


async def test_direct_false_keeps_the_streams(autojump_clock: trio.testing.MockClock) -> None:
    plain = Plain("p")
    transport = trio_mcp.MemoryTransport(server=plain.server, direct=False)
    config = trio_mcp.ServerConfig(name="p", transport=transport, policy=POLICY)
    async with trio_mcp.open_manager([config]) as manager:
        await manager.call_tool("where", {})
        [task] = plain.tasks
        assert task is not trio.lowlevel.current_task()
        assert manager.server("p").protocol_version == "2026-07-28"


async def test_a_test_kit_server_keeps_the_streams(autojump_clock: trio.testing.MockClock) -> None:
    # Its faults (killed connections, wire faults) act on the streams, as on a real transport.
    server = ScriptedServer("s")
    async with trio_mcp.open_manager([memory_server(server, policy=POLICY)]) as manager:
        await manager.acquire("s")
        assert server.live_connections == 1
        assert server.close_connections() == 1


async def test_the_deadline_cuts_a_handler_that_never_answers(autojump_clock: trio.testing.MockClock) -> None:
    plain = Plain("p")
    async with trio_mcp.open_manager([memory_server(plain.server, policy=POLICY)]) as manager:
        await manager.acquire("p")
        start = trio.current_time()
        with pytest.raises(trio_mcp.InvocationFailedError) as raised:
            await manager.call_tool("hang", {}, attempt_timeout=2)
        assert trio.current_time() - start == 2
        error = raised.value
        assert error.outcome is trio_mcp.Outcome.UNKNOWN  # the handler ran: it may have acted
        [attempt] = error.attempts
        assert (attempt.category, attempt.sent, attempt.duration) == ("timeout", True, 2)
        # Cut at once, in the caller's task: nothing of it runs on.
        assert plain.runs == {"hang": 1}
        assert plain.cancelled == {"hang": 1}


async def test_the_callers_cancellation_reaches_the_handler(autojump_clock: trio.testing.MockClock) -> None:
    plain = Plain("p")
    async with trio_mcp.open_manager([memory_server(plain.server, policy=POLICY)]) as manager:
        ends: list[trio_mcp.InvocationFinished] = []
        manager.stream.add_listener(
            lambda e: ends.append(e) if isinstance(e, trio_mcp.InvocationFinished) else None
        )
        with trio.move_on_after(0.5):
            await manager.call_tool("hang", {})
        assert plain.cancelled == {"hang": 1}
        [end] = ends
        assert end.outcome == "unknown"
        assert manager.server("p").status is trio_mcp.ServerStatus.HEALTHY


async def test_a_side_effecting_call_that_may_have_run_is_not_repeated_on_another_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, second = Plain("first"), Plain("second")
    configs = [memory_server(p.server, policy=POLICY) for p in (first, second)]
    async with trio_mcp.open_manager(configs) as manager:
        await manager.acquire("first")
        await manager.acquire("second")
        with pytest.raises(trio_mcp.InvocationFailedError) as raised:
            await manager.call_tool("charge", {"amount": 5}, preferred=["first", "second"], attempt_timeout=1)
        assert raised.value.outcome is trio_mcp.Outcome.UNKNOWN
        assert [(a.server, a.sent) for a in raised.value.attempts] == [("first", True)]
        assert first.runs == {"charge": 1}
        assert second.runs == {}  # never sent twice


async def test_progress_reaches_the_caller(
    autojump_clock: trio.testing.MockClock,
) -> None:
    plain = Plain("p")
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with trio_mcp.open_manager([memory_server(plain.server, policy=POLICY)]) as manager:
        result = await manager.call_tool("count", {"steps": 3}, progress_callback=on_progress)
        assert result.content[0].text == "3 steps"  # type: ignore[union-attr]
        assert seen == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]


async def test_arguments_the_server_refuses_are_a_rejected_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    plain = Plain("p")
    async with trio_mcp.open_manager([memory_server(plain.server, policy=POLICY)]) as manager:
        await manager.acquire("p")
        arguments: dict[str, Any] = {"amount": "five"}
        with pytest.raises(trio_mcp.RequestRejectedError):
            await manager.call_tool("charge", arguments)
        assert plain.runs == {}
        assert manager.server("p").status is trio_mcp.ServerStatus.HEALTHY


async def test_closing_the_connection_cuts_the_calls_under_way_before_the_lifespan_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    order: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(server: MCPServer) -> AsyncIterator[None]:
        order.append("lifespan entered")
        yield
        order.append("lifespan left")

    server = MCPServer("p", lifespan=lifespan)

    @server.tool()
    async def hang() -> str:
        try:
            await trio.sleep_forever()
        finally:
            order.append("handler ended")
        raise AssertionError("unreachable")

    failures: list[trio_mcp.InvocationFailedError] = []
    async with trio_mcp.open_manager([memory_server(server, policy=POLICY)]) as manager:
        await manager.acquire("p")

        async def call() -> None:
            try:
                await manager.call_tool("hang", {})
            except trio_mcp.InvocationFailedError as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await trio.sleep(1)
            assert manager.invalidate("p")
        [failure] = failures
        assert failure.outcome is trio_mcp.Outcome.UNKNOWN
        [attempt] = failure.attempts
        assert (attempt.category, attempt.sent) == ("transport_error", True)
        assert "connection closed" in str(attempt.error).lower()
        assert order == ["lifespan entered", "handler ended", "lifespan left"]
        # The next use connects again, with a lifespan of its own.
        await manager.acquire("p")
        assert order[-1] == "lifespan entered"
