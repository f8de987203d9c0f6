"""F1: real stdio servers killed mid-call at random phases (CI: 100 kills; the full 1,000:
``bench/chaos.py kills``). Real processes, pipes and clock."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from _kills import PHASES, KillConfig, run_kills

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="signals, /proc"),
]


async def test_killing_stdio_servers_mid_call_keeps_every_invariant(
    tmp_path: Path, chaos_table: list[str]
) -> None:
    report = await run_kills(KillConfig(kills=100, seed=1), tmp_path)
    chaos_table.append(report.table())
    report.history.check()
    assert sum(report.kills.values()) == 100
    assert set(report.kills) == set(PHASES), report.kills
    # A call killed after it reached the server, on a tool that is not idempotent, cannot be
    # known to have run or not: some of those must be there, or the kills missed their phase.
    assert any(key.startswith("charge info") for key in report.outcomes_by_phase["after_write"])
