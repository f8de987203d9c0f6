"""F2: streamable HTTP through fault-injecting TCP proxies, checked with :class:`History`.

A fleet of real streamable-HTTP servers (the demo server, ``trio_mcp.demo_server``, each in its
own process, with a ledger of the tool calls it starts, keyed by invocation id: this file run as
a script) is registered with the manager through one :class:`~trio_mcp.testing.FaultProxy` each.
A driver invokes at a steady rate (``rate`` a second) for ``duration`` seconds: ``charge`` (a side
effect, not idempotent) and ``whoami`` (read-only, registered as idempotent), each preferring two
random servers and carrying its invocation id. Meanwhile a chaos task switches seeded faults on
random proxies (latency, black hole, reset after N bytes, slow close, one-byte fragments,
truncation; each in a seeded direction) and heals them after a seeded while.

Afterwards every proxy is healed and settles (the connections its faults broke are gone), every
server must be healthy again within its retry window plus a handshake (N6), the ledger is checked
against the history (N1 to N4), and the test process must be back to its baseline (N5): no
socket, task or server process left. Real processes, sockets and clock.

Run as a script, this file is one server::

    python tests/chaos/_http_faults.py --name h0 --ledger /tmp/ledger.txt   # prints its port
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio
from _kills import LedgerFile

import trio_mcp
from trio_mcp.testing import Baseline, FaultProxy, History
from trio_mcp.testing.history import server_info_name
from trio_mcp.testing.proxy import DIRECTIONS, ProxyFault

SERVER_SCRIPT = Path(__file__)
FAULT_KINDS = ("latency", "blackhole", "reset", "slow_close", "fragment", "truncate")
TOOLS = ("charge", "whoami")
IDEMPOTENT = {"charge": False, "whoami": True}
TIMEOUT = 8.0
"""Each invocation's overall deadline (N4)."""
ATTEMPT_TIMEOUT = 3.0
SETTLE_GRACE = 5.0
"""How long the proxies are given to settle once healed: a slow close under way ends, and so does
a black-holed connection whose request its client gives up. (An HTTP request the manager
abandoned at its deadline may stay open far longer, until the HTTP read timeout: it holds its
connection, but no server's recovery waits on it. The table counts those left.)"""


@dataclass(frozen=True, kw_only=True)
class HttpFaultConfig:
    servers: int = 10
    rate: float = 20.0
    """Invocations started per second."""
    duration: float = 60.0
    """Seconds of load and faults."""
    faults_per_second: float = 1.5
    """Faults switched on per second (each on a proxy without one)."""
    fault_duration: tuple[float, float] = (0.5, 4.0)
    seed: int = 1


@dataclass(kw_only=True)
class HttpFaultReport:
    config: HttpFaultConfig
    history: History
    faults: Counter[str]
    """Faults switched on, by kind."""
    hits: Counter[str]
    """Connections each kind of fault acted on (the proxies' count)."""
    connections: int
    """Connections the proxies relayed."""
    categories: Counter[str] = field(default_factory=Counter)
    """Failed attempts by category."""
    settle_seconds: float = 0.0
    broken_left: int = 0
    """Connections still broken by a black hole when recovery was checked (abandoned requests
    their client holds open)."""
    recovery_seconds: float = 0.0
    real_seconds: float = 0.0

    def table(self) -> str:
        c = self.config
        top = ", ".join(f"{k} {v}" for k, v in self.categories.most_common(8))
        return self.history.table(
            f"F2 streamable HTTP through fault-injecting proxies (seed {c.seed}): {c.servers} servers, "
            f"{c.rate:g} invocations/s for {c.duration:g} s",
            faults=self.faults,
            notes={
                "connections hit": ", ".join(f"{k} {v}" for k, v in sorted(self.hits.items())) or "none",
                "connections relayed": self.connections,
                "failed attempts": top or "none",
                "after healing": f"{self.settle_seconds:.2f} s to settle, "
                f"{self.broken_left} broken connection(s) left open by their client",
                "slowest recovery": f"{self.recovery_seconds:.2f} s after that",
                "duration": f"{self.real_seconds:.1f} real s",
            },
        )


