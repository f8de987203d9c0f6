"""F5: stdio servers that crash on every start restart on their jittered backoff, never
together (CI: 50 servers; the full 200: ``bench/chaos.py restarts``). Real processes and clock.
The herding check itself is tested on made-up schedules first."""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import pytest
from _restart_storm import (
    Backoff,
    RestartStormConfig,
    busiest_second,
    herding,
    outside_jitter,
    poisson_tail,
    run_restart_storm,
)

pytestmark = [pytest.mark.chaos]

JITTER = 0.2


def schedule(servers: int, *, jitter: float, seed: int = 1) -> tuple[list[Backoff], list[float]]:
    """Every server's first backoff (base 1 s, all began at once) and its restart."""
    rng = random.Random(seed)
    backoffs = [Backoff(f"s{i}", 10.0, 1.0 * (1 + rng.uniform(-jitter, jitter)), 1.0) for i in range(servers)]
    return backoffs, [b.began + b.delay for b in backoffs]


def test_a_jittered_schedule_is_not_herding() -> None:
    backoffs, restarts = schedule(200, jitter=JITTER)
    assert herding(restarts, backoffs, JITTER) == []
    assert outside_jitter(backoffs, JITTER) == []


def test_a_fleet_restarting_together_is_herding() -> None:
    backoffs, restarts = schedule(200, jitter=0.0)
    # Judged against the jitter the policy promised: all 200 in one bucket.
    (herd,) = herding(restarts, backoffs, JITTER)
    assert herd[1] == 200
    assert len(outside_jitter(backoffs, JITTER)) == 0  # each delay alone is within the jitter
    late = [Backoff("x", 0.0, 1.3, 1.0)]
    assert outside_jitter(late, JITTER) == late


def test_chance_alone_is_not_herding_but_a_crowd_is() -> None:
    # One bucket among 400 expecting 1.5 each: 8 happens by chance (p about 3e-4), 3x or not.
    backoffs = [Backoff(f"s{i}", 0.0, 2.0, 2.0) for i in range(600)]
    crowd = [2.005] * 8
    assert herding(crowd, backoffs, 1.0) == []
    assert herding([2.005] * 20, backoffs, 1.0) == [(2.0, 20, pytest.approx(1.5))]
    assert poisson_tail(0, 1.5) == 1.0
    assert poisson_tail(1, 1.5) == pytest.approx(1 - math.exp(-1.5))


def test_busiest_second() -> None:
    assert busiest_second([]) == 0
    assert busiest_second([0.0, 0.5, 0.99, 1.0, 1.5, 5.0]) == 3  # (t - 1 s, t]
    assert busiest_second([0.0, 0.2, 0.4, 0.6, 2.0]) == 4


@pytest.mark.integration
@pytest.mark.skipif(sys.platform != "linux", reason="/proc, /bin/sh")
async def test_a_restart_storm_follows_the_jittered_backoff(tmp_path: Path, chaos_table: list[str]) -> None:
    report = await run_restart_storm(RestartStormConfig(servers=50, seconds=8.0), tmp_path)
    chaos_table.append(report.table())
    assert report.violations == []
    # The storm happened: each server was respawned several times, every restart followed a
    # backoff that was recorded, and its lag was measured.
    assert len(report.restarts) >= 50 * 4
    assert len(report.backoffs) >= len(report.restarts)
    assert len(report.lags) == len(report.restarts)
