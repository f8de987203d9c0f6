"""The supervised fleet in virtual time (pytest-trio's autojump_clock)."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from _fleet import policy

import trio_mcp
from trio_mcp import BackoffPolicy, ConnectionState, Freshness, ServerStatus
from trio_mcp._clock import TimeAnchor
from trio_mcp._events import EventStream
from trio_mcp._supervisor import ServerSupervisor
from trio_mcp.testing import ScriptedServer, memory_server


def is_status(status: ServerStatus):  # type: ignore[no-untyped-def]
    return lambda snap: snap.status is status


async def test_connects_both_eras_and_stores_capability_snapshots(
    autojump_clock: trio.testing.MockClock,
) -> None:
    modern = ScriptedServer("modern", instructions="be nice")
    legacy = ScriptedServer("legacy", era="legacy")
    configs = [memory_server(modern, policy=policy()), memory_server(legacy, policy=policy())]
    async with trio_mcp.open_manager(configs, clock_anchor=1_000_000.0) as manager:
        for name in ("modern", "legacy"):
            await manager.wait_for(name, is_status(ServerStatus.HEALTHY))
        m, lg = manager.server("modern"), manager.server("legacy")
        assert m.capabilities is not None and lg.capabilities is not None
        assert (m.capabilities.protocol_version, m.capabilities.era) == ("2026-07-28", "modern")
        assert (lg.capabilities.protocol_version, lg.capabilities.era) == ("2025-11-25", "legacy")
        assert m.capabilities.instructions == "be nice"
        assert lg.capabilities.server_name == "legacy"
        assert "tools" in m.capabilities.capabilities
        assert (m.capabilities.captured_at, m.capabilities.captured_timestamp) == (0.0, 1_000_000.0)
        # Probes: ping on the legacy connection, server/discover on the modern one.
        await trio.sleep(10.5)
        assert legacy.requests["ping"] == 1
        assert modern.requests["ping"] == 0
        assert modern.requests["server/discover"] == 2  # handshake + one probe
        assert manager.server("modern").last_checked_at == 10.0


async def test_exact_backoff_schedule_with_seeded_random(autojump_clock: trio.testing.MockClock) -> None:
    server = ScriptedServer("down")
    server.go_down()
    backoff = BackoffPolicy()  # gRPC defaults, +/-20 % jitter
    config = memory_server(server, policy=policy(backoff=backoff, unreachable_threshold=3))
    async with trio_mcp.open_manager([config], rng=random.Random(42)) as manager:
        await trio.sleep(60)
        # Seed 42's schedule with gRPC's defaults, pinned as literals.
        assert server.connect_attempts == pytest.approx(
            [0.0, 1.055771, 2.351778, 4.681408, 8.323916, 15.497411, 26.724303, 46.133391], abs=1e-6
        )
        snap = manager.server("down")
        assert snap.status is ServerStatus.UNREACHABLE
        assert snap.last_error_category == "connect_error"
        assert snap.connection is ConnectionState.BACKOFF


async def test_backoff_resets_after_successful_handshake(autojump_clock: trio.testing.MockClock) -> None:
    server = ScriptedServer("s")
    server.go_down()
    async with trio_mcp.open_manager([memory_server(server, policy=policy())]) as manager:
        await trio.sleep(6.5)  # attempts at 0, 1, 3 (delays 1, 2), next at 7
        assert server.connect_attempts == [0.0, 1.0, 3.0]
        server.come_up()
        await manager.wait_for("s", lambda s: s.connection is ConnectionState.READY)
        assert trio.current_time() == 7.0
        assert manager.server("s").retry_count == 0
        server.go_down()  # drops the connection: the schedule starts over at 1 s
        await trio.sleep(4.5)
        assert server.connect_attempts[3:] == [7.0, 8.0, 10.0]


async def test_degraded_unreachable_window_then_recovered_healthy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = ScriptedServer("s")
    config = memory_server(server, policy=policy(health_interval=10, unreachable_threshold=3))
    async with trio_mcp.open_manager([config]) as manager:
        await manager.wait_for("s", is_status(ServerStatus.HEALTHY))
        server.fail_probes("probe says no")
        await manager.wait_for("s", is_status(ServerStatus.DEGRADED))
        assert trio.current_time() == 10.0
        snap = manager.server("s")
        assert (snap.last_error_category, snap.consecutive_failures) == ("rpc_error", 1)
        assert "probe says no" in (snap.last_error or "")
        await manager.wait_for("s", is_status(ServerStatus.UNREACHABLE))
        assert trio.current_time() == 30.0
        # Unreachable: the connection is dropped and the retry window is closed until retry_at.
        snap = manager.server("s")
        assert snap.retry_at is not None and snap.retry_at > trio.current_time()
        assert not manager.should_retry("s")
        with pytest.raises(trio_mcp.ServerUnavailableError) as info:
            await manager.supervisor("s").acquire()
        assert info.value.retry_at == snap.retry_at
        await trio.sleep_until(snap.retry_at)
        assert manager.should_retry("s")
        server.heal()
        await manager.wait_for("s", is_status(ServerStatus.RECOVERED))
        recovered_at = trio.current_time()
        await manager.wait_for("s", is_status(ServerStatus.HEALTHY))
        assert trio.current_time() == recovered_at + 10.0  # the next probe
        transitions = [(e.from_status, e.to_status) for e in manager.connection_events(server="s")]
        assert transitions == [
            ("unknown", "healthy"),
            ("healthy", "degraded"),
            ("degraded", "unreachable"),
            ("unreachable", "recovered"),
            ("recovered", "healthy"),
        ]


async def test_probe_timeout_counts_as_failure(autojump_clock: trio.testing.MockClock) -> None:
    server = ScriptedServer("s", era="legacy")
    async with trio_mcp.open_manager([memory_server(server, policy=policy(probe_timeout=2))]) as manager:
        await manager.wait_for("s", is_status(ServerStatus.HEALTHY))
        server.delay_probes(60)
        await manager.wait_for("s", is_status(ServerStatus.DEGRADED))
        assert trio.current_time() == 12.0
        assert manager.server("s").last_error_category == "timeout"


async def test_hanging_handshake_is_cut_off_at_its_timeout(autojump_clock: trio.testing.MockClock) -> None:
    server = ScriptedServer("s")
    server.hang_handshake()
    async with trio_mcp.open_manager([memory_server(server, policy=policy(handshake_timeout=5))]) as manager:
        await manager.wait_for("s", is_status(ServerStatus.DEGRADED))
        assert trio.current_time() == 5.0
        snap = manager.server("s")
        assert snap.last_error_category == "timeout"
        assert snap.retry_at == 6.0
        assert snap.capabilities is None
        with pytest.raises(trio_mcp.HandshakeTimeoutError):
            await manager.supervisor("s").connect()  # forced: ignores the retry window
        assert trio.current_time() == 10.0


async def test_failed_handshake_keeps_the_last_good_snapshot(autojump_clock: trio.testing.MockClock) -> None:
    server = ScriptedServer("s")
    async with trio_mcp.open_manager([memory_server(server, policy=policy())]) as manager:
        await manager.wait_for("s", is_status(ServerStatus.HEALTHY))
        good = manager.server("s").capabilities
        server.fail_handshake("no more")
        server.close_connections()
        await manager.wait_for("s", is_status(ServerStatus.DEGRADED))
        await trio.sleep(5)
        snap = manager.server("s")
        assert snap.capabilities is good
        assert snap.connection is ConnectionState.BACKOFF


async def test_connection_closed_reconnects_with_a_new_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = ScriptedServer("s")
    async with trio_mcp.open_manager([memory_server(server, policy=policy())]) as manager:
        sup = manager.supervisor("s")
        first = await sup.acquire()
        server.close_connections()
        await manager.wait_for("s", lambda s: s.session.active and s.session.session_id == 2)
        assert trio.current_time() == 1.0  # backoff 1 s after the loss
        events = manager.connection_events(server="s")
        assert events[-2].to_status == "degraded" and events[-2].category == "transport_error"
        assert events[-1].to_status == "recovered"
        second = await sup.acquire()
        assert second is not first and second.session is not first.session
        assert not first.alive


async def test_stale_handshake_is_rerun_before_use(autojump_clock: trio.testing.MockClock) -> None:
    modern, legacy = ScriptedServer("modern"), ScriptedServer("legacy", era="legacy")
    cfg = {"handshake_max_age": 100.0, "health_interval": 1000.0}
    async with trio_mcp.open_manager(
        [memory_server(modern, policy=policy(**cfg)), memory_server(legacy, policy=policy(**cfg))]
    ) as manager:
        for name in ("modern", "legacy"):
            await manager.wait_for(name, lambda s: s.connection is ConnectionState.READY)
        assert manager.server("modern").handshake_expires_at == 100.0
        await trio.sleep(150)
        assert manager.server("modern").handshake_stale(trio.current_time())
        # Modern era: server/discover again on the same connection.
        before = modern.requests["server/discover"]
        conn = await manager.acquire("modern")
        assert modern.requests["server/discover"] == before + 1
        assert conn.session_id == 1
        assert manager.server("modern").handshaken_at == 150.0
        # Legacy era: a handshake belongs to a session, so a new session is opened.
        conn = await manager.acquire("legacy")
        assert conn.session_id == 2
        assert legacy.requests["initialize"] == 2
        assert manager.server("legacy").handshaken_at == 150.0
        assert manager.server("legacy").handshake_expires_at == 250.0


async def test_freshness_unknown_active_recent_stale(autojump_clock: trio.testing.MockClock) -> None:
    server = ScriptedServer("s")
    config = memory_server(server, policy=policy(connect_on_start=False, freshness_window=60))
    async with trio_mcp.open_manager([config]) as manager:
        (info,) = manager.sessions()
        assert (info.active, info.freshness) == (False, Freshness.UNKNOWN)
        assert manager.server("s").connection is ConnectionState.IDLE
        await manager.call_tool("echo", {"text": "x"})
        (info,) = manager.sessions()
        assert (info.active, info.handshaken, info.freshness) == (True, True, Freshness.ACTIVE_RECENT)
        await trio.sleep(61)
        (info,) = manager.sessions(freshness="stale")
        assert info.freshness is Freshness.STALE  # probes are not activity
        await manager.call_tool("echo", {"text": "y"})
        assert manager.sessions(freshness=Freshness.STALE) == []
        assert manager.sessions(freshness="active_recent")[0].last_activity_at == 61.0


async def test_invalidate_and_refresh_give_new_sessions(autojump_clock: trio.testing.MockClock) -> None:
    server = ScriptedServer("s")
    async with trio_mcp.open_manager([memory_server(server, policy=policy())]) as manager:
        first = await manager.acquire("s")
        assert manager.invalidate("s") is True
        await manager.wait_for("s", lambda s: s.connection is ConnectionState.IDLE)
        assert manager.sessions(active_only=True) == []
        assert server.live_connections == 0
        assert manager.invalidate("s") is False
        # The next use reconnects.
        second = await manager.acquire("s")
        assert second is not first and second.session is not first.session
        assert second.session_id == first.session_id + 1
        info = await manager.refresh("s")
        third = await manager.acquire("s")
        assert info.session_id == third.session_id == second.session_id + 1
        assert third.session is not second.session
        assert not second.alive
        assert server.live_connections == 1


async def test_connect_all_concurrently_and_session_listing(autojump_clock: trio.testing.MockClock) -> None:
    servers = [ScriptedServer(f"s{i}") for i in range(4)]
    for s in servers:
        s.delay_handshake(3)
    servers[3].hang_handshake()
    configs = [memory_server(s, policy=policy(connect_on_start=False)) for s in servers]
    async with trio_mcp.open_manager(configs) as manager:
        snaps = await manager.connect()
        assert trio.current_time() == 5.0  # concurrent: max(3, handshake timeout 5)
        assert [s.status for s in snaps] == [ServerStatus.HEALTHY] * 3 + [ServerStatus.DEGRADED]
        assert [i.server for i in manager.sessions(active_only=True)] == ["s0", "s1", "s2"]
        assert [i.server for i in manager.sessions(limit=2)] == ["s0", "s1"]
        assert [i.server for i in manager.sessions(server="s3")] == ["s3"]
        with pytest.raises(trio_mcp.UnknownServerError):
            manager.sessions(server="nope")
        with pytest.raises(ValueError):
            manager.sessions(limit=-1)


async def test_events_filters_and_correlation(autojump_clock: trio.testing.MockClock) -> None:
    a, b = ScriptedServer("a"), ScriptedServer("b")
    async with trio_mcp.open_manager(
        [memory_server(a, policy=policy()), memory_server(b, policy=policy(call_timeout=1))]
    ) as m:
        await m.wait_for("a", is_status(ServerStatus.HEALTHY))
        await m.wait_for("b", is_status(ServerStatus.HEALTHY))
        b.hang_tool("charge")
        with pytest.raises(trio_mcp.InvocationFailedError) as info:
            await m.call_tool("charge", {"amount": 1}, preferred=["b"], failover="never")
        rid = info.value.request_id
        (event,) = m.connection_events(correlation_id=rid)
        assert (event.server, event.from_status, event.to_status, event.category) == (
            "b",
            "healthy",
            "degraded",
            "timeout",
        )
        assert [e.server for e in m.connection_events(server="a")] == ["a"]
        assert len(m.connection_events(limit=1)) == 1
        assert m.connection_events(limit=1)[0] is m.connection_events()[-1]
        assert m.connection_events(limit=0) == []


async def test_manager_exit_closes_everything(autojump_clock: trio.testing.MockClock) -> None:
    servers = [ScriptedServer(f"s{i}") for i in range(3)]
    async with trio_mcp.open_manager([memory_server(s, policy=policy()) for s in servers]) as manager:
        for s in servers:
            await manager.wait_for(s.name, lambda snap: snap.connection is ConnectionState.READY)
        assert sum(s.live_connections for s in servers) == 3
    assert sum(s.live_connections for s in servers) == 0
    with pytest.raises(trio_mcp.ManagerClosedError):
        await manager.call_tool("echo", {"text": "late"})


async def test_registry(autojump_clock: trio.testing.MockClock) -> None:
    server = ScriptedServer("a")
    async with trio_mcp.open_manager() as manager:
        await manager.add_server(memory_server(server, policy=policy()))
        with pytest.raises(trio_mcp.ServerExistsError):
            await manager.add_server(memory_server(server, policy=policy()))
        await manager.wait_for("a", is_status(ServerStatus.HEALTHY))
        await manager.remove_server("a")
        assert server.live_connections == 0
        assert manager.names == []
        with pytest.raises(trio_mcp.UnknownServerError):
            manager.server("a")
    with pytest.raises(trio_mcp.ServerExistsError):
        async with trio_mcp.open_manager([memory_server(server), memory_server(server)]):
            pass  # pragma: no cover


@pytest.mark.slow
async def test_soak_24h_fifty_flapping_servers(autojump_clock: trio.testing.MockClock) -> None:
    rnd = random.Random(99)
    servers = [ScriptedServer(f"s{i:02d}") for i in range(50)]
    configs = [
        memory_server(s, policy=policy(health_interval=300, backoff=BackoffPolicy(cap=60))) for s in servers
    ]
    changes: list[trio_mcp.ConnectionEvent] = []
    async with trio_mcp.open_manager(rng=random.Random(5), connection_log_size=500) as manager:
        manager.connection_log.add_listener(changes.append)
        for config in configs:
            await manager.add_server(config)

        async def flap(server: ScriptedServer) -> None:
            while True:
                await trio.sleep(rnd.uniform(60, 3600))
                if rnd.random() < 0.5:
                    server.go_down()
                else:
                    server.fail_probes()
                await trio.sleep(rnd.uniform(10, 600))
                server.heal()

        async with trio.open_nursery() as nursery:
            for s in servers:
                nursery.start_soon(flap, s)
            await trio.sleep(24 * 3600)
            nursery.cancel_scope.cancel()
        for s in servers:
            s.heal()
        await trio.sleep(600)
        log = manager.connection_log
        assert len(log) == 500 and log.recorded == len(changes) > 500
        assert log.dropped == log.recorded - 500
        assert list(log) == changes[-500:]
        # Every change is logged: each server's event chain is continuous, from unknown to now.
        for s in servers:
            chain = [e for e in changes if e.server == s.name]
            assert chain[0].from_status == "unknown"
            for prev, nxt in itertools.pairwise(chain):
                assert prev.to_status == nxt.from_status
            assert chain[-1].to_status == manager.server(s.name).status.value == "healthy"


async def test_a_supervisor_bug_does_not_take_the_fleet_down(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = ScriptedServer("a"), ScriptedServer("b")
    async with trio_mcp.open_manager(
        [memory_server(a, policy=policy()), memory_server(b, policy=policy())]
    ) as m:
        await m.wait_for("a", is_status(ServerStatus.HEALTHY))
        await trio.testing.wait_all_tasks_blocked()  # session 1 is being served
        sup = m.supervisor("a")
        original = type(sup)._serve
        calls = 0

        async def broken(self: Any, conn: trio_mcp.Connection, write: Any) -> None:
            nonlocal calls
            if self is sup:
                calls += 1
                if calls == 1:
                    raise RuntimeError("bug")
            await original(self, conn, write)

        monkeypatch.setattr(type(sup), "_serve", broken)
        a.close_connections()
        # Session 2 meets the bug; it is recorded like any failure and session 3 follows.
        await m.wait_for("a", lambda s: s.session.active and s.session.session_id == 3)
        assert "bug" in (m.server("a").last_error or "")
        assert m.server("b").status is ServerStatus.HEALTHY
        assert (await m.call_tool("echo", {"text": "ok"}, preferred=["a"])).content[0].text == "ok"  # type: ignore[union-attr]
        assert calls == 2  # session 2 met the bug, session 3 is served


async def test_a_probe_that_finds_a_healthy_server_healthy_publishes_no_change(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Such a probe changes only when the server was checked: a usage stamp of the connection,
    read into snapshots, not a state change (a thousand servers probed every second would
    otherwise put a thousand changes a second on the state-change stream, for every listener
    to handle). A probe that fails is published, and so is the first success after it."""
    server = ScriptedServer("a")
    config = memory_server(server, policy=policy(health_interval=10, probe_spread=0.0))
    async with trio_mcp.open_manager([config]) as manager:
        await manager.wait_for("a", is_status(ServerStatus.HEALTHY))
        connected = trio.current_time()
        reasons: list[str] = []
        manager.stream.add_listener(
            lambda event: reasons.append(event.reason) if isinstance(event, trio_mcp.StateChange) else None
        )
        await trio.sleep(35)
        assert reasons == []
        assert manager.server("a").last_checked_at == connected + 30

        server.fail_probes()
        await manager.wait_for("a", lambda s: s.consecutive_failures == 1)
        assert [r.split(":")[0] for r in reasons] == ["probe failed"]
        server.fail_probes(None)
        await manager.wait_for("a", lambda s: s.consecutive_failures == 0)
        assert [r.split(":")[0] for r in reasons] == ["probe failed", "probe succeeded"]