def _draw_fault(rng: random.Random) -> tuple[str, ProxyFault]:
    """A fault kind and the :class:`ProxyFault` to set, drawn from ``rng``."""
    kind = rng.choice(FAULT_KINDS)
    direction = rng.choice(DIRECTIONS)
    match kind:
        case "latency":
            fault = ProxyFault(kind="latency", direction=direction, seconds=rng.uniform(0.05, 1.5))
        case "blackhole":
            fault = ProxyFault(kind="blackhole", direction=direction)
        case "reset" | "truncate":
            # Offsets within a request or an answer (headers and body: a few hundred bytes each).
            fault = ProxyFault(kind=kind, direction=direction, nbytes=rng.randrange(0, 1200))
        case "slow_close":
            fault = ProxyFault(kind="slow_close", seconds=rng.uniform(0.2, 3.0))
        case _:
            fault = ProxyFault(kind="fragment", direction=direction, nbytes=1)
    return kind, fault


def author(result: Any) -> str | None:
    """The server a result came from: its ``serverInfo`` stamp, else the first word of its text
    (``whoami`` answers the server's name, ``charge`` ``<name> charged <amount>``)."""
    named = server_info_name(result)
    if named is not None:
        return named
    text = result.content[0].text if result.content else ""
    return text.split(" ", 1)[0] or None


async def _start_server(
    nursery: trio.Nursery, name: str, ledger: Path, log: Path
) -> tuple[trio.Process, int]:
    """Start server ``name`` (owned by ``nursery``: cancelling it terminates the process); returns
    the process and the port it listens on."""
    # Not measured by coverage: ten traced servers would starve the manager of CPU, and N4 is
    # about the manager's timing, not the tracer's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    command = [sys.executable, str(SERVER_SCRIPT), "--name", name, "--ledger", str(ledger)]
    with log.open("wb") as err:
        proc: trio.Process = await nursery.start(
            partial(trio.run_process, command, stdout=subprocess.PIPE, stderr=err, env=env, check=False)
        )
    stdout = proc.stdout
    assert stdout is not None
    line = b""
    with trio.fail_after(60):
        while not line.endswith(b"\n"):
            chunk = await stdout.receive_some(100)
            if not chunk:
                raise AssertionError(f"server {name} exited before listening (see {log})")
            line += chunk
    nursery.start_soon(_drain, stdout)
    return proc, int(line)


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    async with stream:
        while await stream.receive_some(65536):
            pass


async def run_http_faults(config: HttpFaultConfig, workdir: Path) -> HttpFaultReport:
    """Run F2 (real clock); files go to ``workdir``."""
    real_start = time.perf_counter()
    ledger = LedgerFile(workdir / "ledger.txt")
    names = [f"h{i}" for i in range(config.servers)]
    history = History()
    faults: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    policy = trio_mcp.ServerPolicy(
        health_interval=1.0,
        probe_timeout=2.0,
        handshake_timeout=5.0,
        call_timeout=ATTEMPT_TIMEOUT,
        backoff=trio_mcp.BackoffPolicy(initial=0.1, multiplier=2.0, cap=1.0, jitter=0.2),
    )
    baseline = Baseline.capture()
    settle_seconds = recovery_seconds = 0.0
    broken = 0

    def count_failures(event: object) -> None:
        if isinstance(event, trio_mcp.InvocationFinished):
            for attempt in event.attempts:
                if not attempt.success:
                    categories[str(attempt.category)] += 1

    async with trio.open_nursery() as servers_nursery:
        started = []
        async with trio.open_nursery() as starting:

            async def start(name: str) -> None:
                started.append(
                    (name, await _start_server(servers_nursery, name, ledger.path, workdir / f"{name}.log"))
                )

            for name in names:
                starting.start_soon(start, name)
        ports = {name: port for name, (_, port) in started}
        async with trio.open_nursery() as proxies_nursery:
            proxies: dict[str, FaultProxy] = {}
            for name in names:
                proxies[name] = await proxies_nursery.start(FaultProxy(ports[name]).serve)
            configs = [
                trio_mcp.ServerConfig(
                    name=name,
                    transport=trio_mcp.HttpTransport(url=proxies[name].url("/mcp")),
                    policy=policy,
                    idempotent_tools=frozenset({"whoami"}),
                )
                for name in names
            ]
            async with trio_mcp.open_manager(configs, rng=random.Random(config.seed)) as manager:
                remove = manager.stream.add_listener(count_failures)
                try:
                    with history.watch(manager):
                        with trio.fail_after(60):
                            for name in names:
                                await manager.wait_for(name, lambda s: s.session.active)
                        await _load(config, manager, proxies, history, faults)
                        healed = trio.current_time()
                        for proxy in proxies.values():
                            proxy.heal()
                        with trio.move_on_after(SETTLE_GRACE):
                            for proxy in proxies.values():
                                await proxy.wait_settled()
                        settle_seconds = trio.current_time() - healed
                        broken = sum(p.statistics().broken for p in proxies.values())
                        took = await history.check_recovery(manager)
                        recovery_seconds = max(took.values(), default=0.0)
                finally:
                    remove()
            proxies_nursery.cancel_scope.cancel()
        servers_nursery.cancel_scope.cancel()
    for server, executions in ledger.executions().items():
        history.load_ledger(server, executions)
    await history.check_baseline(baseline, within=10.0)
    return HttpFaultReport(
        config=config,
        history=history,
        faults=faults,
        hits=sum((Counter(p.statistics().injected) for p in proxies.values()), Counter()),
        connections=sum(p.statistics().connections for p in proxies.values()),
        categories=categories,
        settle_seconds=settle_seconds,
        broken_left=broken,
        recovery_seconds=recovery_seconds,
        real_seconds=time.perf_counter() - real_start,
    )


