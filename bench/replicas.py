"""Load spreading and hedged reads over replicas of one MCP server, in real time.

Every replica is a real in-memory SDK server offering the same idempotent ``lookup`` tool, whose
latency is drawn per call: usually ``base`` ms, and in ``tail`` of the calls ten times that (a
garbage collection, a cold cache). One replica is slow (three times the base).

- ``spread``: concurrent calls from ``--workers`` callers; how many each replica took, and the
  latencies, with ``routing="ordered"`` (registration order) and ``routing="least_loaded"``
  (the less loaded of two drawn at random, by calls in flight and a moving average of latency).
- ``hedge``: one caller; the latency percentiles without hedging, with ``hedge_after="p95"``
  and with a fixed ``hedge_after``, and how many extra requests the hedges cost.
- ``scale``: replicas whose backend is the bottleneck (each serves ``--capacity`` calls at a
  time, ``base`` each): the calls/s of three replicas against one, under ``--workers``
  callers; then the p99 of a fleet whose first replica answers 10 % of its calls after 1 s,
  against the p99 of its two fast replicas alone (without hedging, and with a fixed
  ``hedge_after``).

Both arms of each comparison run in the same process, interleaved round by round. Run::

    .venv/bin/python bench/replicas.py                 # both, default sizes
    .venv/bin/python bench/replicas.py spread --calls 2000 --workers 32
    .venv/bin/python bench/replicas.py hedge --calls 2000 --rounds 4
    .venv/bin/python bench/replicas.py scale --calls 1000 --rounds 3
    .venv/bin/python bench/replicas.py --smoke         # seconds: CI runs this

``--chart PATH`` also draws the latencies, the throughput ratio of the routings and the hedging
arms as a PNG (matplotlib: ``pip install -e '.[bench]'``); no chart is drawn without it::

    .venv/bin/python bench/replicas.py --chart docs/bench/replicas.png
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _charts
import trio
from mcp.server.mcpserver import MCPServer

import trio_mcp
from trio_mcp.testing import memory_server


@dataclass
class Replica:
    name: str
    base: float
    tail: float
    rng: random.Random
    calls: int = 0
    slow: float | None = None
    """How long a call in the tail takes (``None``: ten times ``base``)."""
    capacity: int | None = None
    """How many calls the replica serves at a time (``None``: any number): the others wait."""

    def server(self) -> MCPServer:
        server = MCPServer(self.name)
        gate = trio.Semaphore(self.capacity) if self.capacity is not None else None

        @server.tool()
        async def lookup(key: str) -> str:
            self.calls += 1
            delay = self.base
            if self.rng.random() < self.tail:
                delay = self.slow if self.slow is not None else self.base * 10
            if gate is None:
                await trio.sleep(delay)
            else:
                async with gate:
                    await trio.sleep(delay)
            return key

        return server


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    by_server: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    seconds: float = 0.0
    """Wall time of the round: ``calls / seconds`` is its throughput."""

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def fleet(count: int, base: float, tail: float, seed: int) -> list[Replica]:
    rng = random.Random(seed)
    replicas = [Replica(f"r{i}", base, tail, random.Random(rng.random())) for i in range(count)]
    replicas[0].base = base * 3  # the slow one, first in registration order
    return replicas


async def run_calls(
    manager: trio_mcp.Manager,
    replicas: list[Replica],
    calls: int,
    workers: int,
    hedge_after: float | str | None,
) -> Run:
    run = Run()
    before = sum(r.calls for r in replicas)
    remaining = calls
    started = trio.current_time()

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = trio.current_time()
            outcome = await manager.invoke(
                "tools/call",
                "lookup",
                {"key": "k"},
                hedge_after=hedge_after,  # type: ignore[arg-type]
            )
            run.latencies.append(trio.current_time() - start)
            run.by_server[outcome.server] += 1

    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker)
    run.seconds = trio.current_time() - started
    run.sent = sum(r.calls for r in replicas) - before
    return run


def configs(replicas: list[Replica]) -> list[trio_mcp.ServerConfig]:
    policy = trio_mcp.ServerPolicy(health_interval=3600, max_concurrency=1000)
    return [
        memory_server(r.server(), name=r.name, policy=policy, idempotent_tools={"lookup"}) for r in replicas
    ]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f}"


def percentiles(runs: list[Run], *fractions: float) -> str:
    """The median over rounds of each percentile, in ms, in columns of nine."""
    return "".join(f"{ms(statistics.median(r.percentile(q) for r in runs)):>9}" for q in fractions)


def shares(runs: list[Run], replicas: list[Replica], calls: int) -> str:
    """Each replica's share of the calls, as its range over rounds."""
    cells = []
    for replica in replicas:
        values = [r.by_server[replica.name] / calls for r in runs]
        cells.append(f"{replica.name} {min(values):.0%}-{max(values):.0%}")
    return ", ".join(cells)


