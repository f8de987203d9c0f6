"""Invocation with failover, in virtual time against scripted in-memory servers."""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio.testing
from _fleet import policy
from mcp.server.mcpserver import Context

import trio_mcp
from trio_mcp import ConnectionState, InvocationFailedError, ServerStatus
from trio_mcp.testing import ScriptedServer, memory_server


def text(result: object) -> str:
    return result.content[0].text  # type: ignore[attr-defined, no-any-return]


async def ready(manager: trio_mcp.Manager, *names: str) -> None:
    for name in names:
        await manager.wait_for(name, lambda s: s.connection is ConnectionState.READY)


async def test_preferred_order_then_status_order(autojump_clock: trio.testing.MockClock) -> None:
    servers = {n: ScriptedServer(n) for n in ("h", "r", "d", "u", "p")}
    configs = [memory_server(s, policy=policy(health_interval=10)) for s in servers.values()]
    async with trio_mcp.open_manager(configs) as manager:
        await ready(manager, *servers)
        # d: degraded (one failed probe); r: recovered (failed then good probe); u: unreachable.
        servers["d"].fail_probes()
        servers["r"].fail_probes()
        servers["u"].go_down()
        await trio.sleep(10.5)
        servers["r"].heal()
        await trio.sleep(10)
        assert manager.server("r").status is ServerStatus.RECOVERED
        assert manager.server("d").status is ServerStatus.DEGRADED
        assert manager.server("u").status is ServerStatus.UNREACHABLE
        assert not manager.should_retry("u")
        assert manager.candidates("tools/call", "echo") == ["h", "p", "r", "d"]
        assert manager.candidates("tools/call", "echo", preferred=["d", "p"]) == ["d", "p", "h", "r"]
        # Preferred order wins, failing candidates are passed in order.
        servers["d"].fail_tool("lookup", "broken")
        servers["p"].fail_tool("lookup", "broken")
        outcome = await manager.invoke(
            "tools/call", "lookup", {"key": "k"}, preferred=["d", "p"], failover="always"
        )
        assert outcome.server == "h"
        assert [(a.server, a.stage, a.success) for a in outcome.attempts] == [
            ("d", "invoke", False),
            ("p", "invoke", False),
            ("h", "invoke", True),
        ]
        assert [a.category for a in outcome.attempts] == ["rpc_error", "rpc_error", None]


async def test_unreachable_skipped_until_its_window_opens(autojump_clock: trio.testing.MockClock) -> None:
    a, b = ScriptedServer("a"), ScriptedServer("b")
    config_a = memory_server(a, policy=policy(unreachable_threshold=1, connect_on_start=True))
    async with trio_mcp.open_manager([config_a, memory_server(b, policy=policy())]) as manager:
        await ready(manager, "a", "b")
        a.go_down()
        await manager.wait_for("a", lambda s: s.status is ServerStatus.UNREACHABLE)
        retry_at = manager.server("a").retry_at
        assert retry_at == trio.current_time() + 1.0
        result = await manager.invoke("tools/call", "echo", {"text": "x"}, preferred=["a", "b"])
        # a is preferred but its window is closed: it is passed over (the trace says why).
        skipped, used = result.attempts
        assert (skipped.server, skipped.category, skipped.error, skipped.sent, skipped.duration) == (
            "a",
            "unavailable",
            "skipped: retry window closed",
            False,
            0.0,
        )
        assert (result.server, used.server, used.success) == ("b", "b", True)
        attempts_before = len(a.connect_attempts)
        a.come_up()
        await trio.sleep(retry_at - trio.current_time() - 0.01)
        # Still closed: invocations do not touch a (no connection attempt is made for them).
        await manager.invoke("tools/call", "echo", {"text": "y"}, preferred=["a", "b"])
        assert len(a.connect_attempts) == attempts_before
        await manager.wait_for("a", lambda s: s.status is ServerStatus.RECOVERED)
        assert trio.current_time() == retry_at
        assert manager.candidates("tools/call", "echo", preferred=["a"])[0] == "a"
        result = await manager.invoke("tools/call", "echo", {"text": "z"}, preferred=["a", "b"])
        assert result.server == "a"


