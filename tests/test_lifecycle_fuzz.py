"""A seeded, virtual-time fuzz test of the manager's lifecycle operations.

A ``random.Random(seed)`` drives a sequence of steps against a pool of scripted in-memory
servers (both protocol eras): registering and removing servers, invalidating, refreshing,
connecting, initializing, health checks, invocations with random failover settings, catalog
listings, fault injection and the passing of virtual time. Most operations are started in
the background so that they overlap: an invocation in flight while its server is removed, a
refresh while the server is mid-handshake, a removal while the supervisor is connecting,
probing, serving a call or closing. Every operation is bounded by a generous virtual timeout,
so the test always ends. Only the public API is used.

Invariants:

1. Every public call returns or raises one of the library's documented exceptions (a
   :class:`trio_mcp.TrioMcpError`, or ``ValueError`` for deliberately bad arguments): never an
   ``ExceptionGroup``, never another type. It also ends: a call still running after the bound
   is a violation (for ``wait_for``: only when its server was removed, or the manager closed,
   while it waited). Results that do come back are the right ones.
2. After the steps (every server healed, backoff windows passed), every registered server has
   a live supervisor (its connection state is not ``closed``), and ``connect(name)`` followed by
   ``call_tool("echo", preferred=[name], failover="never")`` succeeds on it.
3. Leaving ``open_manager`` raises nothing, also with calls in flight.
4. At the end no scripted server has a live connection.

Drain (half the seeds, chosen by the seed), as ``Manager.drain`` documents it: invocations in
flight when ``drain(grace)`` is called end by the drain deadline; one whose attempt the
deadline cut short makes no further attempt (it ends with a ``shutdown`` last attempt); after
the deadline new invocations raise ``ManagerClosedError``.

Violations are collected (seed, step, phase, operation, exception and traceback) rather than
stopping at the first. A seed reproduces the sequence of operations; the interleavings also
depend on trio's scheduler, which is not seeded.

Size: ``TRIO_MCP_FUZZ_SEEDS`` (default 25) seeds from ``TRIO_MCP_FUZZ_SEED_BASE`` (default 0),
``TRIO_MCP_FUZZ_STEPS`` (default 200) steps each. Any violation fails. ``TRIO_MCP_FUZZ_VERBOSE=1`` prints
coverage counters (run with ``-s``).
"""

from __future__ import annotations

import math
import os
import random
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
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
    ServerPolicy,
    TrioMcpError,
)
from trio_mcp.testing import ScriptedServer, memory_server

SEEDS = int(os.environ.get("TRIO_MCP_FUZZ_SEEDS", "25"))
SEED_BASE = int(os.environ.get("TRIO_MCP_FUZZ_SEED_BASE", "0"))
STEPS = int(os.environ.get("TRIO_MCP_FUZZ_STEPS", "200"))
VERBOSE = os.environ.get("TRIO_MCP_FUZZ_VERBOSE", "") not in ("", "0")

POOL_SIZE = 6
BACKOFF = BackoffPolicy(initial=0.1, multiplier=2.0, cap=2.0, jitter=0.2)
HEALTH_INTERVAL = 1.0
PROBE_TIMEOUT = 0.5
HANDSHAKE_TIMEOUT = 1.0
CALL_TIMEOUT = 2.0

# Worst case of one invocation: every candidate (and one session-expired retry each) spends a
# handshake plus a full attempt. Far more than that means the call is stuck.
OP_BOUND = 4 * POOL_SIZE * (HANDSHAKE_TIMEOUT + CALL_TIMEOUT) + 30.0
WAIT_BOUND = 5.0  # wait_for may legitimately wait forever: give up on it after this
# Long enough for every retry window to open and every timed-out handshake, probe and call to end.
SETTLE = 2 * (
    BACKOFF.cap * (1 + BACKOFF.jitter) + HANDSHAKE_TIMEOUT + PROBE_TIMEOUT + HEALTH_INTERVAL + CALL_TIMEOUT
)
DRAIN_SLACK = 0.5  # virtual seconds an invocation may take to wind up after the drain deadline

