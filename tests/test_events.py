"""The event stream and its bounded logs: numbering, filters, limits, subscribers, listeners."""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import pytest
import trio
import trio.testing
from _fleet import policy

import trio_mcp
from trio_mcp import ConnectionEvent, EventStream, InvocationEvent, ServerState, ServerStatus, StateChange
from trio_mcp._clock import TimeAnchor
from trio_mcp._events import EventLog
from trio_mcp.testing import ScriptedServer, memory_server

ANCHOR = 1_700_000_000.0


def connection_event(seq: int, server: str, *, correlation_id: str | None = None) -> ConnectionEvent:
    return ConnectionEvent(
        seq=seq,
        server=server,
        from_status="unknown",
        to_status="healthy",
        reason="handshake succeeded",
        category=None,
        correlation_id=correlation_id,
        at=float(seq),
        timestamp=ANCHOR + seq,
    )


def new_stream(*, log_size: int = 10) -> EventStream:
    return EventStream(TimeAnchor(ANCHOR), connection_log_size=log_size, invocation_log_size=log_size)


def emit(stream: EventStream, request_id: str, kind: str = "invoke_start", server: str = "a") -> None:
    stream.invocation(
        kind, server, "tools/call", request_id, "echo", error=None, category=None, at=trio.current_time()
    )


# -- EventLog ------------------------------------------------------------------------------------


def test_event_log_keeps_the_newest_and_counts_the_dropped() -> None:
    with pytest.raises(ValueError, match="maxlen"):
        EventLog[ConnectionEvent](0)
    log = EventLog[ConnectionEvent](3)
    assert (log.maxlen, len(log), log.recorded, log.dropped) == (3, 0, 0, 0)
    for seq in range(1, 6):
        log.append(connection_event(seq, "a" if seq % 2 else "b"))
    assert [e.seq for e in log] == [3, 4, 5]
    assert (len(log), log.recorded, log.dropped) == (3, 5, 2)
    assert repr(log) == "<EventLog 3/3 recorded=5>"