async def test_hanging_server_abandoned_at_attempt_deadline(autojump_clock: trio.testing.MockClock) -> None:
    a, b = ScriptedServer("a"), ScriptedServer("b")
    configs = [memory_server(a, policy=policy(), idempotent=True), memory_server(b, policy=policy())]
    async with trio_mcp.open_manager(configs) as m:
        await ready(m, "a", "b")
        a.hang_tool("lookup")
        start = trio.current_time()
        result = await m.invoke("tools/call", "lookup", {"key": "k"}, preferred=["a", "b"], attempt_timeout=3)
        assert result.server == "b"
        assert trio.current_time() - start == 3.0
        first = result.attempts[0]
        assert (first.server, first.category, first.sent, first.duration) == ("a", "timeout", True, 3.0)
        assert a.executions("lookup") == 1 and a.completed["lookup"] == 0


async def test_side_effecting_tool_never_runs_twice(autojump_clock: trio.testing.MockClock) -> None:
    a, b = ScriptedServer("a"), ScriptedServer("b")
    async with trio_mcp.open_manager(
        [memory_server(a, policy=policy()), memory_server(b, policy=policy())]
    ) as m:
        await ready(m, "a", "b")
        a.hang_tool("charge")
        with pytest.raises(InvocationFailedError) as info:
            await m.call_tool("charge", {"amount": 5}, preferred=["a", "b"], attempt_timeout=3)
        err = info.value
        assert err.outcome == "unknown" and err.method == "tools/call"
        assert [(x.server, x.stage, x.category, x.sent) for x in err.attempts] == [
            ("a", "invoke", "timeout", True)
        ]
        assert str(err) == (
            "tools/call charge: tried 1 of 2 servers (last: a: no answer within 3s); not repeated on b"
            " because the attempt on a may have run; outcome unknown: it may have executed"
        )
        assert (a.executions("charge"), b.executions("charge")) == (1, 0)
        # Crash mid-call (the request was delivered): still no second execution.
        a.heal()
        a.crash_during("charge")
        with pytest.raises(InvocationFailedError) as info:
            await m.call_tool("charge", {"amount": 5}, preferred=["a", "b"])
        assert info.value.outcome == "unknown"
        assert info.value.attempts[-1].category == "transport_error"
        assert (a.executions("charge"), b.executions("charge")) == (2, 0)


async def test_idempotent_tool_and_reads_fail_over(autojump_clock: trio.testing.MockClock) -> None:
    a, b = ScriptedServer("a"), ScriptedServer("b")
    configs = [
        memory_server(a, policy=policy(unreachable_threshold=10), idempotent_tools={"charge"}),
        memory_server(b, policy=policy()),
    ]
    async with trio_mcp.open_manager(configs) as m:
        await ready(m, "a", "b")
        a.hang_tool("charge")
        result = await m.invoke(
            "tools/call", "charge", {"amount": 1}, preferred=["a", "b"], attempt_timeout=2
        )
        assert result.server == "b" and text(result.result) == "charged 1"
        assert (a.executions("charge"), b.executions("charge")) == (1, 1)
        a.delay_tool("docs://readme", 100)
        contents = await m.read_resource("docs://readme", preferred=["a", "b"], attempt_timeout=2)
        assert contents.contents[0].text == "readme from b"  # type: ignore[union-attr]
        prompt = await m.get_prompt("review", {"code": "x = 1"}, preferred=["b"])
        assert "x = 1" in prompt.messages[0].content.text  # type: ignore[union-attr]
        # failover="always" overrides, "never" stops at the first failure even for reads.
        a.hang_tool("echo")
        result = await m.invoke(
            "tools/call", "echo", {"text": "t"}, preferred=["a", "b"], attempt_timeout=1, failover="always"
        )
        assert result.server == "b"
        with pytest.raises(InvocationFailedError) as info:
            await m.read_resource("docs://readme", preferred=["a", "b"], attempt_timeout=1, failover="never")
        assert [x.server for x in info.value.attempts] == ["a"]