def p99_ratios(over: list[Run], under: list[Run]) -> str:
    """The range over rounds of ``over``'s p99 divided by ``under``'s."""
    ratios = [o.percentile(0.99) / u.percentile(0.99) for o, u in zip(over, under, strict=True)]
    return f"{min(ratios):.2f}-{max(ratios):.2f}"


async def spread(
    calls: int, workers: int, rounds: int, servers: int, base: float, tail: float
) -> dict[str, Any]:
    """Runs and prints the ``spread`` comparison; returns its figures for the chart."""
    replicas = fleet(servers, base, tail, seed=1)
    results: dict[str, list[Run]] = {"ordered": [], "least_loaded": []}
    async with (
        trio_mcp.open_manager(configs(replicas), routing="ordered") as ordered,
        trio_mcp.open_manager(configs(replicas), routing="least_loaded", rng=random.Random(2)) as balanced,
    ):
        for manager in (ordered, balanced):
            for r in replicas:
                await manager.acquire(r.name)
        for _ in range(rounds):  # interleaved: drift on the machine hits both alike
            for name, manager in (("ordered", ordered), ("least_loaded", balanced)):
                results[name].append(await run_calls(manager, replicas, calls, workers, None))
    print(f"spread: {servers} replicas (r0 slow: {base * 3000:.0f} ms, others {base * 1000:.0f} ms,")
    print(f"        {tail:.0%} of calls 10x), {workers} callers, {calls} calls x {rounds} rounds per arm")
    print(f"{'routing':<14}{'p50 ms':>9}{'p99 ms':>9}   share of calls per replica (range over rounds)")
    for name, runs in results.items():
        print(f"{name:<14}{percentiles(runs, 0.5, 0.99)}   {shares(runs, replicas, calls)}")
    ratio = [
        o.percentile(0.5) / b.percentile(0.5)
        for o, b in zip(results["ordered"], results["least_loaded"], strict=True)
    ]
    print(f"p50 ordered / least_loaded, per round: {min(ratio):.2f}-{max(ratio):.2f}")
    throughput = [
        o.seconds / b.seconds for o, b in zip(results["ordered"], results["least_loaded"], strict=True)
    ]
    print(f"calls/s least_loaded / ordered, per round: {min(throughput):.2f}-{max(throughput):.2f}")
    return {
        "p50_ms": {name: [r.percentile(0.5) * 1000 for r in runs] for name, runs in results.items()},
        "p99_ms": {name: [r.percentile(0.99) * 1000 for r in runs] for name, runs in results.items()},
        "calls_per_s": {name: [calls / r.seconds for r in runs] for name, runs in results.items()},
        "throughput_ratio": throughput,
        "workers": workers,
        "caption": f"{servers} replicas, r0 slow; {workers} callers, {calls} calls x {rounds} rounds",
    }


