"""The chaos suites at full size, each checked against the invariants N1 to N6.

- ``storm`` (F3): a virtual-time storm over in-memory SDK servers, faults from the whole matrix
  (default: 1,000 servers, 100,000 invocations);
- ``kills`` (F1): real stdio servers SIGKILLed mid-call at random phases (default: 1,000 kills);
- ``sigterm`` (F6): SIGTERM to a real ``trio-mcp serve`` with invocations in flight over HTTP
  (default: 500);
- ``http`` (F2): real streamable-HTTP servers behind fault-injecting TCP proxies (latency, black
  hole, reset after N bytes, slow close, one-byte fragments, truncation) under a steady load
  (default: 10 servers, 20 invocations/s for 60 s);
- ``restarts`` (F5): real stdio servers that crash on every start, checked for herding, lag, fork
  rate and CPU, then healed (default: 200 servers crashing for 20 s).

Each prints its table (runs, faults injected, outcomes by kind, violations) and the run exits
with status 1 if any invariant was violated. The CI runs the same suites at smaller sizes
(``tests/chaos/``; ``--ci`` here runs those sizes). Run::

    .venv/bin/python bench/chaos.py                      # all five, full size
    .venv/bin/python bench/chaos.py storm --invocations 20000 --seed 7
    .venv/bin/python bench/chaos.py storm --processes 1    # one process (default: 2 parts)
    .venv/bin/python bench/chaos.py kills --kills 100
    .venv/bin/python bench/chaos.py http --duration 30 --faults-per-second 3
    .venv/bin/python bench/chaos.py restarts --servers 200
    .venv/bin/python bench/chaos.py --ci
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import sys
import tempfile
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "chaos"))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))  # _ports

from _http_faults import HttpFaultConfig, run_http_faults
from _kills import KillConfig, run_kills
from _restart_storm import RestartStormConfig, run_restart_storm
from _sigterm import SigtermConfig, run_sigterm
from _storm import StormConfig, parts_table, run, run_in_processes

FULL = {
    "storm": StormConfig(servers=1000, invocations=100_000, workers=250, faults_per_second=10.0),
    "kills": KillConfig(kills=1000),
    "sigterm": SigtermConfig(invocations=500),
    "http": HttpFaultConfig(servers=10, rate=20.0, duration=60.0),
    "restarts": RestartStormConfig(servers=200, seconds=20.0),
}
CI = {
    "storm": StormConfig(servers=1000, invocations=20_000, workers=250, faults_per_second=10.0),
    "kills": KillConfig(kills=100),
    "sigterm": SigtermConfig(invocations=500),
    "http": HttpFaultConfig(servers=10, rate=20.0, duration=15.0),
    "restarts": RestartStormConfig(servers=50, seconds=8.0),
}


def storm(config: StormConfig, processes: int = 1) -> int:
    if processes > 1:
        summaries, real_seconds = run_in_processes(config, processes)
        print(parts_table(config, summaries, real_seconds), flush=True)
        return sum(len(summary.violations) for summary in summaries)
    report = run(config)
    print(report.table(), flush=True)
    return len(report.history.violations())


def kills(config: KillConfig) -> int:
    async def main() -> int:
        with tempfile.TemporaryDirectory(prefix="chaos-kills-") as workdir:
            report = await run_kills(config, Path(workdir))
        print(report.table(), flush=True)
        return len(report.history.violations())

    return trio.run(main)


def sigterm(config: SigtermConfig) -> int:
    async def main() -> int:
        with tempfile.TemporaryDirectory(prefix="chaos-sigterm-") as workdir:
            report = await run_sigterm(config, Path(workdir))
        print(report.table(), flush=True)
        for problem in report.problems():
            print(f"    {problem}")
        return len(report.history.violations()) + len(report.problems())

    return trio.run(main)


def http(config: HttpFaultConfig) -> int:
    async def main() -> int:
        with tempfile.TemporaryDirectory(prefix="chaos-http-") as workdir:
            report = await run_http_faults(config, Path(workdir))
        print(report.table(), flush=True)
        return len(report.history.violations())

    return trio.run(main)


def restarts(config: RestartStormConfig) -> int:
    async def main() -> int:
        with tempfile.TemporaryDirectory(prefix="chaos-restarts-") as workdir:
            report = await run_restart_storm(config, Path(workdir))
        print(report.table(), flush=True)
        return len(report.violations)

    return trio.run(main)


RUNNERS = {"storm": storm, "kills": kills, "sigterm": sigterm, "http": http, "restarts": restarts}


def main() -> None:
    # The SDK's MCPServer sets the root logger to INFO on a rich handler; the client's request
    # log would bury the tables.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description="The chaos suites F1, F2, F3, F5 and F6 at full size.")
    parser.add_argument("--ci", action="store_true", help="run the sizes the CI runs")
    parser.add_argument("--seed", type=int, default=1)
    sub = parser.add_subparsers(dest="suite")
    p_storm = sub.add_parser("storm", help="F3: virtual-time storm over in-memory servers")
    p_storm.add_argument("--servers", type=int)
    p_storm.add_argument("--invocations", type=int)
    p_storm.add_argument("--workers", type=int)
    p_storm.add_argument("--faults-per-second", type=float)
    p_storm.add_argument(
        "--processes",
        type=int,
        help="split the storm over this many processes, each the whole fleet with its share of the"
        " workers (default: 2 at full size on a machine with 2 cores or more, else 1)",
    )
    p_kills = sub.add_parser("kills", help="F1: stdio servers killed mid-call")
    p_kills.add_argument("--kills", type=int)
    p_kills.add_argument("--servers", type=int)
    p_kills.add_argument("--runners", type=int)
    p_sigterm = sub.add_parser("sigterm", help="F6: SIGTERM to trio-mcp serve with calls in flight")
    p_sigterm.add_argument("--invocations", type=int)
    p_sigterm.add_argument("--servers", type=int)
    p_sigterm.add_argument("--grace", type=float)
    p_http = sub.add_parser("http", help="F2: streamable HTTP through fault-injecting TCP proxies")
    p_http.add_argument("--servers", type=int)
    p_http.add_argument("--rate", type=float, help="invocations per second")
    p_http.add_argument("--duration", type=float, help="seconds of load and faults")
    p_http.add_argument("--faults-per-second", type=float)
    p_restarts = sub.add_parser("restarts", help="F5: stdio servers that crash on every start")
    p_restarts.add_argument("--servers", type=int)
    p_restarts.add_argument("--seconds", type=float, help="how long they keep crashing")
    for p in (p_storm, p_kills, p_sigterm, p_http):
        p.add_argument("--seed", type=int, default=argparse.SUPPRESS)
    args = parser.parse_args()

    sizes = CI if args.ci else FULL
    overrides = {
        k: v for k, v in vars(args).items() if v is not None and k not in ("ci", "suite", "processes")
    }
    processes = getattr(args, "processes", None)
    if processes is None:
        processes = 1 if args.ci else min(2, os.cpu_count() or 1)
    violations = 0
    for suite in [args.suite] if args.suite else ["storm", "kills", "sigterm", "http", "restarts"]:
        config = sizes[suite]
        fields = {k: v for k, v in overrides.items() if hasattr(config, k)}
        config = dataclasses.replace(config, **fields)
        runner = {
            "storm": functools.partial(storm, processes=processes),
            "kills": kills,
            "sigterm": sigterm,
            "http": http,
            "restarts": restarts,
        }[suite]
        violations += runner(config)  # type: ignore[operator]  # one suite, its config
        print(flush=True)
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
