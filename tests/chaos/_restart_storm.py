"""F5: a restart storm. Real stdio servers that crash on every start, checked for herding.

Every server's command is a shell that exits at once with status 1 (a server that crashes on
start) until a flag file appears; then it starts ``ledger_server.py`` instead. The manager
respawns each one on its jittered backoff. Recorded from the manager's state stream: every
time a server entered its backoff (when, and the retry time drawn) and every time it was
respawned. Checked afterwards:

- **jitter**: every delay drawn lies within the policy's jitter around its base delay;
- **no herding**: the restart times drawn are counted in 10 ms buckets, and no bucket holds
  more than three times its expected share by more than chance explains (see :func:`herding`).
  The expected share of a bucket is what the jittered schedule predicts: each backoff spreads
  its restart evenly over ``base * (1 - jitter)`` to ``base * (1 + jitter)`` after it began. A
  fleet that restarted together would fill one bucket with all of them;
- **on time**: a restart begins when its retry window opens: the lag (the event loop's
  scheduling, and the supervisor taking the transition) is printed, and its p99 must stay
  under :data:`MAX_LAG`;
- **bounded forks**: the most restarts in one second, against the schedule's ceiling;
- **CPU**: the manager's process and its children use less than one core over the storm;
- then the flag appears: every server is healthy again within its backoff cap plus a
  handshake (N6), and after closing, nothing is left (N5).
"""

from __future__ import annotations

import math
import resource
import shlex
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

import trio_mcp
from trio_mcp._events import StateChange, StreamEvent
from trio_mcp.testing import Baseline, History

SERVER_SCRIPT = Path(__file__).with_name("ledger_server.py")
BUCKET = 0.010
"""Seconds per bucket of the herding check."""
HERD_FACTOR = 3.0
HERD_SIGNIFICANCE = 0.001
"""The chance, over the whole run, that a check of herding flags a bucket by chance alone."""
MAX_LAG = 0.25
"""Seconds a restart may begin after its retry window opened (p99)."""


@dataclass(frozen=True, kw_only=True)
class RestartStormConfig:
    servers: int = 50
    seconds: float = 8.0
    """How long every server keeps crashing."""
    backoff: trio_mcp.BackoffPolicy = field(
        default_factory=lambda: trio_mcp.BackoffPolicy(initial=0.2, multiplier=1.6, cap=2.0, jitter=0.2)
    )
    recovery: float = 30.0
    """Seconds the fleet gets to be healthy once the flag appears (on top of the backoff cap)."""


@dataclass(frozen=True)
class Backoff:
    """One backoff: when it began, the delay drawn, the base delay it was drawn around."""

    server: str
    began: float
    delay: float
    base: float