# -- regressions: each of these failed before the state had a single writer ---------------------


async def test_wait_for_sees_every_published_change(autojump_clock: trio.testing.MockClock) -> None:
    server = ScriptedServer("a")
    async with trio_mcp.open_manager([memory_server(server, policy=policy(health_interval=10))]) as m:
        await m.wait_for("a", is_status(ServerStatus.HEALTHY))
        # Probes of a healthy server change only last_checked_at: that is a change too.
        snap = await m.wait_for("a", lambda s: s.last_checked_at >= 10)
        assert trio.current_time() == snap.last_checked_at == 10.0
        # A removed server ends the wait with a typed error.
        async with trio.open_nursery() as nursery:

            async def wait_unreachable() -> None:
                with pytest.raises(trio_mcp.ManagerClosedError):
                    await m.wait_for("a", is_status(ServerStatus.UNREACHABLE))

            nursery.start_soon(wait_unreachable)
            await trio.testing.wait_all_tasks_blocked()
            await m.remove_server("a")


async def test_a_raising_event_listener_cannot_break_state(autojump_clock: trio.testing.MockClock) -> None:
    server = ScriptedServer("a")
    async with trio_mcp.open_manager([memory_server(server, policy=policy())]) as m:

        def broken(event: object) -> None:
            raise RuntimeError("listener bug")

        m.connection_log.add_listener(broken)
        m.stream.add_listener(broken)
        snap = await m.wait_for("a", is_status(ServerStatus.HEALTHY))
        assert snap.last_error is None
        assert (await m.call_tool("echo", {"text": "ok"})).content[0].text == "ok"  # type: ignore[union-attr]
        assert m.server("a").last_error is None