async def hedge(calls: int, rounds: int, base: float, tail: float, fixed: float) -> dict[str, Any]:
    """Runs and prints the ``hedge`` comparison; returns its figures for the chart."""
    replicas = fleet(3, base, tail, seed=3)
    replicas[0].base = base  # no slow replica: the tail is what hedging is for
    arms: dict[str, float | str | None] = {
        "no hedge": None,
        "p95": "p95",
        f"after {fixed * 1000:.0f} ms": fixed,
    }
    results: dict[str, list[Run]] = {name: [] for name in arms}
    async with trio_mcp.open_manager(configs(replicas), rng=random.Random(4)) as manager:
        for r in replicas:
            await manager.acquire(r.name)
        await run_calls(manager, replicas, 100, 1, None)  # latencies known: p95 can hedge
        for _ in range(rounds):
            for name, hedge_after in arms.items():
                results[name].append(await run_calls(manager, replicas, calls, 1, hedge_after))
    print(
        f"hedge: 3 replicas ({base * 1000:.0f} ms, {tail:.0%} of calls 10x), one caller,"
        f" {calls} calls x {rounds} rounds per arm"
    )
    print(f"{'hedge_after':<16}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'extra requests':>16}")
    for name, runs in results.items():
        extra = [r.sent / calls - 1 for r in runs]
        print(f"{name:<16}{percentiles(runs, 0.5, 0.95, 0.99)}{min(extra):>9.1%}-{max(extra):.1%}")
    for name in list(arms)[1:]:
        print(f"p99 no hedge / {name}, per round: {p99_ratios(results['no hedge'], results[name])}")
    return {
        "percentiles_ms": {
            name: {f"p{round(q * 100)}": [r.percentile(q) * 1000 for r in runs] for q in (0.5, 0.95, 0.99)}
            for name, runs in results.items()
        },
        "extra": {name: [r.sent / calls - 1 for r in runs] for name, runs in results.items()},
        "caption": f"3 replicas, one caller, {calls} calls x {rounds} rounds",
    }


def _freeze_heap() -> None:
    """Leave what was allocated so far out of every later garbage collection: a full collection
    scans the whole heap (the SDK's, pydantic's and these managers' objects), which stopped every
    caller for about 80 ms every other round here, in every arm alike, and would have set their
    p99 instead of the replicas."""
    gc.collect()
    gc.freeze()