async def test_trusted_annotations_count_only_for_trusted_servers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    trusted, plain, backup = ScriptedServer("trusted"), ScriptedServer("plain"), ScriptedServer("backup")
    configs = [
        memory_server(trusted, policy=policy(), trusted=True),
        memory_server(plain, policy=policy()),
        memory_server(backup, policy=policy()),
    ]
    async with trio_mcp.open_manager(configs) as m:
        await ready(m, "trusted", "plain", "backup")
        await m.list_tools()  # learn the annotations (lookup: readOnlyHint, idempotentHint)
        trusted.hang_tool("lookup")
        plain.hang_tool("lookup")
        result = await m.invoke(
            "tools/call", "lookup", {"key": "k"}, preferred=["trusted", "backup"], attempt_timeout=1
        )
        assert result.server == "backup"
        with pytest.raises(InvocationFailedError) as info:
            await m.invoke(
                "tools/call", "lookup", {"key": "k"}, preferred=["plain", "backup"], attempt_timeout=1
            )
        assert info.value.outcome == "unknown"
        assert backup.executions("lookup") == 1


async def test_outcome_failed_only_when_nothing_executed(autojump_clock: trio.testing.MockClock) -> None:
    a, b = ScriptedServer("a"), ScriptedServer("b")
    configs = [memory_server(a, policy=policy()), memory_server(b, policy=policy(handshake_timeout=2))]
    async with trio_mcp.open_manager(configs) as m:
        await ready(m, "a", "b")
        a.go_down()  # connection refused: not sent
        b.hang_handshake()
        b.close_connections()  # b must handshake again, and that hangs: not sent
        await trio.sleep(0.5)
        with pytest.raises(InvocationFailedError) as info:
            await m.call_tool("charge", {"amount": 3}, preferred=["a", "b"], failover="safe")
        err = info.value
        assert err.outcome == "failed"
        assert all(not x.sent for x in err.attempts)
        assert {x.stage for x in err.attempts} == {"handshake"}
        assert (a.executions("charge"), b.executions("charge")) == (0, 0)


async def test_not_sent_failover_is_always_allowed(autojump_clock: trio.testing.MockClock) -> None:
    a, b = ScriptedServer("a"), ScriptedServer("b")
    config_a = memory_server(a, policy=policy(connect_on_start=False))
    async with trio_mcp.open_manager([config_a, memory_server(b, policy=policy())]) as m:
        await ready(m, "b")
        a.fail_handshake("nope")
        result = await m.invoke("tools/call", "charge", {"amount": 9}, preferred=["a", "b"])
        assert result.server == "b"
        assert [(x.server, x.stage, x.success, x.sent) for x in result.attempts] == [
            ("a", "handshake", False, False),
            ("b", "invoke", True, True),
        ]
        kinds = [(e.server, e.kind) for e in m.invocation_events(request_id=result.request_id)]
        assert kinds == [
            ("a", "handshake_start"),
            ("a", "handshake_failure"),
            ("b", "invoke_start"),
            ("b", "invoke_success"),
        ]
        assert b.executions("charge") == 1 and a.executions("charge") == 0