async def test_initialize_runs_a_new_handshake_in_both_eras(autojump_clock: trio.testing.MockClock) -> None:
    modern, legacy = ScriptedServer("modern"), ScriptedServer("legacy", era="legacy")
    async with trio_mcp.open_manager(
        [memory_server(modern, policy=policy()), memory_server(legacy, policy=policy())]
    ) as m:
        for name in ("modern", "legacy"):
            await m.wait_for(name, lambda s: s.connection is ConnectionState.READY)
        await trio.sleep(3)
        discovers, initializes = modern.requests["server/discover"], legacy.requests["initialize"]
        snaps = {s.name: s for s in await m.initialize()}
        assert snaps["modern"].handshaken_at == snaps["legacy"].handshaken_at == 3.0
        assert modern.requests["server/discover"] == discovers + 1
        assert snaps["modern"].session.session_id == 1  # same connection, discovered again
        assert legacy.requests["initialize"] == initializes + 1
        assert snaps["legacy"].session.session_id == 2  # a legacy handshake belongs to a new session


async def test_connect_slots_bound_concurrent_handshakes(autojump_clock: trio.testing.MockClock) -> None:
    """A slot is held from opening the transport until the handshake (and first listing) is
    done, then given back while the session is served: a fleet connects in waves, not a herd."""
    servers = [ScriptedServer(f"s{i}") for i in range(3)]
    for server in servers:
        server.delay_handshake(1.0)
    anchor = TimeAnchor(0.0)
    stream = EventStream(anchor, connection_log_size=100, invocation_log_size=100)
    slots = trio.CapacityLimiter(2)
    sups = [
        ServerSupervisor(
            memory_server(server, policy=policy()),
            anchor=anchor,
            stream=stream,
            rng=random.Random(0),
            connect_slots=slots,
        )
        for server in servers
    ]
    async with trio.open_nursery() as nursery:
        for sup in sups:
            await nursery.start(sup.run)
        ready = [await sup.wait_for(is_status(ServerStatus.HEALTHY)) for sup in sups]
        assert [snap.handshaken_at for snap in ready] == [1.0, 1.0, 2.0]
        assert slots.borrowed_tokens == 0
        nursery.cancel_scope.cancel()


