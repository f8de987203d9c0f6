"""F3: a virtual-time storm over in-memory SDK servers, checked with :class:`History`.

A fleet of :class:`ScriptedServer` s (a fifth of them speaking only the handshake era) takes a
seeded stream of invocations from concurrent workers (a non-idempotent ``charge`` and an
idempotent ``lookup``, each preferring two random servers) while a seeded schedule of faults
from the whole matrix comes and goes. Afterwards every fault is cleared, every server must be
healthy again within its retry window plus a handshake (N6), and the history is checked (N1 to
N5). Everything runs under ``trio.testing.MockClock(autojump_threshold=0)``.

The plan (which fault hits which server when and for how long; which worker invokes what on
which servers after which pause) is drawn from the seed alone, so a seed always replays the
same storm.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import trio

import trio_mcp
from trio_mcp.testing import Baseline, History, ScriptedServer, memory_server
from trio_mcp.testing.history import format_table, server_info_name

FAULT_KINDS = (
    "hang",
    "crash",
    "down",
    "session_expiry",
    "http_401",
    "http_500",
    "tool_error",
    "malformed",
    "duplicate_ids",
    "slow_handshake",
    "probe_failure",
)
"""The fault matrix (see :func:`_inject`)."""

TOOLS = ("charge", "lookup")
IDEMPOTENT = {"charge": False, "lookup": True}

POLICY = trio_mcp.ServerPolicy(
    handshake_timeout=3.0,
    probe_timeout=2.0,
    call_timeout=2.0,
    health_interval=30.0,
    backoff=trio_mcp.BackoffPolicy(initial=0.5, multiplier=2.0, cap=8.0, jitter=0.2),
)
TIMEOUT = 6.0
"""Each invocation's overall deadline."""


@dataclass(frozen=True, kw_only=True)
class StormConfig:
    servers: int = 1000
    invocations: int = 100_000
    workers: int = 250
    seed: int = 1
    faults_per_second: float = 4.0
    """Faults started per virtual second (each on a server without a fault)."""
    fault_duration: tuple[float, float] = (1.0, 15.0)
    legacy_share: float = 0.2
    think_time: float = 0.5
    """Mean virtual seconds a worker waits between its invocations."""
    part: int = 0
    """Which part of a storm split over processes (:func:`run_in_processes`) this is: each part
    is the whole fleet with its share of the workers, planned from its own seed."""


@dataclass(frozen=True, slots=True)
class _Fault:
    at: float
    server: int
    kind: str
    duration: float
    tool: str
    detail: float | str


@dataclass(kw_only=True)
class StormReport:
    config: StormConfig
    history: History
    faults: Counter[str]
    real_seconds: float
    virtual_seconds: float
    recovery_seconds: float
    categories: Counter[str] = field(default_factory=Counter)
    phases: dict[str, float] = field(default_factory=dict)
    """Real seconds of each phase."""
    cpu_seconds: float = 0.0

    def table(self) -> str:
        c = self.config
        title = (
            f"F3 virtual-time storm (seed {c.seed}): {c.servers} in-memory servers, "
            f"{c.invocations} invocations by {c.workers} workers"
        )
        top = ", ".join(f"{k} {v}" for k, v in self.categories.most_common(8))
        return self.history.table(
            title,
            faults=self.faults,
            notes={
                "failed attempts": top or "none",
                "slowest recovery": f"{self.recovery_seconds:.2f} virtual s after the faults stopped",
                "duration": f"{self.virtual_seconds:.1f} virtual s in {self.real_seconds:.1f} real s"
                + f", {self.cpu_seconds:.1f} s CPU"
                + (
                    " (" + ", ".join(f"{k} {v:.1f} s" for k, v in self.phases.items()) + ")"
                    if self.phases
                    else ""
                ),
            },
        )