async def test_progress_extends_deadline_up_to_hard_max(autojump_clock: trio.testing.MockClock) -> None:
    a = ScriptedServer("a")
    async with trio_mcp.open_manager([memory_server(a, policy=policy(progress_hard_max=20))]) as m:
        await ready(m, "a")
        seen: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        # 5 steps of 2 s, attempt timeout 3 s: progress keeps it alive to the end (10 s).
        start = trio.current_time()
        result = await m.call_tool(
            "work", {"steps": 5, "interval": 2}, attempt_timeout=3, progress_callback=on_progress
        )
        assert text(result) == "worked 5 steps" and seen == [1, 2, 3, 4, 5]
        assert trio.current_time() - start == 10.0
        # 20 steps of 2 s: progress never extends past the 20 s hard maximum.
        start = trio.current_time()
        with pytest.raises(InvocationFailedError) as info:
            await m.call_tool("work", {"steps": 20, "interval": 2}, attempt_timeout=3)
        assert trio.current_time() - start == 20.0
        assert info.value.attempts[0].category == "timeout"
        # Without progress the attempt timeout holds.
        start = trio.current_time()
        with pytest.raises(InvocationFailedError):
            await m.call_tool("sleep", {"seconds": 100}, attempt_timeout=3)
        assert trio.current_time() - start == 3.0


async def test_overall_deadline_holds_across_attempts(autojump_clock: trio.testing.MockClock) -> None:
    servers = [ScriptedServer(f"s{i}") for i in range(3)]
    async with trio_mcp.open_manager([memory_server(s, policy=policy()) for s in servers]) as m:
        await ready(m, "s0", "s1", "s2")
        for s in servers:
            s.hang_tool("lookup")
        start = trio.current_time()
        with pytest.raises(InvocationFailedError) as info:
            await m.call_tool("lookup", {"key": "k"}, timeout=5, attempt_timeout=2, failover="always")
        assert trio.current_time() - start == 5.0
        assert [x.duration for x in info.value.attempts] == [2.0, 2.0, 1.0]


async def test_stale_handshake_rerun_before_the_call(autojump_clock: trio.testing.MockClock) -> None:
    a = ScriptedServer("a", era="legacy")
    async with trio_mcp.open_manager(
        [memory_server(a, policy=policy(handshake_max_age=60, health_interval=1000))]
    ) as m:
        await ready(m, "a")
        await trio.sleep(61)
        result = await m.invoke("tools/call", "echo", {"text": "x"})
        assert a.requests["initialize"] == 2
        assert [(x.stage, x.success) for x in result.attempts] == [("handshake", True), ("invoke", True)]
        kinds = [e.kind for e in m.invocation_events(request_id=result.request_id)]
        assert kinds == ["handshake_start", "handshake_success", "invoke_start", "invoke_success"]
        assert m.server("a").handshaken_at == 61.0


@pytest.mark.parametrize("stage", ["handshake", "invoke"])
async def test_handshake_timeout_vs_invoke_timeout(
    stage: str, autojump_clock: trio.testing.MockClock
) -> None:
    a, b = ScriptedServer("a"), ScriptedServer("b")
    configs = [
        memory_server(a, policy=policy(handshake_timeout=4, call_timeout=4, connect_on_start=False)),
        memory_server(b, policy=policy()),
    ]
    async with trio_mcp.open_manager(configs) as m:
        await ready(m, "b")
        if stage == "handshake":
            a.hang_handshake()
        else:
            a.hang_tool("lookup")
            await m.connect("a")
        start = trio.current_time()
        result = await m.invoke("tools/call", "lookup", {"key": "k"}, preferred=["a", "b"], failover="always")
        assert trio.current_time() - start == 4.0  # same clock progression either way
        failed = result.attempts[0]
        assert (failed.server, failed.stage, failed.category) == ("a", stage, "timeout")
        assert failed.sent is (stage == "invoke")
        snap = m.server("a")
        assert snap.last_error_category == "timeout"
        assert snap.retry_at == start + 4.0 + 1.0
        events = [(e.kind, e.category) for e in m.invocation_events(server="a", request_id=result.request_id)]
        if stage == "handshake":
            assert events == [("handshake_start", None), ("handshake_failure", "timeout")]
            assert snap.status is ServerStatus.DEGRADED and snap.connection is ConnectionState.BACKOFF
        else:
            assert events == [("invoke_start", None), ("invoke_failure", "timeout")]
            assert snap.status is ServerStatus.DEGRADED and snap.connection is ConnectionState.READY
        (conn_event,) = m.connection_events(server="a", correlation_id=result.request_id)
        assert conn_event.to_status == "degraded" and conn_event.category == "timeout"