async def test_closing_never_raises_what_a_transport_said_while_torn_down(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transport that complains while it is cancelled raises its errors grouped with
    ``Cancelled``; leaving the manager must not raise them (a server's failure is recorded,
    never thrown at whoever closes the manager)."""
    import trio_mcp._supervisor as supervisor_module

    real_open_transport = supervisor_module.open_transport

    @asynccontextmanager
    async def complaining_transport(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async with real_open_transport(*args, **kwargs) as streams, trio.open_nursery() as nursery:

            async def complain_when_cancelled() -> None:
                try:
                    await trio.sleep_forever()
                finally:
                    raise ConnectionResetError("reset while torn down")

            nursery.start_soon(complain_when_cancelled)
            yield streams

    monkeypatch.setattr(supervisor_module, "open_transport", complaining_transport)
    servers = [ScriptedServer(f"s{i}") for i in range(3)]
    async with trio_mcp.open_manager([memory_server(s, policy=policy()) for s in servers]) as manager:
        for server in servers:
            await manager.wait_for(server.name, is_status(ServerStatus.HEALTHY))
    assert [manager.server(s.name).connection for s in servers] == [ConnectionState.CLOSED] * 3


@pytest.mark.parametrize("spread", [0.5, 0.0])
async def test_first_probes_are_spread_over_the_end_of_the_interval(
    autojump_clock: trio.testing.MockClock, spread: float
) -> None:
    """Ten servers that connect together probe at ten moments in the last half of the interval,
    not all at once (probe_spread=0: exactly one interval after connecting)."""
    servers = [ScriptedServer(f"s{i}") for i in range(10)]
    configs = [memory_server(s, policy=policy(health_interval=10.0, probe_spread=spread)) for s in servers]
    async with trio_mcp.open_manager(configs, rng=random.Random(3)) as manager:
        for server in servers:
            await manager.acquire(server.name)
        connected = trio.current_time()
        probed = []
        for server in servers:
            snap = await manager.wait_for(
                server.name, lambda s: s.last_checked_at is not None and s.last_checked_at > connected
            )
            assert snap.last_checked_at is not None
            probed.append(snap.last_checked_at - connected)
    if spread:
        assert all(10.0 * (1 - spread) <= t <= 10.0 for t in probed), probed
        assert len({round(t, 6) for t in probed}) == 10
    else:
        assert probed == [pytest.approx(10.0)] * 10


@pytest.mark.parametrize("bad", [-0.1, 1.0, True, "half"])
def test_probe_spread_is_checked(bad: object) -> None:
    with pytest.raises(trio_mcp.ConfigError, match="probe_spread"):
        trio_mcp.ServerPolicy(probe_spread=bad)  # type: ignore[arg-type]
