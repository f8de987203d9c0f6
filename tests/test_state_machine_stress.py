"""A seeded, virtual-time stress test of the per-server state machine under load and faults.

A fleet of scripted in-memory servers (both protocol eras) takes 1,000 overlapping invocations
(``call_tool`` on echo / charge / sleep / lookup, ``read_resource``, random ``preferred``
lists, failover modes and deadlines) while a seeded fault driver breaks and heals servers,
and sometimes invalidates or refreshes their sessions. Every state change published on
``manager.stream`` is collected synchronously (``add_listener``). Afterwards:

a. per server, the published states form a path of the state machine: each change's
   ``previous`` is exactly the ``current`` of the change before it (nothing skipped, nothing
   published twice), ``valid_step`` accepts every step, and ``seq`` strictly increases;
b. every invocation ended with exactly one outcome: a (correct) result, or one exception of
   the documented types; none hung;
c. a side-effecting tool (``charge``, and ``echo``, which is not idempotent either) reached a
   server at most once per invocation unless the caller asked for ``failover="always"``, and
   an invocation that reported ``outcome="failed"`` (nothing executed) reached no server;
d. once every fault is healed and every backoff window has passed, every server is healthy
   (or recovered) with a ready session, and answers.

The plan (invocations, faults) is a function of the seed; the interleavings also depend on
trio's scheduler, which is not seeded.
"""

from __future__ import annotations

import itertools
import random
import traceback
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing

import trio_mcp
from trio_mcp import (
    BackoffPolicy,
    ConnectionState,
    InvocationFailedError,
    ManagerClosedError,
    RequestRejectedError,
    ServerPolicy,
    ServerStatus,
    UnknownServerError,
)
from trio_mcp._events import StateChange
from trio_mcp._state import ServerState, valid_step
from trio_mcp.testing import ScriptedServer, memory_server

SEEDS = (11, 22, 33)
SERVERS = 6
INVOCATIONS = 1000
WINDOW = 20.0
"""Virtual seconds over which the invocations start (and faults happen)."""

BURSTS = (0.5, 4.0, 9.5, 15.0, 19.0)
"""Instants at which many invocations start at once."""

BACKOFF = BackoffPolicy(initial=0.1, multiplier=2.0, cap=2.0, jitter=0.2)
HEALTH_INTERVAL = 1.0
PROBE_TIMEOUT = 0.5
HANDSHAKE_TIMEOUT = 1.0
CALL_TIMEOUT = 2.0
OP_BOUND = 120.0
"""An invocation still running after this many virtual seconds is stuck."""
SETTLE = 2 * (
    BACKOFF.cap * (1 + BACKOFF.jitter) + HANDSHAKE_TIMEOUT + PROBE_TIMEOUT + HEALTH_INTERVAL + CALL_TIMEOUT
)

TOOLS = ("echo", "charge", "sleep", "lookup")
KINDS = ("echo", "charge", "sleep", "lookup", "readme")
KIND_WEIGHTS = (3, 3, 1, 2, 2)
FAULTS = (
    "go_down",
    "come_up",
    "close_connections",
    "fail_probes",
    "delay_probes",
    "hang_tool",
    "fail_tool",
    "crash_during",
    "hang_handshake",
    "heal",
    "invalidate",
    "refresh",
)
FAULT_WEIGHTS = (2, 3, 2, 2, 1, 2, 2, 1, 1, 3, 2, 2)
FAULT_TARGETS = (*TOOLS, "docs://readme")

DOCUMENTED = (InvocationFailedError, RequestRejectedError, ManagerClosedError, UnknownServerError)


def policy(rng: random.Random) -> ServerPolicy:
    return ServerPolicy(
        health_interval=HEALTH_INTERVAL,
        probe_timeout=PROBE_TIMEOUT,
        handshake_timeout=HANDSHAKE_TIMEOUT,
        call_timeout=CALL_TIMEOUT,
        backoff=BACKOFF,
        unreachable_threshold=rng.choice([1, 2, 3]),
        max_concurrency=rng.choice([2, 8]),
        # A short handshake lifetime: re-handshakes (2026-07-28) and reconnects (legacy) on use.
        handshake_max_age=rng.choice([None, 3.0]),
        connect_on_start=rng.random() < 0.8,
    )