TOOLS = ("echo", "charge", "sleep", "lookup")
FAULTS = (
    "go_down",
    "come_up",
    "hang_handshake",
    "delay_handshake",
    "fail_handshake",
    "fail_probes",
    "delay_probes",
    "hang_tool",
    "delay_tool",
    "fail_tool",
    "crash_during",
    "close_connections",
    "heal",
)
SLEEPS = (0.001, 0.01, 0.1, 0.3, 0.5, 1.0, 2.0, 5.0)
SLEEP_WEIGHTS = (3, 3, 4, 4, 3, 3, 2, 1)

PICK = "?"  # as a server name: pick one at random (or all of them)

COVERAGE: Counter[str] = Counter()
"""What the runs exercised (printed with ``TRIO_MCP_FUZZ_VERBOSE=1``)."""


def signature(exc: BaseException) -> str:
    """``ExceptionGroup[ManagerClosedError, ...]`` or ``HandshakeError``."""
    if isinstance(exc, BaseExceptionGroup):
        inner = sorted({signature(e) for e in exc.exceptions})
        return f"{type(exc).__name__}[{', '.join(inner)}]"
    return type(exc).__name__


def documented(exc: BaseException, *, bad_args: bool) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return False
    if isinstance(exc, TrioMcpError):
        return True
    return bad_args and isinstance(exc, ValueError)


def describe(snap: trio_mcp.ServerSnapshot) -> str:
    return (
        f"{snap.name}: {snap.status}/{snap.connection} at t={trio.current_time():g}, "
        f"failures={snap.consecutive_failures}, retry_at={snap.retry_at}, "
        f"last_error={snap.last_error_category}: {snap.last_error}"
    )


def text_of(result: Any) -> str | None:
    content = getattr(result, "content", None)
    if not content:
        return None
    return getattr(content[0], "text", None)


@dataclass
class Violation:
    seed: int
    step: int
    phase: str
    op: str
    kind: str
    detail: str
    trace: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.op.split("(")[0], self.kind, self.detail)

    def __str__(self) -> str:
        return (
            f"seed={self.seed} step={self.step} phase={self.phase} op={self.op}: {self.kind}: {self.detail}"
        )