async def _load(
    config: HttpFaultConfig,
    manager: trio_mcp.Manager,
    proxies: dict[str, FaultProxy],
    history: History,
    faults: Counter[str],
) -> None:
    """Invoke at ``config.rate`` for ``config.duration`` seconds while faults come and go; returns
    once every invocation has its outcome and every fault has been cleared."""
    names = list(proxies)
    load_rng = random.Random(config.seed)
    chaos_rng = random.Random(config.seed * 7919 + 1)
    start = trio.current_time()
    end = start + config.duration
    faulty: set[str] = set()

    async def hold(name: str, seconds: float) -> None:
        try:
            await trio.sleep(seconds)
        finally:
            proxies[name].heal()
            faulty.discard(name)

    async with trio.open_nursery() as chaos:

        async def switch_faults() -> None:
            while True:
                await trio.sleep(chaos_rng.expovariate(config.faults_per_second))
                if trio.current_time() >= end:
                    return
                idle = [name for name in names if name not in faulty]
                if not idle:
                    continue
                name = chaos_rng.choice(idle)
                kind, fault = _draw_fault(chaos_rng)
                faulty.add(name)
                proxies[name].set_fault(fault)
                faults[kind] += 1
                chaos.start_soon(hold, name, chaos_rng.uniform(*config.fault_duration))

        chaos.start_soon(switch_faults)
        async with trio.open_nursery() as calls:
            for number in range(round(config.rate * config.duration)):
                await trio.sleep_until(start + number / config.rate)
                tool = load_rng.choice(TOOLS)
                first, second = load_rng.sample(names, 2)
                arguments: dict[str, Any] = {"amount": number} if tool == "charge" else {}
                calls.start_soon(
                    partial(
                        history.call,
                        manager,
                        tool,
                        arguments,
                        idempotent=IDEMPOTENT[tool],
                        timeout=TIMEOUT,
                        attempt_timeout=ATTEMPT_TIMEOUT,
                        preferred=[first, second],
                        author=author,
                        invocation_id=f"http-{number}",
                    )
                )
        chaos.cancel_scope.cancel()  # the faults under way are healed as their holds end


# -- the server ---------------------------------------------------------------------------------


def _ledger_middleware(name: str, ledger: int) -> Any:
    """Record every ``tools/call`` that carries an ``invocation_id`` argument, as it starts, in
    the ledger (the line format of ``ledger_server.py``, one ``write`` to a file opened with
    ``O_APPEND``: whole lines, whatever happens to the process)."""

    async def middleware(ctx: Any, call_next: Any) -> Any:
        if ctx.method == "tools/call":
            params = ctx.params or {}
            invocation_id = (params.get("arguments") or {}).get("invocation_id")
            if isinstance(invocation_id, str):
                line = f"{name} {os.getpid()} start {params.get('name')} {invocation_id}\n"
                os.write(ledger, line.encode())
        return await call_next(ctx)

    return middleware


def serve_main() -> None:
    """One server: the demo server over streamable HTTP on a free port (printed on stdout), with
    its ledger."""
    import logging

    from trio_mcp.demo_server import build_server, serve_http

    parser = argparse.ArgumentParser(description="A demo server over HTTP with a ledger of its tool calls.")
    parser.add_argument("--name", required=True)
    parser.add_argument("--ledger", required=True)
    args = parser.parse_args()
    server = build_server(args.name)
    logging.getLogger().setLevel(logging.WARNING)  # the SDK logs every request at INFO
    ledger = os.open(args.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    server._lowlevel_server.middleware.insert(0, _ledger_middleware(args.name, ledger))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(partial(serve_http, server, 0))
            print(binds[0].rsplit(":", 1)[1], flush=True)

    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    serve_main()