async def test_is_error_is_a_result_and_bad_requests_are_rejected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = ScriptedServer("a"), ScriptedServer("b")
    async with trio_mcp.open_manager(
        [memory_server(a, policy=policy()), memory_server(b, policy=policy())]
    ) as m:
        await ready(m, "a", "b")
        # Arguments the tool's own schema refuses: rejected before anything is sent.
        with pytest.raises(trio_mcp.RequestRejectedError) as info:
            await m.invoke("tools/call", "echo", {"wrong": 1}, preferred=["a", "b"])
        assert info.value.server == "a"
        assert "'text' is a required property" in str(info.value)
        assert [(x.server, x.category, x.sent) for x in info.value.attempts] == [
            ("a", "invalid_request", False),
            ("b", "invalid_request", False),
        ]
        assert a.requests["tools/call"] == b.requests["tools/call"] == 0
        # A resource no server offers (the catalogs say so): rejected, nothing sent.
        with pytest.raises(trio_mcp.RequestRejectedError) as info:
            await m.read_resource("docs://nope", preferred=["a", "b"])
        assert isinstance(info.value, trio_mcp.NotOfferedError)
        assert (info.value.target, info.value.servers) == ("docs://nope", ("a", "b"))
        assert a.requests["resources/read"] == b.requests["resources/read"] == 0

        assert m.server("a").status is ServerStatus.HEALTHY
    # isError results:
    c = ScriptedServer("c")

    async def boom() -> str:
        raise ValueError("kaboom")

    c.mcp_server.add_tool(boom, name="boom")
    async with trio_mcp.open_manager([memory_server(c, policy=policy())]) as m:
        await ready(m, "c")
        result = await m.call_tool("boom")
        assert result.is_error and "boom" in text(result)
        assert m.server("c").status is ServerStatus.HEALTHY


async def test_bulkhead_wait_counts_against_deadline(autojump_clock: trio.testing.MockClock) -> None:
    a = ScriptedServer("a")
    async with trio_mcp.open_manager([memory_server(a, policy=policy(max_concurrency=1))]) as m:
        await ready(m, "a")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(m.call_tool, "sleep", {"seconds": 10}, attempt_timeout=20))
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            with pytest.raises(InvocationFailedError) as info:
                await m.call_tool("echo", {"text": "x"}, attempt_timeout=3)
            assert trio.current_time() - start == 3.0
            assert info.value.attempts[0].sent is False
            assert info.value.outcome == "failed"
        assert a.executions("echo") == 0


async def test_catalogs_and_catalog_routing(autojump_clock: trio.testing.MockClock) -> None:
    a, b = ScriptedServer("a"), ScriptedServer("b")

    async def only_b() -> str:
        return "b-only"

    b.mcp_server.add_tool(only_b, name="only_b")
    async with trio_mcp.open_manager(
        [memory_server(a, policy=policy()), memory_server(b, policy=policy())]
    ) as m:
        await ready(m, "a", "b")
        tools = {e.key: e.servers for e in await m.list_tools()}
        assert tools["echo"] == ("a", "b") and tools["only_b"] == ("b",)
        assert await m.servers_offering("tools", "only_b") == ["b"]
        assert [e.key for e in await m.list_resources()] == ["docs://readme"]
        assert [e.key for e in await m.list_prompts()] == ["review"]
        assert m.candidates("tools/call", "only_b", preferred=["a"]) == ["b"]
        result = await m.invoke("tools/call", "only_b", preferred=["a"])
        assert result.server == "b"
        assert [(x.server, x.success, x.error) for x in result.attempts] == [
            ("a", False, "skipped: does not offer tool 'only_b'"),
            ("b", True, None),
        ]


