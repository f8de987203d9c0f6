"""F1: stdio servers killed mid-call, checked with :class:`History`.

A fleet of real stdio servers (``ledger_server.py``: each execution is a line in a ledger
file, keyed by invocation id) serves a light background load while runners kill one server
after another with SIGKILL, each kill at a phase drawn from the seed:

- ``before_write``: the server is killed, then a call is made to it at once (before the
  manager can have noticed);
- ``after_write``: the call is made, and the server killed once the ledger shows it started
  executing;
- ``mid_response``: the server writes half of its answer's line, and is killed then.

Calls alternate between ``charge`` (not idempotent) and ``lookup`` (idempotent, failover
allowed), each preferring the victim and then another server. Background calls in flight on
the victim are cut at whatever phase they are in. Afterwards every server must be healthy again
(N6), the ledger is checked against the history (N1 to N4) and every server process ever
started must be gone (N5). Real processes, pipes and clock.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import trio

import trio_mcp
from trio_mcp.testing import Baseline, History

PHASES = ("before_write", "after_write", "mid_response")
TOOLS = ("charge", "lookup")
IDEMPOTENT = {"charge": False, "lookup": True}
SERVER_SCRIPT = Path(__file__).with_name("ledger_server.py")

POLICY = trio_mcp.ServerPolicy(
    health_interval=1.0,
    probe_timeout=2.0,
    handshake_timeout=15.0,
    call_timeout=10.0,
    backoff=trio_mcp.BackoffPolicy(initial=0.1, multiplier=2.0, cap=1.0, jitter=0.2),
)
TIMEOUT = 20.0
"""Each invocation's overall deadline (generous: the machine may be busy starting servers)."""
ATTEMPT_TIMEOUT = 10.0


@dataclass(frozen=True, kw_only=True)
class KillConfig:
    kills: int = 100
    servers: int = 4
    runners: int = 3
    """Kills under way at once (each on its own server)."""
    background: int = 2
    """Workers calling the fleet meanwhile (their calls get cut at random phases)."""
    seed: int = 1


@dataclass(kw_only=True)
class KillReport:
    config: KillConfig
    history: History
    kills: Counter[str]
    real_seconds: float
    processes: int
    outcomes_by_phase: dict[str, Counter[str]] = field(default_factory=dict)

    def table(self) -> str:
        c = self.config
        by_phase = "; ".join(
            f"{phase}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            for phase, counts in sorted(self.outcomes_by_phase.items())
        )
        return self.history.table(
            f"F1 stdio kills mid-call (seed {c.seed}): {c.kills} SIGKILLs over {c.servers} servers",
            runs=sum(self.kills.values()),
            faults=self.kills,
            notes={
                "outcomes of the killed calls": by_phase,
                "all calls (with background)": len(self.history),
                "server processes started": self.processes,
                "duration": f"{self.real_seconds:.1f} real s",
            },
        )


def server_config(name: str, ledger: Path) -> trio_mcp.ServerConfig:
    # No COVERAGE_* settings: the ledger server is no code of ours, and a thousand restarts
    # must stay cheap.
    transport = trio_mcp.StdioTransport(
        command=sys.executable, args=(str(SERVER_SCRIPT), "--name", name, "--ledger", str(ledger))
    )
    return trio_mcp.ServerConfig(name=name, transport=transport, policy=POLICY, idempotent_tools={"lookup"})


