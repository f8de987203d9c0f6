"""A plain SDK server in this process, in the 2026-07-28 era, is called directly (as the SDK's
``Client(server)`` calls it): its handler runs in the caller's task. What a caller relies on
holds there as over streams: the deadline cuts a handler that never answers, the caller's
cancellation reaches the handler, a request that may have run is not repeated elsewhere, and
progress reaches the caller. Servers of the test kit, and the ``initialize`` era, keep the
in-memory streams. Virtual time."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import trio
import trio.testing
from mcp.client.session import ClientSession
from mcp.server import Server
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolRequestParams, CallToolResult, ListToolsResult, TextContent, Tool
from pydantic import TypeAdapter

import trio_mcp
from trio_mcp._transports.base import Link
from trio_mcp._transports.memory import open_direct
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


async def test_a_call_is_a_checkpoint_even_when_the_handler_never_awaits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    plain = Plain("p")
    async with trio_mcp.open_manager([memory_server(plain.server, policy=POLICY)]) as manager:
        await manager.call_tool("where", {})  # connected, tools listed
        plain.tasks.clear()
        # An already cancelled caller sends nothing: the handler never runs.
        with trio.CancelScope() as scope:
            scope.cancel()
            await manager.call_tool("where", {})
        assert scope.cancelled_caught
        assert plain.tasks == []
        # A caller calling in a loop lets the other tasks run.
        turns = 0

        async def other() -> None:
            nonlocal turns
            while True:
                turns += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            await trio.lowlevel.checkpoint()
            before = turns
            for _ in range(10):
                await manager.call_tool("where", {})
            assert turns - before >= 5  # about once a call (scheduling order varies); never: 0
            nursery.cancel_scope.cancel()
        assert len(plain.tasks) == 10
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


def faulty(seen: list[Any]) -> Server[Any]:
    """A low-level server whose ``call_tool`` handler itself fails: ``boom`` raises an error,
    ``invalid`` a pydantic ``ValidationError``; ``slow`` notes the request id it was given and
    answers a second later."""

    async def call_tool(ctx: Any, params: CallToolRequestParams) -> CallToolResult:
        if params.name == "boom":
            raise RuntimeError("secret detail")
        if params.name == "invalid":
            TypeAdapter(int).validate_python("not a number")
        seen.append((ctx.request_id, trio.lowlevel.current_task()))
        await trio.sleep(1)
        return CallToolResult(content=[TextContent(type="text", text=str(ctx.request_id))])

    async def list_tools(ctx: Any, params: Any) -> ListToolsResult:
        return ListToolsResult(
            tools=[Tool(name=name, input_schema={"type": "object"}) for name in ("boom", "invalid", "slow")]
        )

    return Server("faulty", on_list_tools=list_tools, on_call_tool=call_tool)


async def outcomes(direct: bool) -> dict[str, tuple[str | None, str | None]]:
    """What the caller sees of each failing tool: the attempt's category and error."""
    transport = trio_mcp.MemoryTransport(server=faulty([]), direct=direct)
    config = trio_mcp.ServerConfig(name="f", transport=transport, policy=POLICY)
    seen: dict[str, tuple[str | None, str | None]] = {}
    async with trio_mcp.open_manager([config]) as manager:
        for tool in ("boom", "invalid"):
            with pytest.raises((trio_mcp.InvocationFailedError, trio_mcp.RequestRejectedError)) as caught:
                await manager.call_tool(tool, {})
            attempt = caught.value.attempts[-1]
            seen[tool] = (attempt.category, attempt.error)
    return seen


async def test_a_handler_that_raises_fails_the_call_as_it_does_over_the_streams(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    direct = await outcomes(direct=True)
    assert direct == await outcomes(direct=False)
    # What the handler raised stays in the server's log, not in the answer.
    assert direct["boom"] == ("rpc_error", "Internal server error (JSON-RPC -32603)")
    assert "secret detail" not in str(direct)
    assert direct["invalid"] == ("invalid_request", "Invalid request parameters (JSON-RPC -32602)")
    assert any("secret detail" in str(record.exc_info) for record in caplog.records)


async def test_calls_at_once_each_have_a_request_id_of_their_own(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[Any] = []
    config = memory_server(faulty(seen), name="f", policy=POLICY)
    async with trio_mcp.open_manager([config]) as manager:
        answers: list[str] = []

        async def call() -> None:
            result = await manager.call_tool("slow", {})
            answers.append(result.content[0].text)  # type: ignore[union-attr]

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(call)
        ids = [request_id for request_id, _ in seen]
        assert len(set(ids)) == 3
        assert sorted(answers) == sorted(str(i) for i in ids)
        assert {task for _, task in seen}.isdisjoint({trio.lowlevel.current_task()})  # the callers' own


async def test_a_request_after_the_server_side_closed_is_refused_and_runs_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The window between the server's side closing and the calls under way being cut: a request
    # sent then (by the SDK's own session, say) is "Connection closed", as the SDK's dispatcher has it.
    plain = Plain("p")
    async with open_direct(plain.server._lowlevel_server, Link("p")) as client:
        async with ClientSession(dispatcher=cast(Any, client)) as session:
            await session.discover()
            await session.call_tool("where", {})
            assert len(plain.tasks) == 1
            client._peer.close()  # type: ignore[union-attr]
            with pytest.raises(MCPError, match="Connection closed"):
                await session.call_tool("where", {})
            assert len(plain.tasks) == 1
