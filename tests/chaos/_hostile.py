"""F4: hostile servers, each sending one message it should not, against one manager.

Each case registers one hostile server (``_hostile_server.py``, a real process: stdio, or its own
HTTP server), parks a ``hold`` call on it, and calls ``trigger``: the server answers the
``hold`` and then misbehaves (a 100 MiB line with no newline, a 100 MiB HTTP body, plain or
gzip-compressed, a never-ending SSE event, 100 MiB of stderr, bytes that are not UTF-8, an
answer for another request's id). Measured for each case:

- the outcome of the ``trigger`` call (its failure category, or ``ok``) and, for the messages
  over the bound, that the connection was closed as a ``protocol_error``;
- whether the ``hold`` call, answered just before the bad message, got its answer;
- how much the manager's memory grew while the message arrived: the ``tracemalloc`` peak
  above what was traced when it started, and the growth of the process's peak RSS
  (``VmHWM``, reset through ``/proc/self/clear_refs``);
- the CPU time of this process from the trigger to its answer (the healthy server's caller
  included: for a trigger that times out, that is most of it);
- the latency of a healthy in-memory server, sampled all along by a caller of its own: the
  median of the second before the trigger against the median from the trigger until a second
  after it (or until the trigger's answer, if later).

Real processes, sockets and clock; Linux (``/proc``).
"""

from __future__ import annotations

import gc
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from mcp.server.mcpserver import MCPServer

import trio_mcp
from trio_mcp import InvocationFailedError, ServerSnapshot
from trio_mcp._config import DEFAULT_MAX_MESSAGE_BYTES
from trio_mcp._transports.base import size_text
from trio_mcp.testing import memory_server

SERVER_SCRIPT = Path(__file__).with_name("_hostile_server.py")
MIB = 1024 * 1024
HOSTILE_SIZE = 100 * MIB
BOUND = DEFAULT_MAX_MESSAGE_BYTES
HEALTHY = "healthy"
BEFORE_SECONDS = 1.0
DURING_SECONDS = 1.0
"""The latency compared with the second before: from the trigger until this long after it
(or until the trigger is answered, if later)."""
SAMPLE_INTERVAL = 0.002
ATTEMPT_TIMEOUT = 3.0

POLICY = trio_mcp.ServerPolicy(
    protocol="legacy",
    handshake_timeout=15.0,
    call_timeout=20.0,
    health_interval=30.0,
    backoff=trio_mcp.BackoffPolicy(initial=0.2, multiplier=2.0, cap=2.0, jitter=0.1),
)


@dataclass(frozen=True)
class Case:
    transport: str
    behaviour: str
    expect: str
    """The trigger's outcome: ``ok`` or a failure category."""
    what: str


CASES = (
    Case("stdio", "huge_line", "protocol_error", "100 MiB stdout line, no newline"),
    Case("stdio", "not_utf8", "protocol_error", "stdout line not UTF-8"),
    Case("stdio", "stderr_flood", "ok", "100 MiB stderr, no newline"),
    Case("stdio", "wrong_id", "ok", "answer for another id, then own"),
    Case("stdio", "wrong_id_only", "timeout", "answer for another id only"),
    Case("http", "huge_json", "protocol_error", "100 MiB JSON body (chunked)"),
    Case("http", "gzip_bomb", "protocol_error", "100 MiB JSON body, gzip on the wire"),
    Case("http", "endless_sse", "protocol_error", "never-ending SSE event (100 MiB)"),
    Case("http", "sse_not_utf8", "protocol_error", "SSE event not UTF-8"),
    Case("http", "wrong_id", "timeout", "JSON answer for another id"),
)


@dataclass(kw_only=True)
class Row:
    case: Case
    outcome: str
    """``ok`` or the trigger's failure category."""
    message: str
    closed_as: str | None
    """The category the connection was closed with (``None``: it was not)."""
    earlier_delivered: bool
    traced_growth: int
    rss_growth: int | None
    p50_before: float
    p50_during: float
    samples_before: int
    samples_during: int
    before: list[float] = field(repr=False)
    during: list[float] = field(repr=False)
    seconds: float
    cpu_seconds: float
    """CPU time of this process from the trigger to its answer."""

    @property
    def ratio(self) -> float:
        return self.p50_during / self.p50_before