def plan(config: StormConfig) -> tuple[list[_Fault], list[list[tuple[float, str, tuple[int, int]]]]]:
    """The storm's faults and each worker's invocations (pause, tool, two preferred servers),
    drawn from the seed alone."""
    rng = random.Random(config.seed if not config.part else f"{config.seed}/{config.part}")
    per_worker, extra = divmod(config.invocations, config.workers)
    work = []
    for w in range(config.workers):
        count = per_worker + (1 if w < extra else 0)
        calls = []
        for _ in range(count):
            first = rng.randrange(config.servers)
            second = (first + 1 + rng.randrange(config.servers - 1)) % config.servers
            calls.append((rng.expovariate(1 / config.think_time), rng.choice(TOOLS), (first, second)))
        work.append(calls)
    # Long enough to cover the invocations (each takes a pause plus a little).
    horizon = config.invocations / config.workers * config.think_time
    faults = []
    t = 0.0
    while True:
        t += rng.expovariate(config.faults_per_second)
        if t >= horizon:
            break
        kind = rng.choice(FAULT_KINDS)
        detail: float | str = 0.0
        if kind == "malformed":
            detail = rng.choice(("frame", "parse_error", "result"))
        elif kind == "slow_handshake":
            detail = rng.uniform(1.0, 6.0)  # beyond handshake_timeout (3 s) about half the time
        elif kind == "probe_failure":
            detail = rng.choice(("error", "slow"))
        faults.append(
            _Fault(
                at=t,
                server=rng.randrange(config.servers),
                kind=kind,
                duration=rng.uniform(*config.fault_duration),
                tool=rng.choice(TOOLS),
                detail=detail,
            )
        )
    return faults, work


def _inject(server: ScriptedServer, fault: _Fault) -> None:
    tool = fault.tool
    match fault.kind:
        case "hang":
            server.hang_tool(tool)
        case "crash":
            server.crash_during(tool)
        case "down":
            server.go_down()
        case "session_expiry":
            server.expire_sessions()
        case "http_401":
            server.answer_status(401)
        case "http_500":
            server.answer_status(500)
        case "tool_error":
            server.fail_tool(tool, "internal error")
        case "malformed":
            server.mangle_responses(tool, fault.detail)  # type: ignore[arg-type]
        case "duplicate_ids":
            server.mangle_responses(tool, "duplicate")
        case "slow_handshake":
            server.delay_handshake(float(fault.detail))
            server.close_connections()  # so that the next use handshakes, slowly
        case "probe_failure":
            if fault.detail == "error":
                server.fail_probes("probe refused")
            else:
                server.delay_probes(5.0)
        case _:
            raise AssertionError(fault.kind)


def author(result: Any) -> str | None:
    """The server a result came from: ``lookup`` answers ``<server>:<key>``; a 2026-era
    connection's results carry the server's name too."""
    named = server_info_name(result)
    if named is not None:
        return named
    text = result.content[0].text if result.content else ""
    return text.split(":", 1)[0] if ":" in text else None


async def run_storm(config: StormConfig) -> StormReport:
    """Run the storm; the caller provides the ``MockClock`` (autojump)."""
    real_start, cpu_start = time.perf_counter(), time.process_time()
    faults, work = plan(config)
    servers = [
        ScriptedServer(f"s{i:04d}", era="legacy" if i < config.servers * config.legacy_share else "dual")
        for i in range(config.servers)
    ]
    names = [s.name for s in servers]
    configs = [memory_server(s, policy=POLICY, idempotent_tools={"lookup"}) for s in servers]
    history = History()
    baseline = Baseline.capture()
    # A thousand servers are a million long-lived objects, which every full collection of the
    # cyclic GC walks again: the fleet's own objects are frozen out of it once it is up.
    thresholds = gc.get_threshold()
    gc.disable()
    try:
        async with trio_mcp.open_manager(
            configs, rng=random.Random(config.seed), clock_anchor=0.0
        ) as manager:
            for name in names:
                await manager.wait_for(name, lambda snap: snap.session.active)
            gc.freeze()
            # The storm makes short-lived objects by the million: collect the young generation
            # less often (the harness's choice, not the library's).
            gc.set_threshold(100_000, 50, 1000)
            gc.enable()
            phases = {"fleet up": time.perf_counter() - real_start}
            report = await _storm(config, manager, servers, faults, work, history)
            phases["storm"] = time.perf_counter() - real_start - phases["fleet up"]
            closing = time.perf_counter()
    finally:
        gc.set_threshold(*thresholds)
        gc.enable()
        gc.unfreeze()
    phases["fleet down"] = time.perf_counter() - closing
    report.phases = phases
    for server in servers:
        history.load_ledger(server.name, server.invocations)
    await history.check_baseline(baseline)
    report.real_seconds = time.perf_counter() - real_start
    report.cpu_seconds = time.process_time() - cpu_start
    return report