def test_event_log_query_filters_and_limits() -> None:
    log = EventLog[ConnectionEvent](10)
    for seq, server, cid in [(1, "a", "x"), (2, "b", "x"), (3, "a", None), (4, "a", "y"), (5, "b", "y")]:
        log.append(connection_event(seq, server, correlation_id=cid))

    def seqs(**query: Any) -> list[int]:
        return [e.seq for e in log.query(**query)]

    assert seqs() == [1, 2, 3, 4, 5]
    assert seqs(server="a") == [1, 3, 4]
    assert seqs(server="a", correlation_id="y") == [4]
    assert seqs(server=None, correlation_id="x") == [1, 2]  # None: no filter
    assert seqs(server="nope") == []
    # ``limit`` keeps the newest matches, oldest first.
    assert seqs(server="a", limit=2) == [3, 4]
    assert seqs(limit=1) == [5]
    assert seqs(limit=99) == [1, 2, 3, 4, 5]
    assert seqs(limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        log.query(limit=-1)


def test_event_log_listeners_are_isolated_and_removable(caplog: pytest.LogCaptureFixture) -> None:
    log = EventLog[ConnectionEvent](2)
    seen: list[int] = []

    def broken(event: ConnectionEvent) -> None:
        raise RuntimeError("listener bug")

    remove_broken = log.add_listener(broken)
    remove_seen = log.add_listener(lambda e: seen.append(e.seq))
    with caplog.at_level(logging.ERROR, logger="trio_mcp"):
        log.append(connection_event(1, "a"))
    # The broken listener was logged; the event was recorded and the next listener called.
    assert [r.getMessage() for r in caplog.records] == [f"event listener {broken!r} failed"]
    assert caplog.records[0].exc_info is not None and caplog.records[0].exc_info[0] is RuntimeError
    assert [e.seq for e in log] == [1] and seen == [1]

    remove_broken()
    caplog.clear()
    log.append(connection_event(2, "a"))
    assert caplog.records == [] and seen == [1, 2]
    remove_seen()
    log.append(connection_event(3, "a"))
    assert seen == [1, 2]
    assert [e.seq for e in log] == [2, 3]


def test_event_dicts_use_the_api_names() -> None:
    data = connection_event(7, "a", correlation_id="c-1").to_dict()
    assert data == {
        "seq": 7,
        "server": "a",
        "from": "unknown",
        "to": "healthy",
        "reason": "handshake succeeded",
        "category": None,
        "correlation_id": "c-1",
        "at": 7.0,
        "timestamp": ANCHOR + 7,
        "replica": None,  # this process's own log (a shared history names the replica)
    }
    event = InvocationEvent(
        seq=1,
        kind="invoke_failure",
        server="a",
        method="tools/call",
        request_id="req-9",
        target="echo",
        error="boom",
        category="rpc_error",
        at=2.0,
        timestamp=ANCHOR + 2,
    )
    assert event.correlation_id == "req-9"
    assert event.to_dict()["correlation_id"] == "req-9"
    assert event.to_dict()["request_id"] == "req-9"


# -- EventStream ---------------------------------------------------------------------------------


async def test_stream_numbers_every_event_and_logs_only_status_changes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stream = new_stream()
    start = trio.current_time()
    unknown = ServerState()
    connecting = dataclasses.replace(unknown, version=1)  # same status: no connection event
    healthy = dataclasses.replace(unknown, status=ServerStatus.HEALTHY, version=2)
    changes: list[Any] = []
    stream.add_listener(changes.append)

    stream.state_changed(
        "a", unknown, connecting, reason="connecting", category=None, correlation_id=None, at=start
    )
    emit(stream, "req-1")
    stream.state_changed(
        "a",
        connecting,
        healthy,
        reason="handshake succeeded",
        category=None,
        correlation_id="c",
        at=start + 2,
    )

    assert [type(c).__name__ for c in changes] == ["StateChange", "InvocationEvent", "StateChange"]
    assert [c.seq for c in changes] == [1, 2, 3]
    (event,) = stream.connection_log
    assert (event.seq, event.from_status, event.to_status, event.correlation_id) == (
        3,
        "unknown",
        "healthy",
        "c",
    )
    assert event.timestamp == ANCHOR + 2
    last = changes[-1]
    assert isinstance(last, StateChange)
    assert (last.previous, last.current, last.reason) == (connecting, healthy, "handshake succeeded")
    assert [e.request_id for e in stream.invocation_log] == ["req-1"]


async def test_the_invocation_log_reads_the_same_whether_or_not_anyone_listens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Unheard events are kept as their fields and built when read: what a reader gets must be
    # what a listener got, timestamps and bounds included.
    quiet, heard = new_stream(log_size=3), new_stream(log_size=3)
    delivered: list[InvocationEvent] = []
    heard.invocation_log.add_listener(delivered.append)
    for i, kind in enumerate(["invoke_start", "invoke_failure", "invoke_start", "invoke_success"]):
        await trio.sleep(1.5)
        for stream in (quiet, heard):
            stream.invocation(
                kind,
                "a",
                "tools/call",
                f"req-{i // 2}",
                "echo",
                error=f"e{i}",
                category=None,
                at=trio.current_time(),
            )
    assert list(quiet.invocation_log) == list(heard.invocation_log) == delivered[-3:]
    assert [e.timestamp for e in quiet.invocation_log] == [ANCHOR + 3.0, ANCHOR + 4.5, ANCHOR + 6.0]
    assert (len(quiet.invocation_log), quiet.invocation_log.recorded, quiet.invocation_log.dropped) == (
        3,
        4,
        1,
    )
    assert quiet.invocation_log.query(request_id="req-1") == delivered[2:]
    assert quiet.invocation_log.query(kind="invoke_failure", limit=1) == [delivered[1]]


async def test_correlation_ids_are_unique_per_stream() -> None:
    stream, other = new_stream(), new_stream()
    first, second = stream.new_correlation_id(), stream.new_correlation_id()
    prefix = first.split("-")[0]
    assert (first, second) == (f"{prefix}-1", f"{prefix}-2")
    assert len(prefix) == 8
    assert other.new_correlation_id().split("-")[0] != prefix


async def test_a_full_subscriber_drops_and_counts_without_blocking_the_writer() -> None:
    stream = new_stream(log_size=100)
    with pytest.raises(ValueError, match="max_buffer"):
        with stream.subscribe(0):
            pass
    with stream.subscribe(2) as small, stream.subscribe(math.inf) as everything:
        for i in range(5):
            emit(stream, f"req-{i}")  # synchronous: the writer never waits for a subscriber
        assert (small.dropped, everything.dropped) == (3, 0)
        # The small buffer holds the first two; the rest were dropped, not queued.
        assert [small.receive.receive_nowait().request_id for _ in range(2)] == ["req-0", "req-1"]  # type: ignore[union-attr]
        with pytest.raises(trio.WouldBlock):
            small.receive.receive_nowait()
        # With room again, new events arrive.
        emit(stream, "req-5")
        assert small.receive.receive_nowait().seq == 6
        assert small.dropped == 3
        received = []
        for _ in range(6):
            received.append(everything.receive.receive_nowait().seq)
        assert received == [1, 2, 3, 4, 5, 6]
    # Unsubscribed: later events neither arrive nor count as dropped.
    emit(stream, "req-6")
    assert small.dropped == 3
    assert len(stream.invocation_log) == 7


async def test_subscribers_iterate_in_order_and_stop_when_unsubscribed() -> None:
    stream = new_stream()
    got: list[str] = []

    async def consume(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with stream.subscribe(10) as subscription:
            task_status.started()
            async for event in subscription:
                assert isinstance(event, InvocationEvent)
                got.append(event.request_id)
                if len(got) == 3:
                    return

    async with trio.open_nursery() as nursery:
        await nursery.start(consume)
        for i in range(4):
            emit(stream, f"req-{i}")
    assert got == ["req-0", "req-1", "req-2"]


async def test_a_failing_stream_listener_does_not_break_the_fleet(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    server = ScriptedServer("a")
    changes: list[StateChange] = []

    def broken(event: object) -> None:
        raise RuntimeError("listener bug")

    async with trio_mcp.open_manager([]) as manager:
        remove = manager.stream.add_listener(broken)
        manager.stream.add_listener(lambda e: changes.append(e) if isinstance(e, StateChange) else None)
        with caplog.at_level(logging.ERROR, logger="trio_mcp"):
            await manager.add_server(memory_server(server, policy=policy()))
            snap = await manager.wait_for("a", lambda s: s.session.active)
            result = await manager.call_tool("echo", {"text": "hi"})
        assert snap.status is ServerStatus.HEALTHY
        assert result.content[0].text == "hi"  # type: ignore[union-attr]
        assert caplog.records and all(r.getMessage().startswith("event listener") for r in caplog.records)
        # Every state change reached the working listener, and the connection log holds
        # exactly the ones that changed the status.
        status_changes = [c for c in changes if c.previous.status is not c.current.status]
        assert [e.seq for e in manager.connection_events()] == [c.seq for c in status_changes]
        assert [(e.from_status, e.to_status) for e in manager.connection_events()] == [("unknown", "healthy")]
        remove()
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="trio_mcp"):
            await manager.call_tool("echo", {"text": "again"})
        assert caplog.records == []