async def test_invocation_event_filters(autojump_clock: trio.testing.MockClock) -> None:
    a = ScriptedServer("a")
    async with trio_mcp.open_manager([memory_server(a, policy=policy())], invocation_log_size=5) as m:
        await ready(m, "a")
        first = await m.invoke("tools/call", "echo", {"text": "1"}, request_id="req-1")
        await m.invoke("resources/read", "docs://readme", request_id="req-2")
        assert first.request_id == "req-1"
        assert [e.kind for e in m.invocation_events(request_id="req-1")] == ["invoke_start", "invoke_success"]
        assert [e.method for e in m.invocation_events(method="resources/read")] == ["resources/read"] * 2
        assert m.invocation_events(correlation_id="req-2") == m.invocation_events(request_id="req-2")
        assert len(m.invocation_events(limit=1)) == 1
        for i in range(5):
            await m.invoke("tools/call", "echo", {"text": str(i)})
        assert len(m.invocation_events()) == 5 and m.invocation_log.dropped == 9
        with pytest.raises(trio_mcp.UnknownServerError):
            await m.invoke("tools/call", "echo", preferred=["ghost"])
        with pytest.raises(ValueError):
            await m.invoke("tools/call", "echo", failover="sometimes")  # type: ignore[arg-type]


async def test_list_changed_notification_refreshes_the_catalog(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = ScriptedServer("a", era="legacy"), ScriptedServer("b")

    async def late() -> str:
        return "late from a"

    async def grow(ctx: Context) -> str:
        a.mcp_server.add_tool(late, name="late")
        await ctx.session.send_tool_list_changed()
        return "grown"

    a.mcp_server.add_tool(grow, name="grow")
    async with trio_mcp.open_manager(
        [memory_server(a, policy=policy()), memory_server(b, policy=policy())]
    ) as m:
        await ready(m, "a", "b")
        await m.list_tools()
        assert m.candidates("tools/call", "late") == []  # nobody offers it (yet)
        await m.call_tool("grow", preferred=["a"])
        await trio.testing.wait_all_tasks_blocked()
        # The notification dropped a's cached tool list: a is a candidate again, and a new
        # listing shows the tool.
        assert m.candidates("tools/call", "late") == ["a"]
        assert await m.servers_offering("tools", "late") == ["a"]
        assert text(await m.call_tool("late")) == "late from a"


async def test_drain_ends_in_flight_invocations_with_a_clear_outcome(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = ScriptedServer("a"), ScriptedServer("b")
    configs = [memory_server(a, policy=policy()), memory_server(b, policy=policy(connect_on_start=False))]
    async with trio_mcp.open_manager(configs) as m:
        await ready(m, "a")
        a.hang_tool("charge")
        b.hang_handshake()
        outcomes: dict[str, InvocationFailedError] = {}

        async def call(server: str, tool: str, arguments: dict[str, object]) -> None:
            try:
                await m.call_tool(tool, arguments, preferred=[server], failover="never", attempt_timeout=100)
            except InvocationFailedError as exc:
                outcomes[server] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "a", "charge", {"amount": 1})
            nursery.start_soon(call, "b", "echo", {"text": "x"})  # still handshaking
            await trio.sleep(1)
            m.drain(3)
        assert trio.current_time() == 4.0
        sent, connecting = outcomes["a"], outcomes["b"]
        assert sent.outcome == "unknown"
        assert (sent.attempts[-1].category, sent.attempts[-1].sent) == ("shutdown", True)
        assert connecting.outcome == "failed"
        assert (connecting.attempts[-1].stage, connecting.attempts[-1].category) == ("handshake", "shutdown")
        assert a.executions("charge") == 1
        assert m.server("a").status is ServerStatus.HEALTHY  # abandoning is not the server's fault
        with pytest.raises(trio_mcp.ManagerClosedError, match="shutting down"):
            await m.call_tool("echo", {"text": "late"})


@pytest.mark.parametrize("era", ["dual", "legacy"])
async def test_abandoned_request_is_cancelled_at_the_server(
    era: str, autojump_clock: trio.testing.MockClock
) -> None:
    a = ScriptedServer("a", era=era)
    async with trio_mcp.open_manager([memory_server(a, policy=policy())]) as m:
        await ready(m, "a")
        a.hang_tool("charge")
        with pytest.raises(InvocationFailedError):
            await m.call_tool("charge", {"amount": 1}, attempt_timeout=2)
        await trio.testing.wait_all_tasks_blocked()
        # notifications/cancelled reached the server: its handler is not running any more.
        assert (a.executions("charge"), a.in_flight["charge"], a.completed["charge"]) == (1, 0, 0)
        assert m.server("a").session.active  # and the session is still usable
        assert text(await m.call_tool("echo", {"text": "ok"})) == "ok"


async def test_modern_list_changes_arrive_on_a_listen_stream(autojump_clock: trio.testing.MockClock) -> None:
    a = ScriptedServer("a")  # 2026-07-28: list changes are delivered on subscriptions/listen

    async def late() -> str:
        return "late"

    async def grow(ctx: Context) -> str:
        a.mcp_server.add_tool(late, name="late")
        await ctx.notify_tools_changed()
        return "grown"

    a.mcp_server.add_tool(grow, name="grow")
    async with trio_mcp.open_manager([memory_server(a, policy=policy())]) as m:
        await ready(m, "a")
        assert m.server("a").protocol_version == "2026-07-28"
        await m.list_tools()
        assert m.candidates("tools/call", "late") == []
        await m.call_tool("grow")
        await trio.testing.wait_all_tasks_blocked()
        assert m.candidates("tools/call", "late") == ["a"]
        assert text(await m.call_tool("late")) == "late"


# -- regressions: each of these failed before the state had a single writer ---------------------


async def test_failover_never_tries_exactly_the_first_preferred_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    down, up = ScriptedServer("down"), ScriptedServer("up")
    config = memory_server(down, policy=policy(unreachable_threshold=1))
    async with trio_mcp.open_manager([config, memory_server(up, policy=policy())]) as m:
        await ready(m, "down", "up")
        down.go_down()
        await m.wait_for("down", lambda s: s.status is ServerStatus.UNREACHABLE)
        with pytest.raises(InvocationFailedError) as info:
            await m.call_tool("echo", {"text": "x"}, preferred=["down"], failover="never")
        (attempt,) = info.value.attempts
        assert (attempt.server, attempt.category, attempt.sent) == ("down", "unavailable", False)
        assert str(info.value) == (
            "tools/call echo: tried 0 of 1 server (last: down: skipped: retry window closed);"
            " not tried on up: failover='never'"
        )
        assert up.executions("echo") == 0
        # A listing of one server runs on that server only.
        listed_before = up.requests["tools/list"]
        with pytest.raises(InvocationFailedError):
            await m.server_catalog("down", "tools")
        listed = m.invocation_events(method="tools/list")
        assert [(e.server, e.kind, e.category) for e in listed] == [
            ("down", "handshake_failure", "unavailable")
        ]
        assert up.requests["tools/list"] == listed_before


async def test_a_caller_budget_does_not_degrade_a_healthy_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = ScriptedServer("a"), ScriptedServer("b")
    async with trio_mcp.open_manager(
        [memory_server(a, policy=policy(call_timeout=5)), memory_server(b, policy=policy(call_timeout=5))]
    ) as m:
        await ready(m, "a", "b")
        with pytest.raises(InvocationFailedError) as info:
            await m.call_tool("sleep", {"seconds": 3}, preferred=["a", "b"], attempt_timeout=1)
        first = info.value.attempts[0]
        assert (first.server, first.category, first.budget, first.sent) == ("a", "timeout", "caller", True)
        with pytest.raises(InvocationFailedError) as info:
            await m.call_tool("sleep", {"seconds": 3}, preferred=["b"], timeout=1)
        assert info.value.attempts[-1].budget == "caller"
        for name in ("a", "b"):
            snap = m.server(name)
            assert (snap.status, snap.consecutive_failures, snap.retry_at) == (ServerStatus.HEALTHY, 0, None)
        assert m.connection_events(server="a")[-1].to_status == "healthy"
        # The server's own call_timeout passing does count.
        with pytest.raises(InvocationFailedError) as info:
            await m.call_tool("sleep", {"seconds": 30}, preferred=["a"], failover="never")
        assert info.value.attempts[-1].budget == "server"
        assert m.server("a").status is ServerStatus.DEGRADED


async def test_fan_outs_raise_one_typed_error_never_a_group(autojump_clock: trio.testing.MockClock) -> None:
    a, b = ScriptedServer("a"), ScriptedServer("b")
    async with trio_mcp.open_manager(
        [memory_server(a, policy=policy()), memory_server(b, policy=policy())]
    ) as m:
        await ready(m, "a", "b")
        m.drain(0)
        with pytest.raises(trio_mcp.ManagerClosedError):
            await m.catalog("tools")
        # A health check is a per-server result, even while shutting down.
        assert [s.name for s in await m.health_check()] == ["a", "b"]
    with pytest.raises(trio_mcp.ManagerClosedError):
        await m.catalog("tools")
    with pytest.raises(trio_mcp.ManagerClosedError):
        await m.health_check()


async def test_progress_does_not_extend_an_attempt_past_the_drain_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = ScriptedServer("a")
    async with trio_mcp.open_manager([memory_server(a, policy=policy(call_timeout=5))]) as m:
        await ready(m, "a")
        outcome: list[BaseException] = []

        async def call() -> None:
            try:
                await m.call_tool("work", {"steps": 20, "interval": 1}, timeout=30)
            except InvocationFailedError as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await trio.sleep(1.5)
            m.drain(2)
        assert trio.current_time() == 3.5
        (error,) = outcome
        assert [(a.category, a.budget, a.sent) for a in error.attempts] == [("shutdown", "caller", True)]


async def test_arguments_are_checked_against_the_catalog_before_any_server_is_touched(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = ScriptedServer("a"), ScriptedServer("b")

    async def lookup_a(key: str) -> str:
        return f"a:{key}"

    async def lookup_b(key: int, exact: bool) -> str:
        return f"b:{key}:{exact}"

    # One tool name, two different schemas.
    a.mcp_server.add_tool(lookup_a, name="find")
    b.mcp_server.add_tool(lookup_b, name="find")
    async with trio_mcp.open_manager(
        [memory_server(a, policy=policy()), memory_server(b, policy=policy())]
    ) as m:
        await ready(m, "a", "b")
        # Catalogs are known from the handshake: no listing was needed to route.
        assert m.candidates("tools/call", "find") == ["a", "b"]
        # A call shaped for b goes to b, even though a is preferred and offers the name.
        result = await m.invoke("tools/call", "find", {"key": 7, "exact": True}, preferred=["a", "b"])
        assert (result.server, text(result.result)) == ("b", "b:7:True")
        assert result.attempts[0].server == "a" and result.attempts[0].category == "invalid_request"
        result = await m.invoke("tools/call", "find", {"key": "k"}, preferred=["b", "a"])
        assert (result.server, text(result.result)) == ("a", "a:k")
        # Shaped for neither: rejected, naming the argument, nothing sent anywhere.
        with pytest.raises(trio_mcp.RequestRejectedError) as info:
            await m.call_tool("find", {"key": 1.5})
        assert "'key'" in str(info.value)
        # The aggregated catalog shows the collision: one entry per distinct schema.
        finds = [e for e in await m.list_tools() if e.key == "find"]
        assert sorted(e.servers for e in finds) == [("a",), ("b",)]
        # A prompt without its required argument is rejected before it is sent.
        before = a.requests["prompts/get"] + b.requests["prompts/get"]
        with pytest.raises(trio_mcp.RequestRejectedError) as info:
            await m.get_prompt("review", {})
        assert "missing required argument 'code'" in str(info.value)
        assert a.requests["prompts/get"] + b.requests["prompts/get"] == before
        for name in ("a", "b"):
            assert m.server(name).status is ServerStatus.HEALTHY
