"""F3: a virtual-time storm over a thousand in-memory SDK servers (CI size; the full 100,000
invocations: ``bench/chaos.py storm``)."""

from __future__ import annotations

import pytest
import trio.testing
from _storm import FAULT_KINDS, StormConfig, run, run_storm

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