@dataclass
class Fuzz:
    seed: int
    steps: int
    rng: random.Random = field(init=False)
    pool: dict[str, ScriptedServer] = field(init=False)
    configs: dict[str, trio_mcp.ServerConfig] = field(init=False)
    violations: list[Violation] = field(default_factory=list)
    step: int = -1
    phase: str = "setup"
    removals: Counter[str] = field(default_factory=Counter)
    closed: bool = False
    manager: trio_mcp.Manager | None = None

    def __post_init__(self) -> None:
        self.rng = rng = random.Random(self.seed)
        eras = ["dual"] * (POOL_SIZE // 2) + ["legacy"] * (POOL_SIZE - POOL_SIZE // 2)
        rng.shuffle(eras)
        self.pool = {f"s{i}": ScriptedServer(f"s{i}", era=era) for i, era in enumerate(eras)}
        self.configs = {}
        for name, server in self.pool.items():
            protocol = rng.choice(["auto", "auto", "legacy"]) if server.era == "dual" else "auto"
            legacy = server.era == "legacy" or protocol == "legacy"
            # ping exists only in the handshake era, server/discover only in the 2026-07-28 one.
            probe = rng.choice(["auto", "auto", "ping" if legacy else "discover", "list_tools"])
            policy = ServerPolicy(
                health_interval=HEALTH_INTERVAL,
                probe_timeout=PROBE_TIMEOUT,
                handshake_timeout=HANDSHAKE_TIMEOUT,
                call_timeout=CALL_TIMEOUT,
                backoff=BACKOFF,
                unreachable_threshold=rng.choice([1, 2, 3]),
                handshake_max_age=rng.choice([None, 3.0, 3600.0]),
                connect_on_start=rng.random() < 0.8,
                max_concurrency=rng.choice([1, 2, 16]),
                probe=probe,
                protocol=protocol,
            )
            self.configs[name] = memory_server(
                server,
                policy=policy,
                idempotent_tools={"lookup"} if rng.random() < 0.5 else set(),
                trusted=rng.random() < 0.5,
            )

    # -- bookkeeping ---------------------------------------------------------------------------

    @property
    def m(self) -> trio_mcp.Manager:
        assert self.manager is not None
        return self.manager

    def violate(self, op: str, kind: str, detail: str, exc: BaseException | None = None) -> None:
        trace = "".join(traceback.format_exception(exc)) if exc is not None else ""
        self.violations.append(Violation(self.seed, self.step, self.phase, op, kind, detail, trace))

    def registered(self) -> list[str]:
        return [snap.name for snap in self.m.servers()]

    def pick(self, registered_bias: float = 0.85) -> str:
        names = self.registered()
        if names and self.rng.random() < registered_bias:
            return self.rng.choice(names)
        return self.rng.choice(list(self.pool))

    def pick_or_all(self) -> str | None:
        return None if self.rng.random() < 0.3 else self.pick()

    def target(self, name: str | None) -> str | None:
        return self.pick_or_all() if name == PICK else name

    async def guard(
        self,
        op: str,
        fn: Callable[[], Awaitable[Any]],
        *,
        bad_args: bool = False,
        check: Callable[[Any], str | None] | None = None,
        expect: type[BaseException] | None = None,
        must_succeed: bool = False,
        context: Callable[[], str] | None = None,
        bound: float = OP_BOUND,
        may_block: bool = False,
        watch: str | None = None,
    ) -> None:
        """Run one public call under a virtual-time bound and check invariant 1 on it."""
        removals = self.removals[watch] if watch is not None else 0
        was_closed = self.closed
        outcome = "ok"
        with trio.move_on_after(bound) as scope:
            try:
                result = await fn()
            except trio.Cancelled:
                raise
            except BaseException as exc:
                outcome = signature(exc)
                if isinstance(exc, BaseExceptionGroup):
                    cancelled, rest = exc.split(trio.Cancelled)
                    if rest is None:
                        raise
                    self.violate(op, "undocumented exception", signature(rest), rest)
                    if cancelled is not None:
                        raise cancelled from None
                elif not documented(exc, bad_args=bad_args):
                    self.violate(op, "undocumented exception", signature(exc), exc)
                elif expect is not None and not isinstance(exc, expect):
                    self.violate(op, f"expected {expect.__name__}", signature(exc), exc)
                elif must_succeed:
                    detail = f"{signature(exc)}: {exc}"
                    if context is not None:
                        detail += f" [{context()}]"
                    self.violate(op, "failed", detail, exc)
            else:
                if expect is not None:
                    self.violate(op, f"expected {expect.__name__}", "returned normally")
                elif check is not None:
                    problem = check(result)
                    if problem is not None:
                        self.violate(op, "wrong result", problem)
        if scope.cancelled_caught:
            outcome = "bound"
            gone = (watch is not None and self.removals[watch] != removals) or self.closed != was_closed
            if not may_block or gone:
                reason = "its server was removed or the manager closed while it waited" if gone else ""
                self.violate(op, "never returned", f"still running after {bound:g} virtual s {reason}")
        COVERAGE[f"{op.split('(')[0]} -> {outcome}"] += 1

    # -- operations ----------------------------------------------------------------------------

    async def op_add(self) -> None:
        name = self.rng.choice(list(self.pool))
        COVERAGE["add " + ("taken" if name in self.registered() else "free")] += 1
        await self.guard(f"add_server({name})", partial(self.m.add_server, self.configs[name]))

    async def op_remove(self, name: str | None = None) -> None:
        name = name or self.pick()
        if name in self.registered():
            snap = self.m.server(name)
            COVERAGE[f"remove while {snap.connection}"] += 1
            if sum(self.pool[name].in_flight.values()):
                COVERAGE["remove with a tool executing"] += 1
            self.removals[name] += 1
        await self.guard(f"remove_server({name})", partial(self.m.remove_server, name))

    async def op_invalidate(self, name: str | None = None) -> None:
        name = name or self.pick()
        manager = self.m

        async def call() -> bool:
            return manager.invalidate(name)

        await self.guard(f"invalidate({name})", call)

    async def op_refresh(self, name: str | None = None) -> None:
        name = name or self.pick()
        await self.guard(f"refresh({name})", partial(self.m.refresh, name), watch=name)

    async def op_connect(self, name: str | None = PICK) -> None:
        name = self.target(name)
        await self.guard(f"connect({name})", partial(self.m.connect, name), watch=name)

    async def op_initialize(self, name: str | None = PICK) -> None:
        name = self.target(name)
        await self.guard(f"initialize({name})", partial(self.m.initialize, name), watch=name)

    async def op_health_check(self, name: str | None = PICK) -> None:
        name = self.target(name)
        await self.guard(f"health_check({name})", partial(self.m.health_check, name), watch=name)

    async def op_catalog(self) -> None:
        await self.guard("catalog(tools)", partial(self.m.catalog, "tools"))

    async def op_read_resource(self) -> None:
        preferred = self.rng.sample(list(self.pool), self.rng.randint(0, 2))

        def check(result: Any) -> str | None:
            got = getattr(result.contents[0], "text", "")
            return None if got.startswith("readme from ") else f"read_resource returned {got!r}"

        await self.guard(
            f"read_resource(preferred={preferred})",
            partial(self.m.read_resource, "docs://readme", preferred=preferred),
            check=check,
        )

    def invocation(self, tool: str | None = None, preferred: list[str] | None = None) -> tuple[str, Any]:
        """A random tool invocation: its label and a zero-argument coroutine function."""
        rng = self.rng
        tool = tool or rng.choice(TOOLS)
        if preferred is None:
            names = self.registered() or list(self.pool)
            preferred = rng.sample(names, rng.randint(0, min(3, len(names))))
            if rng.random() < 0.05:
                preferred.append(rng.choice(list(self.pool)))  # maybe not registered
        failover = rng.choice(["safe", "always", "never"])
        options: dict[str, Any] = {"preferred": preferred, "failover": failover}
        if rng.random() < 0.3:
            options["timeout"] = rng.choice([0.5, 2.0, 5.0, 20.0])
        if rng.random() < 0.3:
            options["attempt_timeout"] = rng.choice([0.2, 1.0, 3.0])
        n = rng.randint(0, 999)
        arguments, expected = {
            "echo": ({"text": f"t{n}"}, f"t{n}"),
            "charge": ({"amount": n}, f"charged {n}"),
            "sleep": ({"seconds": rng.choice([0.1, 0.5, 1.5, 3.0])}, None),
            "lookup": ({"key": f"k{n}"}, None),
        }[tool]
        if tool == "sleep":
            expected = f"slept {arguments['seconds']:g}"
        use_invoke = rng.random() < 0.5
        manager = self.m

        async def call() -> Any:
            if use_invoke:
                return await manager.invoke("tools/call", tool, arguments, **options)
            return await manager.call_tool(tool, arguments, **options)

        def check(outcome: Any) -> str | None:
            result = outcome.result if use_invoke else outcome
            if result.is_error:
                return None
            got = text_of(result)
            if tool == "lookup":
                if use_invoke:
                    want = f"{outcome.server}:{arguments['key']}"
                    return None if got == want else f"lookup answered {got!r}, expected {want!r}"
                ok = got is not None and got.endswith(f":{arguments['key']}")
                return None if ok else f"lookup answered {got!r}"
            return None if got == expected else f"{tool} answered {got!r}, expected {expected!r}"

        label = f"{'invoke' if use_invoke else 'call_tool'}({tool}, {options})"
        return label, partial(self.guard, label, call, check=check)

    async def op_invoke(self) -> None:
        _, run = self.invocation()
        await run()

    async def op_bad_args(self) -> None:
        manager = self.m
        choice = self.rng.randrange(4)
        if choice == 0:
            fn = partial(manager.call_tool, "echo", {"text": "x"}, failover="sometimes")
        elif choice == 1:
            fn = partial(manager.invoke, "tools/call", "echo", {"text": "x"}, timeout=-1)
        elif choice == 2:
            fn = partial(manager.catalog, "gadgets")
        else:
            fn = partial(manager.add_server, "not a config")
        await self.guard(f"bad_args#{choice}", fn, bad_args=True, expect=ValueError)

    async def op_snapshot(self) -> None:
        """servers() / server(name): a registered server's supervisor is alive."""
        manager = self.m

        async def read() -> list[tuple[trio_mcp.ServerSnapshot, trio_mcp.ServerSnapshot]]:
            return [(snap, manager.server(snap.name)) for snap in manager.servers()]

        def check(pairs: list[tuple[trio_mcp.ServerSnapshot, trio_mcp.ServerSnapshot]]) -> str | None:
            if any(a.name != b.name for a, b in pairs):
                return "server(name) answered for another server"
            dead = [a.name for a, b in pairs if ConnectionState.CLOSED in (a.connection, b.connection)]
            return f"registered servers with a closed supervisor: {dead}" if dead else None

        await self.guard("servers()", read, check=check)

    async def op_wait_for(self, name: str | None = None) -> None:
        name = name or self.pick()
        want = self.rng.choice(["ready", "healthy", "backoff"])
        predicates: dict[str, Callable[[trio_mcp.ServerSnapshot], bool]] = {
            "ready": lambda s: s.connection is ConnectionState.READY,
            "healthy": lambda s: s.status is trio_mcp.ServerStatus.HEALTHY,
            "backoff": lambda s: s.connection is ConnectionState.BACKOFF,
        }
        await self.guard(
            f"wait_for({name}, {want})",
            partial(self.m.wait_for, name, predicates[want]),
            bound=WAIT_BOUND,
            may_block=True,
            watch=name,
        )

    def op_fault(self, name: str | None = None, fault: str | None = None) -> None:
        rng = self.rng
        server = self.pool[name or self.pick(0.9)]
        fault = fault or rng.choice(FAULTS)
        COVERAGE[f"fault {fault}"] += 1
        tool = rng.choice(TOOLS)
        if fault == "delay_handshake":
            server.delay_handshake(rng.choice([0.3, 0.8, 1.5]))
        elif fault == "fail_handshake":
            server.fail_handshake()
        elif fault == "fail_probes":
            server.fail_probes()
        elif fault == "delay_probes":
            server.delay_probes(rng.choice([0.2, 0.7]))
        elif fault == "hang_tool":
            server.hang_tool(tool)
        elif fault == "delay_tool":
            server.delay_tool(tool, rng.choice([0.3, 1.0, 2.5]))
        elif fault == "fail_tool":
            server.fail_tool(tool)
        elif fault == "crash_during":
            server.crash_during(tool)
        else:  # go_down, come_up, hang_handshake, close_connections, heal
            getattr(server, fault)()

    async def op_fault_async(self) -> None:
        self.op_fault()

    async def op_sleep(self) -> None:
        await trio.sleep(self.rng.choices(SLEEPS, SLEEP_WEIGHTS)[0])

    async def op_race(self, nursery: trio.Nursery) -> None:
        """An operation on a server overlapped by a lifecycle change of that server."""
        rng = self.rng
        names = self.registered()
        if not names:
            return
        name = rng.choice(names)
        if rng.random() < 0.5:  # widen the window the racer can land in
            self.op_fault(
                name, rng.choice(["delay_handshake", "delay_probes", "delay_tool", "hang_handshake"])
            )
        victim = rng.choice(
            ["call", "call", "sleep", "refresh", "connect", "initialize", "health", "wait", "catalog"]
        )
        if victim in ("call", "sleep"):
            _, run = self.invocation("sleep" if victim == "sleep" else rng.choice(TOOLS), preferred=[name])
            nursery.start_soon(run)
        else:
            ops: dict[str, Callable[[], Awaitable[None]]] = {
                "refresh": partial(self.op_refresh, name),
                "connect": partial(self.op_connect, name),
                "initialize": partial(self.op_initialize, name),
                "health": partial(self.op_health_check, name),
                "wait": partial(self.op_wait_for, name),
                "catalog": self.op_catalog,
            }
            nursery.start_soon(ops[victim])
        delay = rng.choice([0.0, 0.0, 0.001, 0.05, 0.3, 0.6, 1.2])
        if delay:
            await trio.sleep(delay)
        else:
            await trio.lowlevel.checkpoint()
        racer = rng.choice(["remove", "remove", "remove_readd", "invalidate", "refresh", "close", "go_down"])
        COVERAGE[f"race {victim} x {racer}"] += 1
        if racer in ("remove", "remove_readd"):
            await self.op_remove(name)
            if racer == "remove_readd":
                await self.guard(f"add_server({name})", partial(self.m.add_server, self.configs[name]))
        elif racer == "invalidate":
            await self.op_invalidate(name)
        elif racer == "refresh":
            nursery.start_soon(self.op_refresh, name)
        else:
            self.op_fault(name, "close_connections" if racer == "close" else "go_down")

    # -- the run -------------------------------------------------------------------------------

    async def run_step(self, nursery: trio.Nursery) -> None:
        rng = self.rng
        ops: dict[str, tuple[int, Callable[[], Awaitable[None]]]] = {
            "sleep": (14, self.op_sleep),
            "fault": (14, self.op_fault_async),
            "invoke": (18, self.op_invoke),
            "add": (6, self.op_add),
            "remove": (5, self.op_remove),
            "invalidate": (4, self.op_invalidate),
            "refresh": (5, self.op_refresh),
            "connect": (3, self.op_connect),
            "initialize": (3, self.op_initialize),
            "health_check": (4, self.op_health_check),
            "catalog": (3, self.op_catalog),
            "read_resource": (2, self.op_read_resource),
            "snapshot": (3, self.op_snapshot),
            "wait_for": (2, self.op_wait_for),
            "bad_args": (1, self.op_bad_args),
            "race": (10, partial(self.op_race, nursery)),
        }
        kind = rng.choices(list(ops), [w for w, _ in ops.values()])[0]
        fn = ops[kind][1]
        if kind in ("sleep", "fault", "race") or rng.random() < 0.25:
            await fn()
        else:
            nursery.start_soon(fn)  # overlaps with whatever comes next
        if rng.random() < 0.5:
            await trio.lowlevel.checkpoint()

    async def settle_and_check(self) -> None:
        """Invariant 2: heal everything, let the retry windows pass, then use every server."""
        self.phase = "final check"
        for server in self.pool.values():
            server.heal()
        await trio.sleep(SETTLE)
        for name in self.registered():
            snap = self.m.server(name)
            if snap.connection is ConnectionState.CLOSED:
                self.violate(f"server({name})", "supervisor dead", "a registered server's state is closed")
                continue
            connected: list[trio_mcp.ServerSnapshot] = []

            async def connect(name: str = name, connected: list[Any] = connected) -> Any:
                connected.extend(await self.m.connect(name))
                return connected

            def context(connected: list[Any] = connected) -> str:
                return f"connect() answered {describe(connected[0])}" if connected else "connect() failed"

            await self.guard(f"final connect({name})", connect, must_succeed=True)

            def check(result: Any, name: str = name) -> str | None:
                if result.is_error or text_of(result) != f"final {name}":
                    return f"final echo answered {result!r}"
                return None

            await self.guard(
                f"final call_tool({name})",
                partial(
                    self.m.call_tool,
                    "echo",
                    {"text": f"final {name}"},
                    preferred=[name],
                    failover="never",
                ),
                check=check,
                must_succeed=True,
                context=context,
            )

    async def drain_phase(self) -> None:
        """Invocations in flight at drain() end by its deadline; new ones are refused."""
        rng = self.rng
        self.phase = "drain"
        manager = self.m
        ended: dict[str, tuple[float, BaseException | None, tuple[trio_mcp.Attempt, ...]]] = {}
        names = self.registered()
        for name in rng.sample(names, min(len(names), 2)):
            self.op_fault(name, rng.choice(["hang_tool", "delay_tool", "delay_handshake", "crash_during"]))

        async def in_flight(label: str, tool: str, arguments: dict[str, Any], failover: Any) -> None:
            try:
                outcome = await manager.invoke("tools/call", tool, arguments, failover=failover)
            except trio.Cancelled:
                raise
            except BaseException as exc:
                ended[label] = (trio.current_time(), exc, getattr(exc, "attempts", ()))
            else:
                ended[label] = (trio.current_time(), None, outcome.attempts)

        grace = rng.choice([0.0, 0.5, 1.0, 3.0])
        drain_at = math.inf
        labels = []
        async with trio.open_nursery() as nursery:
            for i in range(rng.randint(1, 5)):
                tool = rng.choice(TOOLS)
                arguments = {
                    "echo": {"text": "x"},
                    "charge": {"amount": i},
                    "sleep": {"seconds": rng.choice([0.5, 2.0, 10.0])},
                    "lookup": {"key": "k"},
                }[tool]
                failover = rng.choice(["safe", "always", "never"])
                label = f"invoke#{i}({tool}, failover={failover}) across drain"
                labels.append(label)
                nursery.start_soon(in_flight, label, tool, arguments, failover)
            await trio.sleep(rng.choice([0.001, 0.2, 0.9]))
            drain_at = trio.current_time() + grace
            manager.drain(grace)
            COVERAGE[f"drain grace={grace:g}"] += 1
            nursery.cancel_scope.deadline = drain_at + OP_BOUND
        for label in labels:
            if label not in ended:
                self.violate(
                    label, "outlived drain", f"still running {OP_BOUND:g} virtual s after the deadline"
                )
                continue
            at, exc, attempts = ended[label]
            outcome = signature(exc) if exc is not None else "ok"
            categories = [a.category for a in attempts]
            after = categories[categories.index("shutdown") + 1 :] if "shutdown" in categories else []
            if exc is not None and not documented(exc, bad_args=False):
                self.violate(label, "undocumented exception", outcome, exc)
            elif after:
                # The drain deadline cut an attempt short, and the invocation went on to another.
                servers = [f"{a.server}@{a.started_at:g}" for a in attempts]
                detail = f"new attempt after the drain deadline ({outcome}; attempts {servers} {categories})"
                self.violate(label, "outlived drain", detail, exc)
            elif at > drain_at + DRAIN_SLACK:
                late = at - drain_at
                self.violate(label, "outlived drain", f"ended ({outcome}) after the drain deadline", exc)
                COVERAGE[f"drain: ended {late:.1f}s late"] += 1
            elif isinstance(exc, InvocationFailedError) and at >= drain_at:
                last = exc.attempts[-1].category if exc.attempts else None
                if last != "shutdown":
                    self.violate(
                        label, "drain", f"failed at the drain deadline with last category {last!r}", exc
                    )
        # After the deadline new invocations are refused; every other call still raises only
        # documented errors.
        await trio.sleep_until(max(drain_at, trio.current_time()))
        await self.guard(
            "call_tool after drain",
            partial(manager.call_tool, "echo", {"text": "x"}),
            expect=ManagerClosedError,
        )
        await self.run_every_op(rng.choice(list(self.pool)))

    async def run_every_op(self, name: str) -> None:
        manager = self.m
        calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("call_tool", partial(manager.call_tool, "echo", {"text": "x"}, preferred=[name])),
            ("invoke", partial(manager.invoke, "tools/call", "lookup", {"key": "k"})),
            ("read_resource", partial(manager.read_resource, "docs://readme")),
            ("catalog", partial(manager.catalog, "tools")),
            ("health_check(None)", partial(manager.health_check)),
            (f"health_check({name})", partial(manager.health_check, name)),
            ("connect(None)", partial(manager.connect)),
            ("initialize(None)", partial(manager.initialize)),
            (f"refresh({name})", partial(manager.refresh, name)),
            (f"add_server({name})", partial(manager.add_server, self.configs[name])),
        ]

        async def invalidate() -> bool:
            return manager.invalidate(name)

        calls.append((f"invalidate({name})", invalidate))
        self.rng.shuffle(calls)
        for label, fn in calls:
            await self.guard(f"{label} [{self.phase}]", fn)

    async def leave_with_calls_in_flight(self, outer: trio.Nursery) -> None:
        """Start calls that are still running when the manager closes (in a nursery outside it)."""
        rng = self.rng
        for _ in range(rng.randint(1, 4)):
            _, run = self.invocation(rng.choice(["sleep", "sleep", "echo", "lookup"]))
            outer.start_soon(run)
        names = self.registered()
        if names:
            name = rng.choice(names)
            self.op_fault(name, rng.choice(["delay_handshake", "hang_handshake", "delay_probes"]))
            for op in rng.sample(
                [self.op_refresh, self.op_connect, self.op_health_check, self.op_wait_for], 2
            ):
                outer.start_soon(op, name)
        await trio.sleep(rng.choice([0.001, 0.05, 0.4]))
        COVERAGE["leave with calls in flight"] += 1

    async def run(self) -> None:
        rng = self.rng
        initial = [self.configs[n] for n in self.pool if rng.random() < 0.75]
        do_drain = rng.random() < 0.5
        harness_error: Exception | None = None
        async with trio.open_nursery() as outer:  # holds calls that outlive the manager
            try:
                async with trio_mcp.open_manager(initial, rng=random.Random(self.seed)) as manager:
                    self.manager = manager
                    try:
                        self.phase = "steps"
                        async with trio.open_nursery() as nursery:
                            for step in range(self.steps):
                                self.step = step
                                await self.run_step(nursery)
                        self.step = self.steps
                        await self.settle_and_check()
                        if do_drain:
                            await self.drain_phase()
                        self.phase = "leaving"
                        await self.leave_with_calls_in_flight(outer)
                    except Exception as exc:  # a bug in this test, not in the library
                        harness_error = exc
                    self.closed = True
            except BaseException as exc:
                self.closed = True
                self.violate("leaving open_manager", "raised", signature(exc), exc)
                if not isinstance(exc, Exception):
                    raise
        if harness_error is not None:
            raise harness_error
        self.phase = "closed"
        await self.run_every_op(rng.choice(list(self.pool)))
        self.phase = "end"
        for server in self.pool.values():
            if server.live_connections:
                self.violate(
                    f"{server.name}.live_connections", "leak", f"{server.live_connections} live after the end"
                )


def report(violations: list[Violation]) -> str:
    distinct: dict[tuple[str, str, str], list[Violation]] = {}
    for v in violations:
        distinct.setdefault(v.key, []).append(v)
    lines = [f"{len(violations)} violation(s), {len(distinct)} distinct:"]
    for group in distinct.values():
        first = group[0]
        lines.append(f"- x{len(group)} {first}")
        if first.trace:
            trace = first.trace.strip().splitlines()
            lines.extend("      " + line for line in trace[-25:])
    return "\n".join(lines)


@pytest.mark.parametrize("seed", range(SEED_BASE, SEED_BASE + SEEDS), ids=lambda s: f"seed={s}")
async def test_lifecycle_fuzz(seed: int, autojump_clock: trio.testing.MockClock) -> None:
    fuzz = Fuzz(seed, STEPS)
    await fuzz.run()
    if VERBOSE:
        print(f"\nseed {seed}: virtual time {trio.current_time():.1f}s")
        for key, count in sorted(COVERAGE.items()):
            print(f"  {count:6d} {key}")
    if not fuzz.violations:
        return
    pytest.fail(report(fuzz.violations), pytrace=False)