@dataclass(frozen=True)
class Call:
    index: int
    start: float
    kind: str
    arguments: dict[str, Any]
    preferred: tuple[str, ...]
    failover: str
    timeout: float | None
    attempt_timeout: float | None

    def __str__(self) -> str:
        return (
            f"#{self.index} {self.kind}({self.arguments}) at {self.start:g} preferred={list(self.preferred)} "
            f"failover={self.failover} timeout={self.timeout} attempt_timeout={self.attempt_timeout}"
        )


@dataclass(frozen=True)
class Fault:
    at: float
    server: str
    action: str
    target: str


@dataclass
class Plan:
    seed: int
    eras: dict[str, str]
    trusted: dict[str, bool]
    calls: list[Call]
    faults: list[Fault]
    policies: dict[str, ServerPolicy] = field(default_factory=dict)

    @classmethod
    def make(cls, seed: int) -> Plan:
        rng = random.Random(seed)
        names = [f"s{i}" for i in range(SERVERS)]
        eras = dict(zip(names, rng.sample(["dual", "legacy"] * (SERVERS // 2), SERVERS), strict=True))
        trusted = {name: rng.random() < 0.5 for name in names}
        policies = {name: policy(rng) for name in names}
        calls = []
        for index in range(INVOCATIONS):
            kind = rng.choices(KINDS, KIND_WEIGHTS)[0]
            arguments: dict[str, Any] = {
                "echo": {"text": f"t{index}"},
                "charge": {"amount": index + 1},  # unique per invocation: the ledger key
                "sleep": {"seconds": rng.choice([0.05, 0.3, 1.0, 2.5])},
                "lookup": {"key": f"k{index}"},
                "readme": {},
            }[kind]
            preferred = rng.sample(names, rng.randint(0, 3))
            if preferred and rng.random() < 0.1:
                preferred.append(rng.choice(preferred))  # a duplicate
            if rng.random() < 0.01:
                preferred.insert(rng.randint(0, len(preferred)), "ghost")  # not registered
            calls.append(
                Call(
                    index=index,
                    # A third start in bursts at the same instant (contention for sessions and
                    # bulkheads), the rest spread over the window.
                    start=rng.choice(BURSTS) if rng.random() < 0.3 else round(rng.uniform(0, WINDOW), 3),
                    kind=kind,
                    arguments=arguments,
                    preferred=tuple(preferred),
                    failover=rng.choices(["safe", "always", "never"], [6, 2, 2])[0],
                    timeout=rng.choice([None, None, None, 0.5, 1.5, 4.0]),
                    attempt_timeout=rng.choice([None, None, None, 0.3, 1.0, 3.0]),
                )
            )
        faults = []
        at = 0.0
        while True:
            at += rng.uniform(0.02, 0.4)
            if at >= WINDOW:
                break
            faults.append(
                Fault(
                    at=round(at, 3),
                    server=rng.choice(names),
                    action=rng.choices(FAULTS, FAULT_WEIGHTS)[0],
                    target=rng.choice(FAULT_TARGETS),
                )
            )
        return cls(seed, eras, trusted, calls, faults, policies)


@dataclass
class Run:
    plan: Plan
    servers: dict[str, ScriptedServer] = field(default_factory=dict)
    changes: list[StateChange] = field(default_factory=list)
    initial: dict[str, ServerState] = field(default_factory=dict)
    outcomes: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    deliveries: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    """(tool, unique argument) -> the servers the request reached, in order."""
    problems: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def problem(self, what: str, exc: BaseException | None = None) -> None:
        detail = f"seed={self.plan.seed}: {what}"
        if exc is not None:
            detail += "\n" + "".join(traceback.format_exception(exc))
        self.problems.append(detail)


def record_deliveries(server: ScriptedServer, run: Run) -> None:
    """Note every ``tools/call`` that reaches the server's handler, by its unique argument."""

    async def middleware(ctx: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        if ctx.method == "tools/call" and ctx.params is not None:
            name = ctx.params.get("name")
            arguments = ctx.params.get("arguments") or {}
            key = {"charge": "amount", "echo": "text", "lookup": "key"}.get(name)
            if key is not None and key in arguments:
                run.deliveries[(name, str(arguments[key]))].append(server.name)
        return await call_next(ctx)

    server.mcp_server.middleware.append(middleware)  # innermost: only requests that got through


def text_of(result: Any) -> str | None:
    content = getattr(result, "content", None) or getattr(result, "contents", None)
    return getattr(content[0], "text", None) if content else None


def check_result(call: Call, result: Any, names: list[str]) -> str | None:
    if getattr(result, "is_error", False):
        return f"isError result: {text_of(result)!r}"
    got = text_of(result)
    if call.kind == "readme":
        ok = got in {f"readme from {name}" for name in names}
    elif call.kind == "lookup":
        ok = got in {f"{name}:{call.arguments['key']}" for name in names}
    elif call.kind == "sleep":
        ok = got == f"slept {call.arguments['seconds']:g}"
    elif call.kind == "charge":
        ok = got == f"charged {call.arguments['amount']}"
    else:
        ok = got == call.arguments["text"]
    return None if ok else f"wrong answer {got!r}"


async def invoke(manager: trio_mcp.Manager, call: Call, run: Run) -> None:
    await trio.sleep_until(call.start)
    options: dict[str, Any] = {
        "preferred": list(call.preferred),
        "failover": call.failover,
        "timeout": call.timeout,
        "attempt_timeout": call.attempt_timeout,
    }
    outcome: Any = None
    with trio.move_on_after(OP_BOUND) as bound:
        try:
            if call.kind == "readme":
                outcome = await manager.read_resource("docs://readme", **options)
            elif call.kind == "charge":  # invoke: the trace of a success too
                outcome = await manager.invoke("tools/call", "charge", call.arguments, **options)
            else:
                outcome = await manager.call_tool(call.kind, call.arguments, **options)
        except trio.Cancelled:
            raise
        except BaseException as exc:
            outcome = exc
    if bound.cancelled_caught:
        run.problem(f"{call}: still running after {OP_BOUND:g} virtual seconds")
        run.outcomes[call.index].append("hung")
        return
    run.outcomes[call.index].append(outcome)


async def drive_faults(manager: trio_mcp.Manager, run: Run, nursery: trio.Nursery) -> None:
    for fault in run.plan.faults:
        await trio.sleep_until(fault.at)
        server = run.servers[fault.server]
        run.counts[f"fault {fault.action}"] += 1
        if fault.action == "invalidate":
            manager.invalidate(fault.server)
        elif fault.action == "refresh":
            nursery.start_soon(refresh, manager, fault.server, run)
        elif fault.action in ("hang_tool", "fail_tool", "crash_during"):
            getattr(server, fault.action)(fault.target)
        elif fault.action == "delay_probes":
            server.delay_probes(0.7)  # longer than the probe timeout
        else:
            getattr(server, fault.action)()


async def refresh(manager: trio_mcp.Manager, name: str, run: Run) -> None:
    with trio.move_on_after(OP_BOUND) as bound:
        try:
            await manager.refresh(name)
            run.counts["refresh ok"] += 1
        except trio_mcp.TrioMcpError as exc:
            run.counts[f"refresh {type(exc).__name__}"] += 1
        except Exception as exc:
            run.problem(f"refresh({name}) raised {type(exc).__name__}", exc)
    if bound.cancelled_caught:
        run.problem(f"refresh({name}) still running after {OP_BOUND:g} virtual seconds")


async def stress(seed: int) -> Run:
    plan = Plan.make(seed)
    run = Run(plan)
    names = list(plan.eras)
    for name, era in plan.eras.items():
        run.servers[name] = server = ScriptedServer(name, era=era)
        record_deliveries(server, run)

    def listen(event: Any) -> None:
        if isinstance(event, StateChange):
            run.changes.append(event)

    async with trio_mcp.open_manager(rng=random.Random(seed)) as manager:
        manager.stream.add_listener(listen)
        for name in names:
            config = memory_server(run.servers[name], policy=plan.policies[name], trusted=plan.trusted[name])
            await manager.add_server(config)
            run.initial[name] = ServerState(auto=config.policy.connect_on_start)  # what it starts from

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drive_faults, manager, run, nursery)
            for call in plan.calls:
                nursery.start_soon(invoke, manager, call, run)

        # (d) heal everything, let every retry window open, then check every server.
        for server in run.servers.values():
            server.heal()
        await trio.sleep(SETTLE)
        await manager.health_check()
        await trio.sleep(SETTLE)
        for name in names:
            snap = manager.server(name)
            if snap.status not in (ServerStatus.HEALTHY, ServerStatus.RECOVERED) or (
                snap.connection is not ConnectionState.READY
            ):
                run.problem(
                    f"{name} did not recover: {snap.status}/{snap.connection}, failures="
                    f"{snap.consecutive_failures}, retry_at={snap.retry_at}, now={trio.current_time():g}, "
                    f"last error {snap.last_error_category}: {snap.last_error}"
                )
            try:
                result = await manager.call_tool(
                    "echo", {"text": "final"}, preferred=[name], failover="never", timeout=OP_BOUND
                )
                if text_of(result) != "final":
                    run.problem(f"{name} answered {text_of(result)!r} after recovery")
            except trio_mcp.TrioMcpError as exc:
                run.problem(f"{name} failed after recovery: {exc}")
    return run


def check_paths(run: Run) -> None:
    """(a) every server's published states form a path of the state machine."""
    seqs = [change.seq for change in run.changes]
    if seqs != sorted(set(seqs)):
        run.problem("seq is not strictly increasing across the stream")
    by_server: dict[str, list[StateChange]] = defaultdict(list)
    for change in run.changes:
        by_server[change.server].append(change)
    for name, initial in run.initial.items():
        changes = by_server[name]
        run.counts["state changes"] += len(changes)
        expected_previous = initial
        for i, change in enumerate(changes):
            where = f"{name} change {i} (seq {change.seq}, {change.reason!r})"
            if change.previous != expected_previous:
                run.problem(
                    f"{where}: previous is not the state published before it: "
                    f"v{change.previous.version} {change.previous.status}/{change.previous.connection}, "
                    f"expected v{expected_previous.version} "
                    f"{expected_previous.status}/{expected_previous.connection}"
                )
            # The step from the state published before (the brief's path), and the step this
            # change says it made (the same one when nothing was skipped).
            for label, before in (("", expected_previous), ("as published ", change.previous)):
                reason = valid_step(before, change.current)
                if reason is not None:
                    run.problem(
                        f"{where}: invalid step {label}{reason} "
                        f"({before.status}/{before.connection} -> "
                        f"{change.current.status}/{change.current.connection})"
                    )
                if before == change.previous:
                    break
            expected_previous = change.current
        if not changes or changes[-1].current.connection is not ConnectionState.CLOSED:
            run.problem(f"{name}: the last published state is not closed")


def check_outcomes(run: Run) -> None:
    """(b) exactly one outcome per invocation; (c) no side effect ran twice."""
    names = list(run.plan.eras)
    for call in run.plan.calls:
        outcomes = run.outcomes.get(call.index, [])
        if len(outcomes) != 1:
            run.problem(f"{call}: {len(outcomes)} outcomes: {outcomes!r}")
            continue
        (outcome,) = outcomes
        if outcome == "hung":
            continue
        ghost = "ghost" in call.preferred
        if isinstance(outcome, BaseException):
            run.counts[f"{call.kind} {type(outcome).__name__}"] += 1
            if not isinstance(outcome, DOCUMENTED) or isinstance(outcome, BaseExceptionGroup):
                run.problem(f"{call}: undocumented {type(outcome).__name__}: {outcome}", outcome)
                continue
            if ghost != isinstance(outcome, UnknownServerError):
                run.problem(f"{call}: {type(outcome).__name__}: {outcome}", outcome)
            if isinstance(outcome, ManagerClosedError):
                run.problem(f"{call}: ManagerClosedError while the manager was open: {outcome}", outcome)
            if isinstance(outcome, InvocationFailedError):
                sent = [a for a in outcome.attempts if a.sent]
                if outcome.outcome != ("unknown" if sent else "failed"):
                    run.problem(f"{call}: outcome {outcome.outcome!r} with {len(sent)} sent attempts")
                if call.failover == "never" and len({a.server for a in outcome.attempts}) > 1:
                    run.problem(f"{call}: failover='never' tried {[a.server for a in outcome.attempts]}")
                if call.kind == "charge" and call.failover != "always" and len(sent) > 1:
                    run.problem(f"{call}: sent to {[a.server for a in sent]}")
        else:
            run.counts[f"{call.kind} ok"] += 1
            if ghost:
                run.problem(f"{call}: succeeded with an unknown preferred server")
            result = outcome.result if call.kind == "charge" else outcome
            problem = check_result(call, result, names)
            if problem is not None:
                run.problem(f"{call}: {problem}")
            if call.kind == "charge":
                sent = [a.server for a in outcome.attempts if a.sent]
                if call.failover != "always" and sent != [outcome.server]:
                    run.problem(f"{call}: answered by {outcome.server}, sent to {sent}")
        # (c) what reached the servers
        key = {"charge": "amount", "echo": "text", "lookup": "key"}.get(call.kind)
        if key is None:
            continue
        reached = run.deliveries.get((call.kind, str(call.arguments[key])), [])
        if isinstance(outcome, InvocationFailedError) and outcome.outcome == "failed" and reached:
            run.problem(f"{call}: outcome 'failed' (nothing executed), but it reached {reached}")
        if isinstance(outcome, UnknownServerError | RequestRejectedError) and reached:
            run.problem(f"{call}: {type(outcome).__name__}, but it reached {reached}")
        if call.kind in ("charge", "echo") and call.failover != "always" and len(reached) > 1:
            run.problem(f"{call}: the side effect reached {reached}")
    # Executions (the servers' own ledgers) never exceed the requests that reached them.
    for name, server in run.servers.items():
        for tool in ("charge", "echo", "lookup"):
            reached = sum(servers.count(name) for (t, _), servers in run.deliveries.items() if t == tool)
            executed = server.executions(tool)
            if executed > reached:
                run.problem(f"{name}: {tool} executed {executed} times, only {reached} requests reached it")


@pytest.mark.parametrize("seed", SEEDS)
async def test_state_machine_under_load_and_faults(seed: int, autojump_clock: trio.testing.MockClock) -> None:
    run = await stress(seed)
    check_paths(run)
    check_outcomes(run)
    # The run exercised what it is meant to.
    # (Probes that find a healthy server healthy publish no change.)
    assert run.counts["state changes"] > 300, run.counts
    assert sum(v for k, v in run.counts.items() if k.endswith(" ok") and not k.startswith("refresh")) > 300
    assert sum(v for k, v in run.counts.items() if k.endswith("InvocationFailedError")) > 20, run.counts
    assert sum(len(v) for k, v in run.deliveries.items() if k[0] == "charge") > 100
    assert run.problems == [], "\n".join(run.problems[:20]) + f"\n({len(run.problems)} problems)"


def test_the_path_check_catches_skipped_and_repeated_transitions() -> None:
    """The checker itself: a doctored history is refused."""
    from trio_mcp._state import on_connect_demanded, on_connecting, on_dropping

    start = ServerState()
    states = [start]
    for step in (on_connect_demanded, on_connecting, on_dropping):
        states.append(step(states[-1]))
    history = [
        StateChange(
            seq=i + 1,
            server="s0",
            previous=before,
            current=after,
            reason="test",
            category=None,
            correlation_id=None,
            at=0.0,
            timestamp=0.0,
        )
        for i, (before, after) in enumerate(itertools.pairwise(states))
    ]
    plan = Plan(seed=0, eras={"s0": "dual"}, trusted={"s0": False}, calls=[], faults=[])

    def problems(changes: list[StateChange]) -> list[str]:
        run = Run(plan, changes=changes, initial={"s0": start})
        check_paths(run)
        return run.problems

    # idle -> connecting -> closing: the last step is no edge of the machine, and it is not closed.
    assert problems(history) == [
        "seed=0: s0 change 2 (seq 3, 'test'): invalid step connection connecting -> closing "
        "(unknown/connecting -> unknown/closing)",
        "seed=0: s0: the last published state is not closed",
    ]
    skipped = problems([history[0], history[2]])
    assert any("previous is not the state published before it" in p for p in skipped), skipped
    assert any("invalid step version 1 -> 3" in p for p in skipped), skipped
    repeated = problems([history[0], history[0]])
    assert any("seq is not strictly increasing" in p for p in repeated), repeated
    assert any("invalid step version 1 -> 1" in p for p in repeated), repeated