@dataclass(kw_only=True)
class RestartStormReport:
    config: RestartStormConfig
    backoffs: list[Backoff]
    restarts: list[tuple[str, float]]
    lags: list[float]
    off_jitter: list[Backoff]
    herded: list[tuple[float, int, float]]
    """(bucket start, restarts in it, expected) of every bucket over the limit."""
    busiest_second: int
    fork_ceiling: float
    cpu: float
    recovery_seconds: float
    baseline_problems: list[str]
    real_seconds: float

    @property
    def violations(self) -> list[str]:
        found = [
            f"delay {b.delay:.3f}s outside the jitter of {b.base:.3f}s ({b.server})" for b in self.off_jitter
        ]
        found += [f"{n} restarts in the 10 ms from {t:.3f}s, expected {e:.2f}" for t, n, e in self.herded]
        if self.lag_p99 > MAX_LAG:
            found.append(f"restarts began up to {self.lag_p99 * 1000:.0f} ms late (p99)")
        if self.busiest_second > self.fork_ceiling:
            found.append(f"{self.busiest_second} restarts in one second (ceiling {self.fork_ceiling:.0f})")
        if self.cpu >= 1.0:
            found.append(f"CPU {self.cpu:.2f} of a core")
        if self.recovery_seconds > self.config.backoff.cap + self.config.recovery:
            found.append(f"healthy again only after {self.recovery_seconds:.1f}s")
        return found + self.baseline_problems

    @property
    def lag_p99(self) -> float:
        lags = sorted(self.lags) or [0.0]
        return lags[min(len(lags) - 1, int(0.99 * len(lags)))]

    def table(self) -> str:
        c = self.config
        lags = sorted(self.lags) or [0.0]
        drawn = [b.began + b.delay for b in self.backoffs]
        busiest = max(expected_counts(self.backoffs, c.backoff.jitter).values(), default=0.0)
        rows = [
            f"F5 restart storm: {c.servers} stdio servers crashing on every start for {c.seconds:g}s"
            f" (backoff {c.backoff.initial:g}s x{c.backoff.multiplier:g}, cap {c.backoff.cap:g}s,"
            f" jitter {c.backoff.jitter:.0%})",
            f"  restarts          {len(self.restarts)} ({len(self.backoffs)} backoffs drawn)",
            f"  busiest 10 ms     {max(Counter(bucket_of(t) for t in drawn).values(), default=0)}"
            f" restarts drawn (the schedule expects at most {busiest:.1f} in a bucket)",
            f"  busiest second    {self.busiest_second} restarts (schedule ceiling {self.fork_ceiling:.0f})",
            f"  restart lag       p50 {lags[len(lags) // 2] * 1000:.1f} ms, p99"
            f" {self.lag_p99 * 1000:.1f} ms after the window opened",
            f"  CPU               {self.cpu:.2f} of one core (manager and children)",
            f"  healthy again     {self.recovery_seconds:.1f}s after the crashes stopped",
            f"  real time         {self.real_seconds:.1f}s",
            f"  violations        {len(self.violations)}",
        ]
        rows += [f"    {v}" for v in self.violations[:10]]
        return "\n".join(rows)


def bucket_of(at: float) -> int:
    return math.floor(at / BUCKET)


def expected_counts(backoffs: Sequence[Backoff], jitter: float) -> dict[int, float]:
    """How many restarts each 10 ms bucket should hold under the jittered schedule: each backoff
    spreads one restart evenly over its window."""
    expected: dict[int, float] = {}
    for b in backoffs:
        low, high = b.began + b.base * (1 - jitter), b.began + b.base * (1 + jitter)
        if high - low < 1e-12:
            bucket = bucket_of(low)
            expected[bucket] = expected.get(bucket, 0.0) + 1.0
            continue
        for bucket in range(bucket_of(low), bucket_of(high) + 1):
            start, end = bucket * BUCKET, (bucket + 1) * BUCKET
            overlap = min(end, high) - max(start, low)
            if overlap > 0:
                expected[bucket] = expected.get(bucket, 0.0) + overlap / (high - low)
    return expected


def poisson_tail(count: int, expected: float) -> float:
    """P(X >= count) for X ~ Poisson(expected)."""
    if count <= 0:
        return 1.0
    term = math.exp(-expected)
    below = term
    for k in range(1, count):
        term *= expected / k
        below += term
    return max(0.0, 1.0 - below)


def herding(
    restarts: Sequence[float], backoffs: Sequence[Backoff], jitter: float
) -> list[tuple[float, int, float]]:
    """The buckets holding more than three times the restarts the schedule expects there, by
    more than chance explains: a bucket's count is Poisson around its expectation, and among
    thousands of buckets a few hold several times theirs by chance alone, so a bucket counts
    only when so many restarts there had a chance under :data:`HERD_SIGNIFICANCE` divided by
    the number of buckets (a herd of a fleet is many orders of magnitude past that)."""
    expected = expected_counts(backoffs, jitter)
    observed = Counter(bucket_of(t) for t in restarts)
    cutoff = HERD_SIGNIFICANCE / max(len(expected), 1)
    return [
        (bucket * BUCKET, count, expected.get(bucket, 0.0))
        for bucket, count in sorted(observed.items())
        if count > HERD_FACTOR * expected.get(bucket, 0.0)
        and poisson_tail(count, expected.get(bucket, 0.0)) < cutoff
    ]


