"""``trio_mcp.testing.History``: each invariant is caught when it breaks, and holds when it does
not."""

from __future__ import annotations

import logging
import subprocess

import pytest
import trio
import trio.testing
from _fleet import policy

import trio_mcp
from trio_mcp.testing import (
    Baseline,
    History,
    InvariantViolationError,
    ScriptedServer,
    Violation,
    memory_server,
)
from trio_mcp.testing.history import server_info_name


def invariants(history: History) -> list[str]:
    return [str(v) for v in history.violations()]


async def test_a_run_that_keeps_its_promises_has_no_violations(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = ScriptedServer("a"), ScriptedServer("b")
    history = History()
    configs = [memory_server(s, policy=policy(), idempotent_tools={"lookup"}) for s in (a, b)]
    async with trio_mcp.open_manager(configs) as manager:
        with history.watch(manager):
            await manager.wait_for("a", lambda s: s.session.active)
            ok = await history.call(
                manager, "charge", {"amount": 1}, idempotent=False, timeout=5, preferred=["a"]
            )
            assert ok is not None and ok.server == "a"
            a.crash_during("charge")
            assert (
                await history.call(manager, "charge", {"amount": 2}, idempotent=False, preferred=["a"])
                is None
            )
            a.heal()
            await manager.wait_for("a", lambda s: s.session.active)
            a.hang_tool("lookup")
            found = await history.call(
                manager,
                "lookup",
                {"key": "k"},
                idempotent=True,
                timeout=5,
                attempt_timeout=1,
                preferred=["a", "b"],
                author=server_info_name,
            )
            assert found is not None and found.server == "b"
            a.heal()
            took = await history.check_recovery(manager)
    for server in (a, b):
        history.load_ledger(server.name, server.invocations)
    assert history.outcomes() == {"ok": 2, "info": 1}
    assert [history.outcome(f"inv-{n}") for n in (1, 2, 3)] == ["ok", "info", "ok"]
    assert history.executions("inv-3") == {"a": 1, "b": 1}  # idempotent: both ran it
    assert set(took) == {"a", "b"}
    assert invariants(history) == []
    history.check()


def test_n1_exactly_one_outcome() -> None:
    history = History()
    never = history.invoke("charge", idempotent=False, at=0.0)
    twice = history.invoke("charge", idempotent=False, at=0.0)
    history.ok(twice, server="a", at=1.0)
    history.info(twice, at=1.0)
    history.fail("ghost", at=1.0)
    history.executed(twice, "a")
    assert invariants(history) == [
        "N1 [ghost]: fail for an invocation never invoked",
        f"N1 [{never}]: charge: no outcome",
        f"N1 [{twice}]: charge: 2 outcomes (ok, info)",
    ]
    with pytest.raises(ValueError, match="already recorded"):
        history.invoke("charge", idempotent=False, invocation_id=never, at=0.0)


async def test_n1_what_the_manager_published_must_agree(autojump_clock: trio.testing.MockClock) -> None:
    server = ScriptedServer("a")
    history = History()
    async with trio_mcp.open_manager([memory_server(server, policy=policy())]) as manager:
        with history.watch(manager):
            await manager.wait_for("a", lambda s: s.session.active)
            # The caller says "unknown", the manager published "success".
            disagree = history.invoke("charge", idempotent=False)
            await manager.call_tool("charge", {"amount": 1, "invocation_id": disagree}, request_id=disagree)
            history.info(disagree)
            # Recorded while watching, but the manager never ended it.
            unpublished = history.invoke("charge", idempotent=False)
            history.fail(unpublished)
        # Not watched: nothing is expected.
        quiet = history.invoke("charge", idempotent=False)
        history.fail(quiet)
    history.load_ledger("a", server.invocations)
    assert invariants(history) == [
        f"N1 [{disagree}]: the caller got info but the manager published success",
        f"N1 [{unpublished}]: charge: its end (fail) was never published",
    ]


def test_n2_and_n3_against_the_ledgers() -> None:
    history = History()
    ran_nowhere = history.invoke("charge", idempotent=False, at=0.0)
    history.ok(ran_nowhere, server="a", at=0.0)
    failed_but_ran = history.invoke("charge", idempotent=False, at=0.0)
    history.fail(failed_but_ran, sent_to=(), at=0.0)
    history.executed(failed_but_ran, "b")
    wrong_author = history.invoke("lookup", idempotent=True, at=0.0)
    history.ok(wrong_author, server="a", answered_by="b", sent_to=["a"], at=0.0)
    history.executed(wrong_author, "a")
    not_sent_there = history.invoke("lookup", idempotent=True, at=0.0)
    history.info(not_sent_there, sent_to=["a"], at=0.0)
    history.executed(not_sent_there, "c")
    ran_twice = history.invoke("charge", idempotent=False, at=0.0)
    history.info(ran_twice, sent_to=["a", "b"], at=0.0)
    history.executed(ran_twice, "a")
    history.executed(ran_twice, "b")
    repeated_here = history.invoke("lookup", idempotent=True, at=0.0)
    history.ok(repeated_here, server="a", sent_to=["a"], at=0.0)
    history.executed(repeated_here, "a", times=2)
    history.executed("stray", "a")
    assert invariants(history) == [
        f"N2 [{ran_nowhere}]: ok from a, which never executed it (ran: nowhere)",
        f"N2 [{failed_but_ran}]: fail, yet executed (b x1)",
        f"N2 [{failed_but_ran}]: executed 1 time(s) on b, sent there 0 time(s)",
        f"N2 [{wrong_author}]: ok from a but the result came from b",
        f"N2 [{not_sent_there}]: executed 1 time(s) on c, sent there 0 time(s)",
        f"N3 [{ran_twice}]: charge (not idempotent) executed 2 times (a x1, b x1)",
        f"N2 [{repeated_here}]: executed 2 time(s) on a, sent there 1 time(s)",
        "N2 [stray]: executed (a x1) but never invoked",
    ]


def test_n4_outcomes_by_their_deadline() -> None:
    history = History(slack=0.05)
    on_time = history.invoke("charge", idempotent=False, timeout=1.0, at=10.0)
    history.info(on_time, at=11.05)
    late = history.invoke("charge", idempotent=False, timeout=1.0, at=10.0)
    history.info(late, at=11.1)
    no_deadline = history.invoke("charge", idempotent=False, at=10.0)
    history.info(no_deadline, at=1000.0)
    # A shutdown brings the deadline of what is in flight forward, with its own slack.
    drained = history.invoke("charge", idempotent=False, timeout=30.0, at=10.0)
    history.drain(at=12.0, grace=2.0, slack=1.0)
    history.info(drained, at=15.5)
    assert invariants(history) == [
        f"N4 [{late}]: info arrived 0.100s after its deadline",
        f"N4 [{drained}]: info arrived 1.500s after its deadline",
    ]


async def test_n5_back_to_baseline() -> None:
    history = History()
    baseline = Baseline.capture()
    assert baseline.tasks is not None and baseline.zombies == frozenset()
    process = await trio.lowlevel.open_process(
        ["sleep", "30"], stdin=subprocess.DEVNULL, start_new_session=True
    )
    try:
        async with await trio.open_file(__file__, "rb"):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)
                await trio.testing.wait_all_tasks_blocked()
                differences = baseline.differences(Baseline.capture(), groups=[process.pid])
                nursery.cancel_scope.cancel()
        assert len(differences) == 4, differences
        assert differences[0] == f"child processes left: {process.pid} (sleep 30)"
        assert differences[1].startswith("file descriptors left open: ")
        assert differences[1].endswith(f" -> {__file__}")
        assert differences[2].startswith("trio tasks left: 1 more than the ")
        assert differences[3] == f"processes left in the servers' groups: {process.pid}"
        # Still running (trio may hold a descriptor to wait on it): both are reported.
        left = await history.check_baseline(baseline, within=0.2)
        assert left[0] == differences[0]
        assert [line.split(":")[0] for line in left[1:]] in ([], ["file descriptors left open"])
    finally:
        process.kill()
        await process.wait()
    assert await history.check_baseline(baseline, within=1.0) == []
    assert invariants(history) == [f"N5: {line}" for line in left]