@dataclass(kw_only=True)
class HostileReport:
    bound: int
    size: int
    rows: list[Row] = field(default_factory=list)

    def table(self) -> str:
        lines = [
            f"F4 hostile servers: max_message_bytes {size_text(self.bound)}, hostile messages of "
            f"{size_text(self.size)}; a healthy in-memory server called every "
            f"{SAMPLE_INTERVAL * 1000:g} ms alongside",
            f"  {'case':<52} {'outcome':<15} {'closed as':<15} {'earlier':<8} "
            f"{'traced peak':>11} {'RSS peak':>9} {'CPU':>7}  healthy p50 before → during",
        ]
        for row in self.rows:
            case = f"{row.case.transport} {row.case.behaviour}: {row.case.what}"
            rss = "n/a" if row.rss_growth is None else _mib(row.rss_growth)
            latency = (
                f"{row.p50_before * 1000:.2f} → {row.p50_during * 1000:.2f} ms "
                f"(x{row.ratio:.2f}, n={row.samples_during})"
            )
            lines.append(
                f"  {case:<52} {row.outcome:<15} {row.closed_as or '-':<15} "
                f"{'yes' if row.earlier_delivered else 'NO':<8} {_mib(row.traced_growth):>11} {rss:>9} "
                f"{row.cpu_seconds * 1000:>5.0f}ms  {latency}"
            )
        worst = max(self.rows, key=lambda r: r.traced_growth)
        ratios = [r.ratio for r in self.rows]
        lines.append(
            f"  largest memory growth {_mib(worst.traced_growth)} ({worst.case.behaviour}; "
            f"2x the bound is {_mib(2 * self.bound)}); healthy p50 ratio per case "
            f"{min(ratios):.2f} to {max(ratios):.2f}, over every case {self.ratio:.2f} "
            f"({statistics.median(self.before) * 1000:.2f} → {statistics.median(self.during) * 1000:.2f} ms)"
        )
        return "\n".join(lines)

    @property
    def before(self) -> list[float]:
        return [x for row in self.rows for x in row.before]

    @property
    def during(self) -> list[float]:
        return [x for row in self.rows for x in row.during]

    @property
    def ratio(self) -> float:
        """The healthy server's median latency while the hostile messages arrived, over every
        case, against its median in the seconds before them."""
        return statistics.median(self.during) / statistics.median(self.before)


def _mib(size: int) -> str:
    return f"{size / MIB:.1f} MiB"


# -- the process's peak RSS ---------------------------------------------------------------------


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(key)


def _reset_peak_rss() -> int | None:
    """Reset ``VmHWM`` to the RSS now and return it (``None``: the kernel does not allow it)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _status("VmHWM")


# -- the healthy server and its latency ---------------------------------------------------------


def healthy_server() -> trio_mcp.ServerConfig:
    server = MCPServer(HEALTHY)

    @server.tool()
    async def echo(text: str) -> str:
        return text

    return memory_server(server, name=HEALTHY, health_interval=30.0)


class Sampler:
    """Calls the healthy server's ``echo`` one call after another and records each latency."""

    def __init__(self, manager: trio_mcp.Manager) -> None:
        self.manager = manager
        self.samples: list[tuple[float, float]] = []

    async def run(self) -> None:
        while True:
            start = trio.current_time()
            await self.manager.call_tool("echo", {"text": "x"}, preferred=[HEALTHY], failover="never")
            self.samples.append((start, trio.current_time() - start))
            await trio.sleep(SAMPLE_INTERVAL)

    def between(self, start: float, end: float) -> list[float]:
        return [latency for at, latency in self.samples if start <= at < end]


# -- one case -----------------------------------------------------------------------------------


