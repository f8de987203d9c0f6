"""F2: streamable HTTP through fault-injecting TCP proxies (latency, black hole, reset after N
bytes, slow close, one-byte fragments, truncation) while 10 real HTTP servers take 20
invocations a second (CI: 15 s; the full 60 s: ``bench/chaos.py http``). Real processes, sockets
and clock."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from _http_faults import FAULT_KINDS, HttpFaultConfig, run_http_faults

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="/proc"),
]

CI = HttpFaultConfig(servers=10, rate=20.0, duration=15.0, seed=1)


async def test_faults_on_the_wire_keep_every_invariant(tmp_path: Path, chaos_table: list[str]) -> None:
    report = await run_http_faults(CI, tmp_path)
    chaos_table.append(report.table())
    report.history.check()
    outcomes = report.history.outcomes()
    assert outcomes["ok"] + outcomes["fail"] + outcomes["info"] == round(CI.rate * CI.duration)
    assert set(report.faults) == set(FAULT_KINDS), report.faults
    # The faults reached the traffic: connections were cut, and outcomes left unknown.
    assert report.hits["reset"] > 0 and report.hits["truncate"] > 0, report.hits
    assert outcomes["info"] > 0, "the faults must have left some outcomes unknown"
