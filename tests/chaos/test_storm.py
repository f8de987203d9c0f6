"""F3: a virtual-time storm over a thousand in-memory SDK servers (CI size; the full 100,000
invocations: ``bench/chaos.py storm``)."""

from __future__ import annotations

import pytest
import trio.testing
from _storm import FAULT_KINDS, StormConfig, run, run_in_processes, run_storm, split

pytestmark = pytest.mark.chaos

CI = StormConfig(servers=1000, invocations=20_000, workers=250, faults_per_second=10.0, seed=1)


async def test_storm_keeps_every_invariant(
    autojump_clock: trio.testing.MockClock, chaos_table: list[str]
) -> None:
    report = await run_storm(CI)
    chaos_table.append(report.table())
    report.history.check()
    outcomes = report.history.outcomes()
    assert outcomes["ok"] + outcomes["fail"] + outcomes["info"] == CI.invocations
    assert outcomes["info"] > 0, "the faults must have left some outcomes unknown"
    assert set(report.faults) == set(FAULT_KINDS), report.faults


def test_a_seed_replays_the_same_storm() -> None:
    small = StormConfig(servers=50, invocations=1000, workers=25, faults_per_second=10.0, seed=7)
    first, second = run(small), run(small)
    for report in (first, second):
        report.history.check()
    assert first.faults == second.faults
    assert first.history.outcomes() == second.history.outcomes()
    assert first.categories == second.categories
    assert first.virtual_seconds == second.virtual_seconds


def test_a_storm_splits_into_parts_that_each_hold_the_whole_fleet() -> None:
    config = StormConfig(servers=1000, invocations=100_001, workers=250, seed=3)
    parts = split(config, 2)
    assert [(p.servers, p.workers, p.invocations, p.part) for p in parts] == [
        (1000, 125, 50_001, 0),
        (1000, 125, 50_000, 1),
    ]
    assert split(config, 1) == [config]
    with pytest.raises(ValueError, match="between 1 and the number of workers"):
        split(config, 0)


def test_a_storm_over_two_processes_keeps_every_invariant_in_each() -> None:
    config = StormConfig(servers=40, invocations=800, workers=20, faults_per_second=10.0, seed=5)
    summaries, _ = run_in_processes(config, 2)
    assert [s.part for s in summaries] == [0, 1]
    for summary in summaries:
        assert summary.violations == []
        assert sum(summary.outcomes.values()) == summary.invocations == 400
    # Each part plans from its own seed: the parts are two different storms.
    assert summaries[0].faults != summaries[1].faults
