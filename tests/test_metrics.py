"""Prometheus metrics: the exposition of a real fleet, in virtual time.

Every test scrapes a ``CollectorRegistry`` with ``generate_latest`` and reads the text back, so
the names, labels and values asserted are the ones Prometheus would see.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing
from _fleet import policy
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import trio_mcp
from trio_mcp import (
    ConnectionState,
    InvocationFailedError,
    InvocationFinished,
    ServerState,
    ServerStatus,
    StateChange,
)
from trio_mcp.metrics import DEFAULT_BUCKETS, FleetCollector, FleetMetrics
from trio_mcp.testing import ScriptedServer, memory_server

Labels = tuple[tuple[str, str], ...]


def scrape(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def series(text: str, name: str) -> dict[Labels, float]:
    """Every sample called ``name`` in the exposition ``text``, by its sorted labels."""
    found: dict[Labels, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def key(**labels: str) -> Labels:
    return tuple(sorted(labels.items()))


def status_of(text: str, server: str) -> list[str]:
    """The statuses whose gauge is 1 for ``server``."""
    return [
        dict(labels)["status"]
        for labels, value in series(text, "trio_mcp_server_status").items()
        if dict(labels)["server"] == server and value == 1.0
    ]


@asynccontextmanager
async def fleet(
    **overrides: object,
) -> AsyncIterator[tuple[trio_mcp.Manager, FleetCollector, CollectorRegistry]]:
    """A manager whose collector is attached before any server is added (so every event counts)."""
    async with trio_mcp.open_manager(**overrides) as manager:  # type: ignore[arg-type]
        collector = FleetCollector(manager)
        registry = CollectorRegistry()
        registry.register(collector)
        try:
            yield manager, collector, registry
        finally:
            collector.close()


async def add(
    manager: trio_mcp.Manager, server: ScriptedServer, *, idempotent: bool = False, **overrides: object
) -> None:
    await manager.add_server(memory_server(server, policy=policy(**overrides), idempotent=idempotent))
    await manager.wait_for(server.name, lambda s: s.connection is ConnectionState.READY)


async def test_a_failover_shows_in_the_exposition(autojump_clock: trio.testing.MockClock) -> None:
    primary, backup = ScriptedServer("primary"), ScriptedServer("backup")
    async with fleet() as (manager, _, registry):
        await add(manager, primary, idempotent=True)  # safe to repeat elsewhere
        await add(manager, backup)
        primary.hang_tool("lookup")
        result = await manager.invoke(
            "tools/call", "lookup", {"key": "k"}, preferred=["primary", "backup"], attempt_timeout=3
        )
        assert result.server == "backup"
        text = scrape(registry)

    assert (
        'trio_mcp_failovers_total{from_server="primary",method="tools/call",to_server="backup"} 1.0'
        in text.splitlines()
    )
    assert series(text, "trio_mcp_failovers_total") == {
        key(method="tools/call", from_server="primary", to_server="backup"): 1.0
    }
    assert series(text, "trio_mcp_attempts_total") == {
        key(server="primary", method="tools/call", stage="invoke", category="timeout", sent="true"): 1.0,
        key(server="backup", method="tools/call", stage="invoke", category="ok", sent="true"): 1.0,
    }
    assert series(text, "trio_mcp_invocations_total") == {
        key(method="tools/call", server="backup", outcome="success"): 1.0
    }
    # The primary timed out after exactly 3 virtual seconds; the backup answered at once.
    buckets = series(text, "trio_mcp_invocation_duration_seconds_bucket")
    cumulative = {dict(labels)["le"]: value for labels, value in buckets.items()}
    assert cumulative["2.5"] == 0.0 and cumulative["5.0"] == 1.0 and cumulative["+Inf"] == 1.0
    assert series(text, "trio_mcp_invocation_duration_seconds_sum") == {
        key(method="tools/call", outcome="success"): 3.0
    }
    assert series(text, "trio_mcp_invocation_duration_seconds_count") == {
        key(method="tools/call", outcome="success"): 1.0
    }


async def test_passed_over_and_handshake_attempts_are_counted(autojump_clock: trio.testing.MockClock) -> None:
    a, b = ScriptedServer("a"), ScriptedServer("b")
    async with fleet() as (manager, collector, registry):
        await add(manager, a, unreachable_threshold=1)
        await add(manager, b)
        a.go_down()
        await manager.wait_for("a", lambda s: s.status is ServerStatus.UNREACHABLE)
        # a's retry window is closed: it is passed over (a select attempt), then b is used.
        await manager.call_tool("echo", {"text": "x"}, preferred=["a", "b"])
        # b's session is dropped: the next call connects first (a handshake attempt).
        manager.invalidate("b")
        await manager.wait_for("b", lambda s: s.connection is ConnectionState.IDLE)
        await manager.call_tool("echo", {"text": "y"}, preferred=["b"])
        text = scrape(registry)

    assert series(text, "trio_mcp_attempts_total") == {
        key(server="a", method="tools/call", stage="select", category="unavailable", sent="false"): 1.0,
        key(server="b", method="tools/call", stage="invoke", category="ok", sent="true"): 2.0,
        key(server="b", method="tools/call", stage="handshake", category="ok", sent="false"): 1.0,
    }
    assert series(text, "trio_mcp_failovers_total") == {
        key(method="tools/call", from_server="a", to_server="b"): 1.0
    }
    assert series(text, "trio_mcp_invocations_total") == {
        key(method="tools/call", server="b", outcome="success"): 2.0
    }
    assert collector.metrics.failovers == {("tools/call", "a", "b"): 1}


async def test_status_gauges_flip_when_a_server_goes_down_and_comes_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = ScriptedServer("a")
    async with fleet() as (manager, _, registry):
        await add(manager, a, unreachable_threshold=2)
        text = scrape(registry)
        assert status_of(text, "a") == ["healthy"]
        assert series(text, "trio_mcp_server_consecutive_failures") == {key(server="a"): 0.0}

        a.go_down()
        await manager.wait_for("a", lambda s: s.status is ServerStatus.DEGRADED)
        assert status_of(scrape(registry), "a") == ["degraded"]
        # Lost at 0, refused again at 1 (backoff 1 s): unreachable, next try at 3.
        await manager.wait_for("a", lambda s: s.status is ServerStatus.UNREACHABLE)
        assert trio.current_time() == 1.0
        text = scrape(registry)
        assert status_of(text, "a") == ["unreachable"]
        assert series(text, "trio_mcp_server_consecutive_failures") == {key(server="a"): 2.0}
        states = series(text, "trio_mcp_server_connection_state")
        assert [dict(k)["state"] for k, v in states.items() if v == 1.0] == ["backoff"]
        assert sum(states.values()) == 1.0 and len(states) == len(ConnectionState)

        a.come_up()
        await manager.wait_for("a", lambda s: s.connection is ConnectionState.READY)
        assert trio.current_time() == 3.0
        text = scrape(registry)
        assert status_of(text, "a") == ["recovered"]
        assert series(text, "trio_mcp_server_consecutive_failures") == {key(server="a"): 0.0}

    assert series(text, "trio_mcp_server_status_changes_total") == {
        key(server="a", status="healthy"): 1.0,
        key(server="a", status="degraded"): 1.0,
        key(server="a", status="unreachable"): 1.0,
        key(server="a", status="recovered"): 1.0,
    }
    # The first connection, then the refused one at 1 and the good one at 3.
    assert series(text, "trio_mcp_server_reconnects_total") == {key(server="a"): 2.0}
    assert series(text, "trio_mcp_server_handshakes_total") == {
        key(server="a", era="modern", result="success"): 2.0,
        key(server="a", era="unknown", result="failure"): 1.0,
    }


async def test_each_invocation_counts_one_outcome(autojump_clock: trio.testing.MockClock) -> None:
    a, b = ScriptedServer("a"), ScriptedServer("b")

    async def boom() -> str:
        raise ValueError("kaboom")

    async def picky(n: int) -> str:
        raise MCPError(INVALID_PARAMS, "n must be even")

    a.mcp_server.add_tool(boom, name="boom")
    a.mcp_server.add_tool(picky, name="picky")
    async with fleet() as (manager, collector, registry):
        await add(manager, a)
        await add(manager, b)
        await manager.call_tool("echo", {"text": "ok"}, preferred=["a"])  # success
        assert (await manager.call_tool("boom")).is_error  # tool_error
        with pytest.raises(trio_mcp.RequestRejectedError):  # the server refused it: rejected
            await manager.call_tool("picky", {"n": 1})
        with pytest.raises(trio_mcp.RequestRejectedError):  # its schema refused it: rejected
            await manager.call_tool("echo", {"wrong": 1}, preferred=["b", "a"])
        with pytest.raises(trio_mcp.NotOfferedError):  # not_offered
            await manager.read_resource("docs://nope")
        b.hang_tool("charge")
        with pytest.raises(InvocationFailedError) as info:  # sent, not repeated: unknown
            await manager.call_tool("charge", {"amount": 1}, preferred=["b", "a"], attempt_timeout=2)
        assert info.value.outcome == "unknown"
        a.go_down()
        b.go_down()
        await manager.wait_for("b", lambda s: s.connection is ConnectionState.BACKOFF)
        with pytest.raises(InvocationFailedError) as info:  # nothing could be sent: failed
            await manager.call_tool("echo", {"text": "x"}, preferred=["a"], failover="never")
        assert info.value.outcome == "failed"
        assert [(x.server, x.stage, x.category, x.sent) for x in info.value.attempts] == [
            ("a", "handshake", "unavailable", False)
        ]
        text = scrape(registry)

    assert series(text, "trio_mcp_invocations_total") == {
        key(method="tools/call", server="a", outcome="success"): 1.0,
        key(method="tools/call", server="a", outcome="tool_error"): 1.0,
        key(method="tools/call", server="a", outcome="rejected"): 1.0,
        key(method="tools/call", server="b", outcome="rejected"): 1.0,
        key(method="resources/read", server="", outcome="not_offered"): 1.0,
        key(method="tools/call", server="b", outcome="unknown"): 1.0,
        key(method="tools/call", server="a", outcome="failed"): 1.0,
    }
    # One duration per invocation, too.
    counts = series(text, "trio_mcp_invocation_duration_seconds_count")
    assert sum(counts.values()) == 7.0
    assert counts[key(method="tools/call", outcome="unknown")] == 1.0
    assert (
        series(text, "trio_mcp_invocation_duration_seconds_sum")[key(method="tools/call", outcome="unknown")]
        == 2.0
    )
    # The server-side refusal was sent; the schema refusals (of both preferred servers) never were.
    attempts = collector.metrics.attempts
    assert attempts["a", "tools/call", "invoke", "invalid_request", "true"] == 1
    assert attempts["b", "tools/call", "select", "invalid_request", "false"] == 1
    assert attempts["a", "tools/call", "select", "invalid_request", "false"] == 1
    assert attempts["b", "tools/call", "invoke", "timeout", "true"] == 1
    # Passing over b's schema to a's is no failover, and the charge was not repeated on a.
    assert collector.metrics.failovers == {}


async def test_handshakes_by_era_including_re_handshakes(autojump_clock: trio.testing.MockClock) -> None:
    modern, legacy = ScriptedServer("modern"), ScriptedServer("legacy", era="legacy")
    async with fleet() as (manager, _, registry):
        await add(manager, modern)
        await add(manager, legacy)
        await trio.sleep(1)
        await manager.initialize()  # server/discover again on modern; a new session on legacy
        modern.fail_probes()  # server/discover on a live session is answered with an error
        await trio.sleep(1)
        (snapshot,) = await manager.initialize("modern")  # the re-handshake fails; the session stays
        assert snapshot.connection is ConnectionState.READY and snapshot.status is ServerStatus.DEGRADED
        text = scrape(registry)

    assert series(text, "trio_mcp_server_handshakes_total") == {
        key(server="modern", era="modern", result="success"): 2.0,
        key(server="modern", era="modern", result="failure"): 1.0,
        key(server="legacy", era="legacy", result="success"): 2.0,
    }
    assert series(text, "trio_mcp_server_reconnects_total") == {key(server="legacy"): 1.0}


async def test_bulkhead_gauges_read_the_limiter_at_scrape_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = ScriptedServer("a")
    async with fleet() as (manager, _, registry):
        await add(manager, a, max_concurrency=1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(manager.call_tool, "sleep", {"seconds": 2}))
            nursery.start_soon(partial(manager.call_tool, "sleep", {"seconds": 1}))
            await trio.testing.wait_all_tasks_blocked()
            text = scrape(registry)
            assert series(text, "trio_mcp_server_in_flight") == {key(server="a"): 1.0}
            assert series(text, "trio_mcp_server_waiting") == {key(server="a"): 1.0}
            assert series(text, "trio_mcp_server_max_concurrency") == {key(server="a"): 1.0}
            assert series(text, "trio_mcp_server_session_parked") == {key(server="a"): 0.0}
        text = scrape(registry)
        assert series(text, "trio_mcp_server_in_flight") == {key(server="a"): 0.0}
        assert series(text, "trio_mcp_server_waiting") == {key(server="a"): 0.0}


async def test_event_log_drops_are_exported(autojump_clock: trio.testing.MockClock) -> None:
    a = ScriptedServer("a")
    async with fleet(invocation_log_size=3, connection_log_size=1) as (manager, _, registry):
        await add(manager, a)  # unknown -> healthy
        for _ in range(2):
            await manager.call_tool("echo", {"text": "x"})  # invoke_start + invoke_success each
        a.go_down()
        await manager.wait_for("a", lambda s: s.status is ServerStatus.DEGRADED)  # healthy -> degraded
        text = scrape(registry)
    assert series(text, "trio_mcp_event_log_dropped_total") == {
        key(log="invocation"): 1.0,
        key(log="connection"): 1.0,
    }


async def test_counters_outlive_a_removed_server_and_close_stops_counting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = ScriptedServer("a")
    async with fleet() as (manager, collector, registry):
        await add(manager, a)
        await manager.call_tool("echo", {"text": "x"})
        await manager.remove_server("a")
        text = scrape(registry)
        # The gauges describe the servers there are; the counters keep what happened.
        assert series(text, "trio_mcp_server_status") == {}
        assert series(text, "trio_mcp_invocations_total") == {
            key(method="tools/call", server="a", outcome="success"): 1.0
        }
        assert repr(collector) == "<FleetCollector attached servers=[]>"
        collector.close()
        collector.close()  # idempotent
        assert repr(collector) == "<FleetCollector closed servers=[]>"
        await add(manager, ScriptedServer("b"))
        await manager.call_tool("echo", {"text": "y"})
        text = scrape(registry)
        assert series(text, "trio_mcp_invocations_total") == {
            key(method="tools/call", server="a", outcome="success"): 1.0
        }
        assert status_of(text, "b") == ["healthy"]  # the gauges still read the state


async def test_registration_checks_names_and_buckets() -> None:
    async with trio_mcp.open_manager([]) as manager:
        registry = CollectorRegistry()
        registry.register(FleetCollector(manager))
        with pytest.raises(ValueError, match="Duplicated timeseries"):
            registry.register(FleetCollector(manager))
        for bad in ([1.0, 1.0], [2.0, 1.0], [math.nan]):
            with pytest.raises(ValueError, match="strictly increasing"):
                FleetCollector(manager, buckets=bad)
        custom = FleetCollector(manager, buckets=[0.5, math.inf])
        assert custom.metrics.durations.bounds == (0.5, math.inf)
        assert FleetMetrics().durations.bounds == (*DEFAULT_BUCKETS, math.inf)
        # Every family is described, under the names the exposition uses.
        names = {m.name for m in FleetCollector(manager).describe()}
        assert "trio_mcp_invocations" in names and "trio_mcp_server_status" in names
        assert len(names) == 15


async def test_the_stream_carries_the_end_of_every_invocation(autojump_clock: trio.testing.MockClock) -> None:
    a = ScriptedServer("a")
    async with trio_mcp.open_manager([memory_server(a, policy=policy())]) as m:
        await m.wait_for("a", lambda s: s.connection is ConnectionState.READY)
        a.delay_tool("echo", 1.5)
        ends: list[InvocationFinished] = []
        m.stream.add_listener(lambda e: ends.append(e) if isinstance(e, InvocationFinished) else None)
        with m.stream.subscribe(10) as subscription:
            start = trio.current_time()
            result = await m.invoke("tools/call", "echo", {"text": "x"}, request_id="r-1")
            (end,) = ends
            assert (end.method, end.target, end.request_id, end.correlation_id) == (
                "tools/call",
                "echo",
                "r-1",
                "r-1",
            )
            assert (end.outcome, end.server, end.attempts) == ("success", "a", result.attempts)
            assert (end.started_at, end.at, end.duration) == (start, start + 1.5, 1.5)
            received = []
            while True:
                try:
                    received.append(subscription.receive.receive_nowait())
                except trio.WouldBlock:
                    break
            # After the per-server steps, in stream order.
            assert [type(e).__name__ for e in received] == [
                "InvocationEvent",
                "InvocationEvent",
                "InvocationFinished",
            ]
            assert received[-1] is end and received[-1].seq == received[-2].seq + 1


def change(previous: ServerState, current: ServerState, reason: str = "test") -> StateChange:
    return StateChange(
        seq=1,
        server="a",
        previous=previous,
        current=current,
        reason=reason,
        category=None,
        correlation_id=None,
        at=0.0,
        timestamp=0.0,
    )


def test_state_changes_that_count_and_those_that_do_not() -> None:
    metrics = FleetMetrics()
    idle = ServerState()
    connecting = dataclasses.replace(idle, connection=ConnectionState.CONNECTING, sessions_opened=1)
    ready = dataclasses.replace(connecting, connection=ConnectionState.READY)  # no capabilities
    metrics(change(idle, connecting))  # the first connection: not a reconnect
    metrics(change(connecting, ready))
    assert metrics.handshakes == {("a", "unknown", "success"): 1} and metrics.reconnects == {}
    # Re-handshake failures are told apart from probe failures by their reason.
    degraded = dataclasses.replace(ready, status=ServerStatus.DEGRADED, consecutive_failures=1)
    metrics(change(ready, degraded, "probe failed: boom"))
    metrics(change(ready, degraded, "re-handshake failed: boom"))
    assert metrics.handshakes == {("a", "unknown", "success"): 1, ("a", "unknown", "failure"): 1}
    # Stopped while connecting: neither a success nor a failure.
    metrics(change(connecting, dataclasses.replace(connecting, connection=ConnectionState.CLOSED)))
    assert sum(metrics.handshakes.values()) == 2
    assert metrics.status_changes == {("a", "degraded"): 2}