async def _storm(
    config: StormConfig,
    manager: trio_mcp.Manager,
    servers: list[ScriptedServer],
    faults: list[_Fault],
    work: list[list[tuple[float, str, tuple[int, int]]]],
    history: History,
) -> StormReport:
    names = [s.name for s in servers]
    injected: Counter[str] = Counter()
    categories: Counter[str] = Counter()

    def count_failures(event: object) -> None:
        if isinstance(event, trio_mcp.InvocationFinished):
            for attempt in event.attempts:
                if not attempt.success:
                    categories[str(attempt.category)] += 1

    remove = manager.stream.add_listener(count_failures)
    try:
        with history.watch(manager):
            start = trio.current_time()
            done = trio.Event()

            async def worker(calls: list[tuple[float, str, tuple[int, int]]]) -> None:
                for pause, tool, (first, second) in calls:
                    await trio.sleep(pause)
                    arguments = {"amount": 1} if tool == "charge" else {"key": "k"}
                    await history.call(
                        manager,
                        tool,
                        arguments,
                        idempotent=IDEMPOTENT[tool],
                        timeout=TIMEOUT,
                        preferred=[names[first], names[second]],
                        author=author,
                    )

            async def faulty(fault: _Fault) -> None:
                server = servers[fault.server]
                if server.faulty:
                    return  # one fault at a time per server
                _inject(server, fault)
                injected[fault.kind] += 1
                with trio.move_on_after(fault.duration):
                    await done.wait()
                server.heal()

            async def inject_faults(nursery: trio.Nursery) -> None:
                for fault in faults:
                    if done.is_set():
                        return
                    with trio.move_on_at(start + fault.at):
                        await done.wait()
                    if done.is_set():
                        return
                    nursery.start_soon(faulty, fault)

            async with trio.open_nursery() as faults_nursery:
                faults_nursery.start_soon(inject_faults, faults_nursery)
                async with trio.open_nursery() as workers:
                    for calls in work:
                        workers.start_soon(worker, calls)
                done.set()  # every fault is cleared now
            for server in servers:
                server.heal()
            took = await history.check_recovery(manager)
            virtual = trio.current_time() - start
    finally:
        remove()
    return StormReport(
        config=config,
        history=history,
        faults=injected,
        real_seconds=0.0,
        virtual_seconds=virtual,
        recovery_seconds=max(took.values(), default=0.0),
        categories=categories,
    )


def run(config: StormConfig) -> StormReport:
    """Run the storm in a fresh trio run with an autojumping ``MockClock``."""
    import trio.testing

    report: list[StormReport] = []

    async def main() -> None:
        report.append(await run_storm(config))

    with _replayable_scheduling(config.seed):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return report[0]


@contextlib.contextmanager
def _replayable_scheduling(seed: int) -> Iterator[None]:
    """Trio's scheduler made to replay: tasks woken together run in an order drawn from ``seed``.

    Trio runs the tasks woken in one scheduling pass in a random order (so that no program
    comes to depend on one). Two tasks that act at the same virtual instant (a crashed server's
    reader and a caller waiting on it) can then take turns either way, and a storm with the
    same seed can end otherwise. Trio has a switch for exactly this, the one Hypothesis turns
    on; it is set here for one run and put back after.
    """
    from trio._core import _run

    if not hasattr(_run, "_r") or not hasattr(_run, "_ALLOW_DETERMINISTIC_SCHEDULING"):
        # A trio without the switch: the plan still replays, the turns taken at one instant may not.
        yield
        return
    state = _run._r.getstate()
    allowed = _run._ALLOW_DETERMINISTIC_SCHEDULING
    _run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    _run._r.seed(seed)
    try:
        yield
    finally:
        _run._ALLOW_DETERMINISTIC_SCHEDULING = allowed  # type: ignore[misc]
        _run._r.setstate(state)