async def scale(
    calls: int, workers: int, rounds: int, base: float, capacity: int, fixed: float
) -> dict[str, Any]:
    """Runs and prints the ``scale`` comparisons; returns their figures."""
    rng = random.Random(5)

    def replica(name: str, tail: float = 0.0, slow: float | None = None, limit: int | None = None) -> Replica:
        return Replica(name, base, tail, random.Random(rng.random()), slow=slow, capacity=limit)

    # Throughput: the same replica once and three times, each serving `capacity` calls at a time.
    one = [replica("r0", limit=capacity)]
    three = [replica(f"r{i}", limit=capacity) for i in range(3)]
    runs: dict[str, list[Run]] = {"1 replica": [], "3 replicas": []}
    async with (
        trio_mcp.open_manager(configs(one), rng=random.Random(6)) as single,
        trio_mcp.open_manager(configs(three), rng=random.Random(7)) as triple,
    ):
        for manager, replicas in ((single, one), (triple, three)):
            for r in replicas:
                await manager.acquire(r.name)
        _freeze_heap()
        for _ in range(rounds):  # interleaved: drift on the machine hits both alike
            runs["1 replica"].append(await run_calls(single, one, calls, workers, None))
            runs["3 replicas"].append(await run_calls(triple, three, calls, workers, None))
    print(
        f"scale: replicas serving {capacity} call(s) at a time ({base * 1000:.0f} ms each),"
        f" {workers} callers, {calls} calls x {rounds} rounds per arm"
    )
    print(f"{'fleet':<14}{'calls/s':>9}{'p50 ms':>9}{'p99 ms':>9}   share of calls per replica (range)")
    for name, arm in runs.items():
        print(
            f"{name:<14}{statistics.median(calls / r.seconds for r in arm):>9.0f}"
            f"{percentiles(arm, 0.5, 0.99)}   {shares(arm, one if name == '1 replica' else three, calls)}"
        )
    scaling = [o.seconds / t.seconds for o, t in zip(runs["1 replica"], runs["3 replicas"], strict=True)]
    print(f"calls/s 3 replicas / 1 replica, per round: {min(scaling):.2f}-{max(scaling):.2f} (target >= 2.5)")

    # The tail: r0 answers 10 % of its calls after 1 s; the two fast replicas alone are the reference.
    fast = [replica("r1"), replica("r2")]
    with_slow = [replica("r0", tail=0.10, slow=1.0), replica("r1"), replica("r2")]
    hedged = f"slow, {fixed * 1000:.0f} ms hedge"
    # A manager per arm: what one arm's calls teach the routing (r0 is slow) helps no other arm.
    async with (
        trio_mcp.open_manager(configs(fast), rng=random.Random(8)) as fast_manager,
        trio_mcp.open_manager(configs(with_slow), rng=random.Random(9)) as slow_manager,
        trio_mcp.open_manager(configs(with_slow), rng=random.Random(10)) as hedged_manager,
        trio_mcp.open_manager(configs(with_slow), rng=random.Random(11)) as p95_manager,
    ):
        arms: dict[str, tuple[trio_mcp.Manager, list[Replica], float | str | None]] = {
            "fast 2 only": (fast_manager, fast, None),
            "with slow r0": (slow_manager, with_slow, None),
            hedged: (hedged_manager, with_slow, fixed),
            "slow, p95 hedge": (p95_manager, with_slow, "p95"),
        }
        for manager, replicas, _ in arms.values():
            for r in replicas:
                await manager.acquire(r.name)
        _freeze_heap()
        tails: dict[str, list[Run]] = {name: [] for name in arms}
        for _ in range(rounds):
            for name, (manager, replicas, hedge_after) in arms.items():
                tails[name].append(await run_calls(manager, replicas, calls, workers, hedge_after))
    print(
        f"tail: r0 answers 10 % of its calls after 1 s, r1 and r2 in {base * 1000:.0f} ms;"
        f" {workers} callers, {calls} calls x {rounds} rounds per arm"
    )
    print(f"{'arm':<22}{'p50 ms':>9}{'p99 ms':>9}{'r0 share':>10}{'extra requests':>16}")
    for name, arm in tails.items():
        share = [r.by_server["r0"] / calls for r in arm]
        extra = [r.sent / calls - 1 for r in arm]
        print(
            f"{name:<22}{percentiles(arm, 0.5, 0.99)}"
            f"{min(share):>5.0%}-{max(share):.0%}{min(extra):>9.1%}-{max(extra):.1%}"
        )
    for name in list(arms)[1:]:
        ratios = p99_ratios(tails[name], tails["fast 2 only"])
        print(f"p99 {name} / fast 2 only, per round: {ratios} (target <= 2)")
    return {
        "scaling": scaling,
        "calls_per_s": {name: [calls / r.seconds for r in arm] for name, arm in runs.items()},
        "p99_ms": {name: [r.percentile(0.99) * 1000 for r in arm] for name, arm in tails.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", nargs="?", choices=["spread", "hedge", "scale", "all"], default="all")
    parser.add_argument("--calls", type=int, default=1000, help="calls per round and arm")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=16, help="concurrent callers (spread)")
    parser.add_argument("--servers", type=int, default=4, help="replicas (spread)")
    parser.add_argument("--base", type=float, default=0.005, help="usual latency, seconds")
    parser.add_argument("--tail", type=float, default=0.05, help="fraction of calls 10x slower")
    parser.add_argument("--hedge-after", type=float, default=0.02, help="the fixed hedge delay, seconds")
    parser.add_argument("--capacity", type=int, default=1, help="calls a replica serves at a time (scale)")
    parser.add_argument("--smoke", action="store_true", help="a few seconds (the CI's run)")
    parser.add_argument(
        "--chart",
        type=Path,
        metavar="PATH",
        help="also write a PNG chart of the results to PATH, e.g. docs/bench/replicas.png "
        "(needs matplotlib: pip install -e '.[bench]'; no chart unless given)",
    )
    args = parser.parse_args()
    if args.smoke:
        args.calls, args.rounds = 100, 1
    spread_figures = hedge_figures = None
    if args.suite in ("spread", "all"):
        spread_figures = trio.run(
            spread, args.calls, args.workers, args.rounds, args.servers, args.base, args.tail
        )
    if args.suite in ("hedge", "all"):
        if args.suite == "all":
            print()
        hedge_figures = trio.run(hedge, args.calls, args.rounds, args.base, args.tail, args.hedge_after)
    if args.suite in ("scale", "all"):
        if args.suite == "all":
            print()
        trio.run(scale, args.calls, args.workers, args.rounds, args.base, args.capacity, args.hedge_after)
    if args.chart is not None and _charts.available():
        _charts.replicas(args.chart, spread=spread_figures, hedge=hedge_figures)


if __name__ == "__main__":
    main()