async def test_n6_recovery_and_supervisor_bugs(autojump_clock: trio.testing.MockClock) -> None:
    healthy, down = ScriptedServer("healthy"), ScriptedServer("down")
    history = History()
    configs = [memory_server(s, policy=policy(handshake_timeout=5.0)) for s in (healthy, down)]
    async with trio_mcp.open_manager(configs) as manager:
        with history.watch(manager):
            await manager.wait_for("down", lambda s: s.session.active)
            down.go_down()
            await manager.wait_for("down", lambda s: s.retry_at is not None)
            logging.getLogger("trio_mcp").error("supervisor of %r failed unexpectedly", "healthy")
            start = trio.current_time()
            took = await history.check_recovery(manager)
    assert took == {"healthy": 0.0}
    assert trio.current_time() - start == pytest.approx(6.0)  # retry window (1 s) + handshake_time (5 s)
    assert [str(v) for v in history.violations()] == [
        "N6: logged: supervisor of 'healthy' failed unexpectedly",
        "N6: down not healthy 6.000s after the faults stopped (it is unreachable/backoff: "
        "connect_error: [Errno 111] connection refused (in-memory server is down))",
    ]


def test_check_raises_with_every_violation_and_the_table_counts_them() -> None:
    history = History()
    for _ in range(25):
        history.invoke("charge", idempotent=False, at=0.0)
    answered = history.invoke("lookup", idempotent=True, at=0.0)
    history.ok(answered, server="a", at=0.0)
    history.executed(answered, "a")
    with pytest.raises(InvariantViolationError) as info:
        history.check()
    assert len(info.value.violations) == 25
    assert all(isinstance(v, Violation) and v.invariant == "N1" for v in info.value.violations)
    message = str(info.value)
    assert message.startswith("25 invariant violation(s):\n  N1 [inv-1]: charge: no outcome\n")
    assert message.endswith("\n  ... and 5 more")
    table = history.table("demo", faults={"crash": 2, "hang": 0}, notes={"duration": "1 s"})
    assert table.splitlines()[:5] == [
        "demo",
        "  runs             26",
        "  faults injected  2  (crash 2)",
        "  outcomes         ok 1, fail 0, info 0, none 25",
        "  duration         1 s",
    ]
    assert table.splitlines()[5] == "  violations       25  (N1 25)"