async def _start_http_server(behaviour: str, size: int) -> tuple[trio.Process, int]:
    """Start the hostile HTTP server; its process and the port it listens on."""
    process = await trio.lowlevel.open_process(
        [sys.executable, str(SERVER_SCRIPT), "http", "--behaviour", behaviour, "--size", str(size)],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    data = b""
    with trio.fail_after(30):
        while not data.endswith(b"\n"):
            chunk = await process.stdout.receive_some(64)
            if not chunk:
                raise RuntimeError("the hostile HTTP server did not start")
            data += chunk
    return process, int(data)


def _config(case: Case, name: str, size: int, bound: int, port: int | None) -> trio_mcp.ServerConfig:
    transport: trio_mcp.StdioTransport | trio_mcp.HttpTransport
    if case.transport == "stdio":
        transport = trio_mcp.StdioTransport(
            command=sys.executable,
            args=(str(SERVER_SCRIPT), "stdio", "--behaviour", case.behaviour, "--size", str(size)),
            max_message_bytes=bound,
        )
    else:
        transport = trio_mcp.HttpTransport(url=f"http://127.0.0.1:{port}/mcp", max_message_bytes=bound)
    return trio_mcp.ServerConfig(name=name, transport=transport, policy=POLICY)


async def _wait_for(
    manager: trio_mcp.Manager, name: str, predicate: Callable[[ServerSnapshot], bool]
) -> None:
    with trio.move_on_after(10):
        await manager.wait_for(name, predicate)


async def run_case(manager: trio_mcp.Manager, sampler: Sampler, case: Case, *, size: int, bound: int) -> Row:
    name = f"{case.transport}-{case.behaviour}"
    process: trio.Process | None = None
    port = None
    try:
        if case.transport == "http":
            process, port = await _start_http_server(case.behaviour, size)
        await manager.add_server(_config(case, name, size, bound, port))
        with trio.fail_after(30):
            await manager.wait_for(name, lambda s: s.session.active)
        await trio.sleep(BEFORE_SECONDS)

        held: dict[str, Any] = {}

        async def hold() -> None:
            try:
                result = await manager.call_tool("hold", preferred=[name], failover="never", timeout=30)
                held["text"] = result.content[0].text  # type: ignore[union-attr]
            except InvocationFailedError as exc:
                held["error"] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold)
            gc.collect()
            rss_before = _reset_peak_rss()
            tracemalloc.reset_peak()
            traced_before = tracemalloc.get_traced_memory()[0]
            started = trio.current_time()
            cpu_started = time.process_time()
            try:
                result = await manager.call_tool(
                    "trigger", preferred=[name], failover="never", attempt_timeout=ATTEMPT_TIMEOUT, timeout=30
                )
            except InvocationFailedError as exc:
                outcome = exc.attempts[-1].category or "?"
                message = exc.attempts[-1].error or ""
            else:
                outcome = "ok"
                message = result.content[0].text  # type: ignore[union-attr]
            ended = trio.current_time()
            cpu_seconds = time.process_time() - cpu_started
            traced_growth = tracemalloc.get_traced_memory()[1] - traced_before
            rss_growth = None if rss_before is None else _status("VmHWM") - rss_before
        if case.expect == "protocol_error":
            await _wait_for(manager, name, lambda s: s.last_error_category == "protocol_error")
        closed = manager.server(name).last_error_category == "protocol_error"
        closed_as = "protocol_error" if closed else None
        await trio.sleep(max(0.0, started + DURING_SECONDS - trio.current_time()))
        during_end = max(ended, started + DURING_SECONDS)
        before = sampler.between(started - BEFORE_SECONDS, started)
        during = sampler.between(started, during_end)
        return Row(
            case=case,
            outcome=outcome,
            message=message,
            closed_as=closed_as,
            earlier_delivered=held.get("text") == "held",
            traced_growth=traced_growth,
            rss_growth=rss_growth,
            p50_before=statistics.median(before),
            p50_during=statistics.median(during),
            samples_before=len(before),
            samples_during=len(during),
            before=before,
            during=during,
            seconds=ended - started,
            cpu_seconds=cpu_seconds,
        )
    finally:
        with trio.CancelScope(shield=True):
            if name in manager.names:
                await manager.remove_server(name)
            if process is not None:
                process.kill()
                await process.wait()


async def run_hostile(
    cases: tuple[Case, ...] = CASES, *, size: int = HOSTILE_SIZE, bound: int = BOUND
) -> HostileReport:
    """Run ``cases`` one after another against one manager (with the healthy server sampled
    all along)."""
    report = HostileReport(bound=bound, size=size)
    tracemalloc.start()
    try:
        async with trio_mcp.open_manager([healthy_server()]) as manager, trio.open_nursery() as nursery:
            await manager.wait_for(HEALTHY, lambda s: s.session.active)
            sampler = Sampler(manager)
            nursery.start_soon(sampler.run)
            for case in cases:
                report.rows.append(await run_case(manager, sampler, case, size=size, bound=bound))
            nursery.cancel_scope.cancel()
    finally:
        tracemalloc.stop()
    return report