class LedgerFile:
    """The servers' shared ledger, read as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.lines: list[tuple[str, int, str, str, str]] = []

    def refresh(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        for line in complete:
            server, pid, event, tool, invocation_id = line.decode().split(" ")
            self.lines.append((server, int(pid), event, tool, invocation_id))

    async def wait_for(
        self, server: str, event: str, invocation_id: str, *, unless: trio.Event
    ) -> int | None:
        """Wait until ``server`` recorded ``event`` for ``invocation_id``; returns the pid that did
        (``None``: ``unless`` was set first)."""
        seen = 0
        while not unless.is_set():
            self.refresh()
            for s, pid, e, _, i in self.lines[seen:]:
                if (s, e, i) == (server, event, invocation_id):
                    return pid
            seen = len(self.lines)
            await trio.sleep(0.005)  # a file has no change event to wait on
        return None

    def last_pid(self, server: str) -> int | None:
        """The process ``server`` started last."""
        self.refresh()
        ups = [pid for s, pid, event, _, _ in self.lines if s == server and event == "up"]
        return ups[-1] if ups else None

    def pids(self) -> set[int]:
        self.refresh()
        return {pid for _, pid, event, _, _ in self.lines if event == "up"}

    def executions(self) -> dict[str, Counter[str]]:
        """Executions started per server, per invocation id."""
        self.refresh()
        out: dict[str, Counter[str]] = {}
        for server, _, event, _, invocation_id in self.lines:
            if event == "start":
                out.setdefault(server, Counter())[invocation_id] += 1
        return out


async def run_kills(config: KillConfig, workdir: Path) -> KillReport:
    """Run F1 (real clock): ``config.kills`` kills; files go to ``workdir``."""
    real_start = time.perf_counter()
    rng = random.Random(config.seed)
    ledger = LedgerFile(workdir / "ledger.txt")
    names = [f"k{i}" for i in range(config.servers)]
    history = History()
    kills: Counter[str] = Counter()
    by_phase: dict[str, Counter[str]] = {}
    baseline = Baseline.capture()

    async with trio_mcp.open_manager(
        [server_config(name, ledger.path) for name in names], rng=random.Random(config.seed)
    ) as manager:
        with history.watch(manager):
            for name in names:
                with trio.fail_after(60):
                    await manager.wait_for(name, lambda s: s.session.active)
            idle = set(names)
            idle_changed = trio.Event()
            stop_background = trio.Event()
            started = 0  # kills under way or done
            numbers = itertools.count(1)

            async def one_kill(number: int, victim: str, phase: str, tool: str, other: str) -> bool:
                """One kill; whether it happened (the call may have gone elsewhere)."""
                await manager.wait_for(victim, lambda s: s.session.active)
                pid = ledger.last_pid(victim)
                assert pid is not None
                invocation_id = f"kill-{number}"
                arguments: dict[str, object] = {"hold_on": victim}
                if tool == "charge":
                    arguments["amount"] = 1
                if phase == "before_write":
                    os.kill(pid, signal.SIGKILL)
                else:
                    arguments["hold"] = "after_start" if phase == "after_write" else "mid_response"
                ended = trio.Event()

                async def call() -> None:
                    await history.call(
                        manager,
                        tool,
                        arguments,
                        idempotent=IDEMPOTENT[tool],
                        timeout=TIMEOUT,
                        attempt_timeout=ATTEMPT_TIMEOUT,
                        preferred=[victim, other],
                        invocation_id=invocation_id,
                    )
                    ended.set()

                killed = phase == "before_write"
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(call)
                    if not killed:
                        event = "start" if phase == "after_write" else "half"
                        holder = await ledger.wait_for(victim, event, invocation_id, unless=ended)
                        if holder is not None:
                            os.kill(holder, signal.SIGKILL)
                            killed = True
                if killed:
                    kills[phase] += 1
                    outcome = history.outcome(invocation_id)
                    by_phase.setdefault(phase, Counter())[f"{tool} {outcome}"] += 1
                return killed

            async def runner() -> None:
                nonlocal started, idle_changed
                while started < config.kills:
                    started += 1
                    number = next(numbers)
                    phase, tool = rng.choice(PHASES), rng.choice(TOOLS)
                    while not (ready := sorted(n for n in idle if manager.server(n).session.active)):
                        # Woken when a server is handed back; a restart is not an event here.
                        with trio.move_on_after(0.05):
                            await idle_changed.wait()
                    victim = rng.choice(ready)
                    other = rng.choice([n for n in names if n != victim])
                    idle.discard(victim)
                    try:
                        if not await one_kill(number, victim, phase, tool, other):
                            started -= 1  # the call went elsewhere: no kill, draw again
                    finally:
                        idle.add(victim)
                        idle_changed.set()
                        idle_changed = trio.Event()

            async def background(seed: int) -> None:
                brng = random.Random(seed)
                while not stop_background.is_set():
                    tool = brng.choice(TOOLS)
                    first, second = brng.sample(names, 2)
                    await history.call(
                        manager,
                        tool,
                        {"amount": 1} if tool == "charge" else {},
                        idempotent=IDEMPOTENT[tool],
                        timeout=TIMEOUT,
                        attempt_timeout=ATTEMPT_TIMEOUT,
                        preferred=[first, second],
                    )
                    await trio.sleep(brng.uniform(0.0, 0.1))

            async with trio.open_nursery() as nursery:
                for b in range(config.background):
                    nursery.start_soon(background, config.seed * 1000 + b)
                async with trio.open_nursery() as runners:
                    for _ in range(config.runners):
                        runners.start_soon(runner)
                stop_background.set()
            await history.check_recovery(manager)
    for server, executions in ledger.executions().items():
        history.load_ledger(server, executions)
    pids = ledger.pids()
    await history.check_baseline(baseline, within=10.0, groups=pids)
    return KillReport(
        config=config,
        history=history,
        kills=kills,
        real_seconds=time.perf_counter() - real_start,
        processes=len(pids),
        outcomes_by_phase=by_phase,
    )