def outside_jitter(backoffs: Sequence[Backoff], jitter: float) -> list[Backoff]:
    return [
        b for b in backoffs if not b.base * (1 - jitter) - 1e-9 <= b.delay <= b.base * (1 + jitter) + 1e-9
    ]


def busiest_second(restarts: Sequence[float]) -> int:
    ordered = sorted(restarts)
    most, first = 0, 0
    for last, at in enumerate(ordered):
        while ordered[first] <= at - 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


async def run_restart_storm(config: RestartStormConfig, workdir: Path) -> RestartStormReport:
    flag = workdir / "healthy"
    ledger = workdir / "ledger.txt"
    policy = trio_mcp.ServerPolicy(
        health_interval=5.0, handshake_timeout=20.0, backoff=config.backoff, unreachable_threshold=3
    )
    serve = shlex.join([sys.executable, str(SERVER_SCRIPT), "--ledger", str(ledger), "--name"])
    configs = [
        trio_mcp.ServerConfig(
            name=f"crash{i}",
            transport=trio_mcp.StdioTransport(
                command="/bin/sh",
                args=["-c", f"test -e {shlex.quote(str(flag))} || exit 1; exec {serve} crash{i}"],
            ),
            policy=policy,
        )
        for i in range(config.servers)
    ]
    backoffs: list[Backoff] = []
    restarts: list[tuple[str, float]] = []
    lags: list[float] = []
    window_opens: dict[str, float] = {}

    def record(event: StreamEvent) -> None:
        if not isinstance(event, StateChange):
            return
        before, after = event.previous.connection, event.current.connection
        retry_at = event.current.retry_at
        if after is trio_mcp.ConnectionState.BACKOFF and before is not after and retry_at is not None:
            base = config.backoff.base_delay(max(event.current.retry_count - 1, 0))
            # The delay drawn runs from the failure (last_checked_at), which the supervisor may
            # publish a little later on a busy machine: measured from the publication, a draw
            # near the jitter's lower bound would look shorter than it was.
            failed_at = event.current.last_checked_at
            began = failed_at if failed_at is not None else event.at
            backoffs.append(Backoff(event.server, began, retry_at - began, base))
            window_opens[event.server] = retry_at
        elif before is trio_mcp.ConnectionState.BACKOFF and after is trio_mcp.ConnectionState.CONNECTING:
            restarts.append((event.server, event.at))
            if event.server in window_opens:
                lags.append(event.at - window_opens.pop(event.server))

    baseline = Baseline.capture()
    real_start = time.monotonic()
    async with trio_mcp.open_manager(configs) as manager:
        remove = manager.stream.add_listener(record)
        cpu_start, wall_start = _cpu_seconds(), time.monotonic()
        await trio.sleep(config.seconds)
        cpu = (_cpu_seconds() - cpu_start) / (time.monotonic() - wall_start)
        remove()
        # The crashes stop: every server must come back on its own.
        stop = trio.current_time()
        flag.touch()
        with trio.move_on_after(config.backoff.cap + config.recovery):
            for c in configs:
                await manager.wait_for(c.name, lambda s: s.status is trio_mcp.ServerStatus.HEALTHY)
        recovery = trio.current_time() - stop
    problems = await History().check_baseline(baseline)
    times = [at for _, at in restarts]
    ceiling = config.servers / (config.backoff.initial * (1 - config.backoff.jitter))
    return RestartStormReport(
        config=config,
        backoffs=backoffs,
        restarts=restarts,
        lags=lags,
        off_jitter=outside_jitter(backoffs, config.backoff.jitter),
        herded=herding([b.began + b.delay for b in backoffs], backoffs, config.backoff.jitter),
        busiest_second=busiest_second(times),
        fork_ceiling=ceiling,
        cpu=cpu,
        recovery_seconds=recovery,
        baseline_problems=problems,
        real_seconds=time.monotonic() - real_start,
    )