def scaled(config: StormConfig, **changes: Any) -> StormConfig:
    return dataclasses.replace(config, **changes)


# -- one storm over several processes ----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PartSummary:
    """What one process of :func:`run_in_processes` reports back (plain data)."""

    part: int
    invocations: int
    outcomes: dict[str, int]
    faults: dict[str, int]
    categories: dict[str, int]
    violations: list[str]
    virtual_seconds: float
    recovery_seconds: float
    real_seconds: float
    cpu_seconds: float


def split(config: StormConfig, processes: int) -> list[StormConfig]:
    """``config`` as ``processes`` parts: each the whole fleet, with its share of the workers
    and of the invocations, and its own seed."""
    if not 1 <= processes <= config.workers:
        raise ValueError(f"processes must be between 1 and the number of workers ({config.workers})")
    parts = []
    for part in range(processes):
        workers = config.workers // processes + (1 if part < config.workers % processes else 0)
        invocations = config.invocations // processes + (1 if part < config.invocations % processes else 0)
        parts.append(dataclasses.replace(config, workers=workers, invocations=invocations, part=part))
    return parts


def run_part(config: StormConfig) -> PartSummary:
    report = run(config)
    return PartSummary(
        part=config.part,
        invocations=config.invocations,
        outcomes=dict(report.history.outcomes()),
        faults=dict(report.faults),
        categories=dict(report.categories),
        violations=[str(v) for v in report.history.violations()],
        virtual_seconds=report.virtual_seconds,
        recovery_seconds=report.recovery_seconds,
        real_seconds=report.real_seconds,
        cpu_seconds=report.cpu_seconds,
    )


def run_in_processes(config: StormConfig, processes: int) -> tuple[list[PartSummary], float]:
    """Run the storm as ``processes`` parts at once, one process each (a machine's cores: one
    trio run uses one); returns each part's summary and the real seconds of the whole."""
    import multiprocessing
    import sys
    from concurrent.futures import ProcessPoolExecutor
    from pathlib import Path

    parts = split(config, processes)
    start = time.perf_counter()
    here = str(Path(__file__).resolve().parent)
    with ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=sys.path.insert,
        initargs=(0, here),
    ) as pool:
        summaries = list(pool.map(run_part, parts))
    return summaries, time.perf_counter() - start


def parts_table(config: StormConfig, summaries: list[PartSummary], real_seconds: float) -> str:
    """The table of a storm run in parts, in the form of :meth:`StormReport.table`."""
    outcomes: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    violations: list[str] = []
    for summary in summaries:
        outcomes.update(summary.outcomes)
        faults.update(summary.faults)
        categories.update(summary.categories)
        violations.extend(summary.violations)
    detail = ", ".join(f"{k} {v}" for k, v in sorted(faults.items()) if v)
    per_part = "; ".join(
        f"part {s.part}: {s.invocations} invocations, {s.virtual_seconds:.1f} virtual s"
        f" in {s.real_seconds:.1f} real s"
        for s in summaries
    )
    rows = [
        ("runs", str(sum(s.invocations for s in summaries))),
        ("faults injected", f"{sum(faults.values())}  ({detail})"),
        ("outcomes", ", ".join(f"{k} {outcomes[k]}" for k in ("ok", "fail", "info"))),
        ("failed attempts", ", ".join(f"{k} {v}" for k, v in categories.most_common(8)) or "none"),
        (
            "slowest recovery",
            f"{max(s.recovery_seconds for s in summaries):.2f} virtual s after the faults stopped",
        ),
        ("duration", f"{real_seconds:.1f} real s in all ({per_part})"),
        ("violations", str(len(violations))),
    ]
    title = (
        f"F3 virtual-time storm (seed {config.seed}): {config.servers} in-memory servers, "
        f"{config.invocations} invocations by {config.workers} workers, in {len(summaries)} processes "
        f"(each the whole fleet with its share of the workers, its own seed)"
    )
    return format_table(title, rows, violations)