async def test_call_records_each_ending(autojump_clock: trio.testing.MockClock) -> None:
    server = ScriptedServer("a")
    history = History()
    async with trio_mcp.open_manager([memory_server(server, policy=policy())]) as manager:
        with history.watch(manager):
            server.go_down()  # refused: provably ran nowhere
            await history.call(manager, "charge", {"amount": 1}, idempotent=False, failover="never")
            server.heal()
            await manager.wait_for("a", lambda s: s.session.active)
            server.fail_tool("charge")  # sent, then an error: may have run
            await history.call(manager, "charge", {"amount": 1}, idempotent=False)
            await history.call(manager, "nope", {}, idempotent=False)  # offered nowhere
            manager.drain(0)
            await history.call(manager, "charge", {"amount": 1}, idempotent=False)  # refused: closing
    history.load_ledger("a", server.invocations)
    assert [history.outcome(f"inv-{n}") for n in (1, 2, 3, 4)] == ["fail", "info", "fail", "fail"]
    assert history.executions("inv-2") == {"a": 1}
    assert invariants(history) == []


async def test_the_example_in_the_documentation_runs(autojump_clock: trio.testing.MockClock) -> None:
    import textwrap

    import trio_mcp.testing.history as module

    assert module.__doc__ is not None
    example = module.__doc__.split("Run it on your own fleet::\n")[1].split("\n\n:meth:")[0]
    namespace: dict[str, object] = {}
    exec(textwrap.dedent(example), namespace)
    await namespace["test_my_fleet_keeps_its_promises"](autojump_clock)  # type: ignore[operator]


async def test_a_wrong_call_is_the_callers_bug(autojump_clock: trio.testing.MockClock) -> None:
    history = History()
    async with trio_mcp.open_manager([memory_server(ScriptedServer("a"), policy=policy())]) as manager:
        with pytest.raises(trio_mcp.UnknownServerError):
            await history.call(manager, "charge", {"amount": 1}, idempotent=False, preferred=["nobody"])
        with pytest.raises(ValueError, match="failover must be 'safe', 'always' or 'never'"):
            await history.call(manager, "charge", {"amount": 1}, idempotent=False, failover="sometimes")
        with pytest.raises(ValueError, match="timeout must be >= 0 seconds"):
            await history.call(manager, "charge", {"amount": 1}, idempotent=False, timeout=-1)
    assert history.outcomes() == {"fail": 2}
    assert invariants(history) == []
