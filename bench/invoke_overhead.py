"""Invocation overhead: ``manager.call_tool`` against the SDK's ``ClientSession`` and ``Client``.

The three paths call ``echo`` on the same SDK server (``bench/_echo_server.py``), taking turns
call by call (raw, ``Client``, manager, raw, manager, ``Client``, again and again: each path follows each
other path as often, and never itself) so that drift on the machine hits them alike; the
figures printed are the ratios of the manager's median latency to each SDK path's (throughput
is measured in interleaved rounds). Run: ``.venv/bin/python bench/invoke_overhead.py [calls]
[options]``.

- the raw session: an SDK ``ClientSession`` over the transport's streams (in memory: memory
  streams, where the manager calls a plain SDK server directly, as ``Client(server)`` does);
- the SDK's ``Client`` (its high-level client) built as its users build it: ``Client(url)``,
  ``Client(StdioServerParameters(...))``, and ``Client(server)`` in memory, which the SDK
  serves by calling the server in-process (no streams, no JSON-RPC framing);
- the manager: ``manager.call_tool`` on a one-server fleet.

``--transport`` picks how the server is reached (``all``: each in turn):

- ``memory`` (the default): the server runs in this process; the raw session talks to it over
  in-memory streams, ``Client(server)`` and the manager's ``MemoryTransport`` call it directly.
- ``stdio``: the server is a subprocess speaking over stdin/stdout (started with
  ``sys.executable``). The raw session uses the SDK's ``stdio_client`` and the manager a
  ``StdioTransport`` for the same command; stdio is one client per process, so each path has
  a server process of its own (``Client`` too).
- ``http``: one server subprocess serves streamable HTTP on a free port; the raw session uses
  the SDK's ``streamable_http_client`` (its default HTTP client, as ``Client(url)`` does) and the
  manager an ``HttpTransport``, all to that one process.

``--concurrency 16,64`` also measures throughput: C trio tasks share the calls of a round (8 per
caller; the paths take turns, round by round, for 2 x ``calls`` calls each, at least forty
rounds) and each calls in a loop until none is left, through one shared raw ``ClientSession`` (the SDK
multiplexes requests), one shared ``Client`` and the manager (its ``max_concurrency`` raised so
that it does not throttle); the ratios printed are calls/s through the manager over calls/s
through each SDK path, the median over pairs of rounds taken next to each other (higher is
better). ``--repeat R`` runs everything R times and ends with the range (min-max) of each ratio.
``--metrics`` attaches a Prometheus ``FleetCollector`` to the manager; ``--state URL`` writes its
event history to that store, e.g. ``sqlite:///tmp/bench.db``.
``--pin`` runs this process on the first CPU and the server processes on the second, so that
callers and servers never share a core and the scheduler does not move them between runs (the
stdio and HTTP figures are then steadier). ``--chart PATH`` also draws the ratios as a PNG
(matplotlib: ``pip install -e '.[bench]'``); no chart is drawn without it. The README's chart::

    .venv/bin/python bench/invoke_overhead.py 3000 --transport all --concurrency 16,64 \
        --chart docs/bench/invoke_overhead.png
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import _charts
import trio
from _echo_server import build_server
from mcp import Client
from mcp.client.session import ClientSession
from mcp.shared.memory import create_client_server_memory_streams

import trio_mcp
from trio_mcp.testing import memory_server

TRANSPORTS = ("memory", "stdio", "http")
ECHO_SERVER = str(Path(__file__).resolve().with_name("_echo_server.py"))
ARGS = {"text": "hello"}
WARMUP_CALLS = 200
THROUGHPUT_ROUND_CALLS = 8
"""Calls per caller in one throughput round: short rounds, many of them, interleaved."""
THROUGHPUT_MIN_ROUNDS = 40
SERVER_START_TIMEOUT = 30.0
SERVER_STOP_TIMEOUT = 10.0

Call = Callable[[], Awaitable[object]]

CLIENT_OF = {
    "memory": "Client(server): the SDK's in-process path, no streams",
    "stdio": "Client(StdioServerParameters)",
    "http": "Client(url)",
}
"""How the SDK's high-level ``Client`` reaches the server, per transport: as its users build it."""
ORDERS = ((0, 1, 2), (0, 2, 1))
"""The orders in which the three paths (0 raw, 1 ``Client``, 2 manager) take their turns, one after
the other: 0 1 2 0 2 1 0 1 2 ... Every path follows each of the others once in six calls and never
itself. What a call leaves in the CPU's caches is paid by the call after it, and a call that follows
one of its own path finds its code warm, so a path that followed itself more often than another
would be measured faster than it is. (With all six orders in turn, the raw session and ``Client``
each followed themselves once in eighteen calls and the manager never.)"""


@dataclass(frozen=True)
class Paths:
    """The three ways to make one call: the raw SDK session, the SDK's ``Client`` and the manager."""

    raw: Call
    managed: Call
    client: Call

    def each(self) -> tuple[Call, Call, Call]:
        return (self.raw, self.client, self.managed)


@dataclass(frozen=True)
class Throughput:
    """``callers`` concurrent tasks making ``round_calls`` calls per round, rounds taken in turns:
    each path's round durations, in seconds, in the order they were taken.

    A ratio is a median over rounds: of the ratio of a round through one path to the round
    through the other taken next to it (the paths take turns, so the pair saw the same minute of
    the machine). A burst that slows one round counts once, as one slow call does for latency,
    and not by how long it lasted; pairing the rounds takes out the drift between them (the
    rounds of one path vary by a quarter either way on this machine). In memory at 64 callers,
    twelve measurements of forty rounds gave 0.96-1.07 paired and 0.96-1.08 over the medians of
    the rounds; six of twelve rounds (16 and 64 callers), 0.87-1.14 over the sums of the rounds."""

    callers: int
    round_calls: int
    raw_rounds: tuple[float, ...]
    managed_rounds: tuple[float, ...]
    client_rounds: tuple[float, ...]

    @property
    def calls(self) -> int:
        """Calls per path, over every round."""
        return self.round_calls * len(self.raw_rounds)

    def rate(self, rounds: Sequence[float]) -> float:
        """Calls per second in a median round of ``rounds``."""
        return self.round_calls / statistics.median(rounds)

    @property
    def ratio(self) -> float:
        """Calls per second through the manager over calls per second through the raw session."""
        return _paired(self.raw_rounds, self.managed_rounds)

    @property
    def client_ratio(self) -> float:
        """Calls per second through the manager over calls per second through the SDK's ``Client``."""
        return _paired(self.client_rounds, self.managed_rounds)


def _paired(theirs: Sequence[float], ours: Sequence[float]) -> float:
    """The median over rounds of ``theirs[i] / ours[i]``: ours's calls/s over theirs's."""
    return statistics.median(t / o for t, o in zip(theirs, ours, strict=True))


@dataclass
class Run:
    """One transport's measurements in one repetition."""

    transport: str
    raw: list[float] = field(default_factory=list)
    managed: list[float] = field(default_factory=list)
    client: list[float] = field(default_factory=list)
    throughputs: list[Throughput] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(self.managed) / statistics.median(self.raw)

    @property
    def client_ratio(self) -> float:
        return statistics.median(self.managed) / statistics.median(self.client)


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------


async def time_calls(call: Call, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return samples


async def time_concurrent(call: Call, callers: int, calls: int) -> float:
    """Seconds ``callers`` tasks take to make ``calls`` calls between them."""
    remaining = calls

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(caller)
    return time.perf_counter() - start


async def measure(paths: Paths, run: Run, n: int, concurrency: Sequence[int]) -> None:
    calls = paths.each()
    for call in calls:
        await time_calls(call, WARMUP_CALLS)  # warm up every path
    # Take turns call by call (see ORDERS), so that drift on the machine hits every path alike,
    # and each path follows each other one as often (what one call leaves in the caches is the
    # next one's to pay).
    samples: tuple[list[float], list[float], list[float]] = (run.raw, run.client, run.managed)
    for i in range(n):
        for which in ORDERS[i % len(ORDERS)]:
            samples[which].extend(await time_calls(calls[which], 1))
    for callers in concurrency:
        # Short rounds (8 calls per caller), many of them, the paths taking turns: the
        # machine's drift over a second or two is as large as the difference measured, and
        # short rounds spread it over every path alike.
        per_round = THROUGHPUT_ROUND_CALLS * callers
        rounds = max(THROUGHPUT_MIN_ROUNDS, round(2 * n / per_round))
        for call in calls:
            await time_concurrent(call, callers, 4 * callers)  # warm up at this concurrency
        seconds: tuple[list[float], list[float], list[float]] = ([], [], [])
        for i in range(rounds):
            for which in ORDERS[i % len(ORDERS)]:
                seconds[which].append(await time_concurrent(calls[which], callers, per_round))
        raw_rounds, client_rounds, managed_rounds = (tuple(path) for path in seconds)
        run.throughputs.append(Throughput(callers, per_round, raw_rounds, managed_rounds, client_rounds))


# ---------------------------------------------------------------------------------------------
# the three paths, per transport
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    metrics: bool
    state: str | None
    policy: trio_mcp.ServerPolicy
    server_args: tuple[str, ...] = ()
    """Extra arguments for the echo server processes (``--cpu N`` with ``--pin``)."""


@contextlib.asynccontextmanager
async def open_manager(config: trio_mcp.ServerConfig, options: Options) -> AsyncIterator[trio_mcp.Manager]:
    """A manager with the one server ``config``, connected, with the options' extras attached."""
    async with contextlib.AsyncExitStack() as stack:
        manager = await stack.enter_async_context(trio_mcp.open_manager([config]))
        await manager.acquire(config.name)
        if options.state is not None:
            from trio_mcp.store import EventWriter, open_store

            store = await stack.enter_async_context(open_store(options.state))
            nursery = await stack.enter_async_context(trio.open_nursery())
            stack.callback(nursery.cancel_scope.cancel)
            writer = EventWriter(store, manager.stream, replica="bench", retention=None)
            await nursery.start(writer.run)
        if options.metrics:
            from prometheus_client import CollectorRegistry

            from trio_mcp.metrics import FleetCollector

            CollectorRegistry().register(FleetCollector(manager))
        yield manager


def paths_of(session: ClientSession, client: Client, manager: trio_mcp.Manager) -> Paths:
    return Paths(
        raw=lambda: session.call_tool("echo", ARGS),
        managed=lambda: manager.call_tool("echo", ARGS),
        client=lambda: client.call_tool("echo", ARGS),
    )


@contextlib.asynccontextmanager
async def memory_paths(options: Options) -> AsyncIterator[Paths]:
    server = build_server()
    lowlevel = server._lowlevel_server
    async with create_client_server_memory_streams() as (client_streams, server_streams):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: lowlevel.run(
                    server_streams[0], server_streams[1], lowlevel.create_initialization_options()
                )
            )
            async with ClientSession(*client_streams) as session, Client(server) as client:
                await session.discover()
                config = memory_server(server, name="bench", policy=options.policy)
                async with open_manager(config, options) as manager:
                    yield paths_of(session, client, manager)
            await client_streams[1].aclose()
            nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def stdio_paths(options: Options) -> AsyncIterator[Paths]:
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(command=sys.executable, args=[ECHO_SERVER, *options.server_args])
    transport = trio_mcp.StdioTransport(command=sys.executable, args=(ECHO_SERVER, *options.server_args))
    config = trio_mcp.ServerConfig(name="bench", transport=transport, policy=options.policy)
    async with stdio_client(params) as streams, ClientSession(*streams) as session, Client(params) as client:
        await session.discover()
        async with open_manager(config, options) as manager:
            yield paths_of(session, client, manager)


@contextlib.asynccontextmanager
async def http_server(server_args: Sequence[str] = ()) -> AsyncIterator[str]:
    """Run the echo server over streamable HTTP in a subprocess; yields its URL."""
    process = await trio.lowlevel.open_process(
        [sys.executable, ECHO_SERVER, "--http", "0", *server_args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(SERVER_START_TIMEOUT):
            while not output.endswith(b"\n"):
                chunk = await process.stdout.receive_some()
                if not chunk:
                    raise SystemExit(f"the echo server exited before it listened: {output!r}")
                output += chunk
        yield output.decode().strip()
    finally:
        with trio.CancelScope(shield=True):
            process.terminate()
            with trio.move_on_after(SERVER_STOP_TIMEOUT):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            assert process.stdout is not None
            await process.stdout.aclose()


@contextlib.asynccontextmanager
async def http_paths(options: Options) -> AsyncIterator[Paths]:
    from mcp.client.streamable_http import streamable_http_client

    async with http_server(options.server_args) as url:
        transport = trio_mcp.HttpTransport(url=url)
        config = trio_mcp.ServerConfig(name="bench", transport=transport, policy=options.policy)
        async with (
            streamable_http_client(url) as streams,
            ClientSession(*streams) as session,
            Client(url) as client,
        ):
            await session.discover()
            async with open_manager(config, options) as manager:
                yield paths_of(session, client, manager)


OPENERS: dict[str, Callable[[Options], contextlib.AbstractAsyncContextManager[Paths]]] = {
    "memory": memory_paths,
    "stdio": stdio_paths,
    "http": http_paths,
}


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def print_run(run: Run, extras: str) -> None:
    raw_median = statistics.median(run.raw)
    client_median = statistics.median(run.client)
    managed_median = statistics.median(run.managed)
    print(f"calls per path:            {len(run.raw)}{extras}")
    print(f"raw ClientSession.call_tool median: {raw_median * 1e6:8.1f} us")
    print(f"SDK Client.call_tool median:        {client_median * 1e6:8.1f} us  ({CLIENT_OF[run.transport]})")
    print(f"manager.call_tool median:           {managed_median * 1e6:8.1f} us")
    print(f"ratio (manager / raw):              {run.ratio:8.3f}")
    print(f"ratio (manager / Client):           {run.client_ratio:8.3f}")
    for t in run.throughputs:
        print(f"{t.callers} concurrent callers, calls per path: {t.calls}")
        print(f"raw ClientSession.call_tool:        {t.rate(t.raw_rounds):8.0f} calls/s")
        print(f"SDK Client.call_tool:               {t.rate(t.client_rounds):8.0f} calls/s")
        print(f"manager.call_tool:                  {t.rate(t.managed_rounds):8.0f} calls/s")
        print(f"throughput (manager / raw):         {t.ratio:8.3f}")
        print(f"throughput (manager / Client):      {t.client_ratio:8.3f}")


def print_ranges(runs: list[Run], repeat: int) -> None:
    def span(values: list[float]) -> str:
        return f"{min(values):.3f}-{max(values):.3f}"

    print(f"== ranges over {repeat} runs (min-max) ==")
    for transport in TRANSPORTS:
        mine = [r for r in runs if r.transport == transport]
        if not mine:
            continue
        print(f"{transport:<7} latency ratio (manager / raw):       {span([r.ratio for r in mine])}")
        print(f"{transport:<7} latency ratio (manager / Client):    {span([r.client_ratio for r in mine])}")
        for i, t in enumerate(mine[0].throughputs):
            ratios = [r.throughputs[i].ratio for r in mine]
            label = f"throughput C={t.callers} (manager / raw):"
            print(f"{transport:<7} {label:<36} {span(ratios)}")
            ratios = [r.throughputs[i].client_ratio for r in mine]
            label = f"throughput C={t.callers} (manager / Client):"
            print(f"{transport:<7} {label:<36} {span(ratios)}")


def write_chart(path: Path, runs: list[Run], n: int) -> None:
    """The latency and throughput ratios of ``runs`` as a PNG at ``path`` (if matplotlib is there)."""
    if not _charts.available():
        return
    latency: dict[str, list[float]] = {}
    client_latency: dict[str, list[float]] = {}
    medians: dict[str, tuple[float, float, float]] = {}
    throughput: dict[str, dict[int, list[float]]] = {}
    client_throughput: dict[str, dict[int, list[float]]] = {}
    for run in runs:
        latency.setdefault(run.transport, []).append(run.ratio)
        client_latency.setdefault(run.transport, []).append(run.client_ratio)
        medians[run.transport] = (
            statistics.median(run.raw) * 1e6,
            statistics.median(run.client) * 1e6,
            statistics.median(run.managed) * 1e6,
        )
        for t in run.throughputs:
            throughput.setdefault(run.transport, {}).setdefault(t.callers, []).append(t.ratio)
            client_throughput.setdefault(run.transport, {}).setdefault(t.callers, []).append(t.client_ratio)
    _charts.invoke_overhead(
        path,
        calls=len(runs[0].raw) if runs else n,
        latency_ratios=latency,
        medians_us=medians,
        throughput_ratios=throughput,
        client_latency_ratios=client_latency,
        client_throughput_ratios=client_throughput,
    )


async def measure_all(
    n: int,
    metrics: bool,
    state: str | None,
    transports: Sequence[str],
    concurrency: Sequence[int],
    repeat: int,
    chart: Path | None = None,
    server_args: Sequence[str] = (),
) -> None:
    max_concurrency = max([trio_mcp.ServerPolicy().max_concurrency, *concurrency])
    policy = trio_mcp.ServerPolicy(health_interval=3600, max_concurrency=max_concurrency)
    options = Options(metrics=metrics, state=state, policy=policy, server_args=tuple(server_args))
    extras = " (metrics collector attached)" if metrics else ""
    extras += f" (event history written to {state})" if state else ""
    # The plain run (one in-memory latency measurement) prints exactly its six lines.
    headed = list(transports) != ["memory"] or bool(concurrency) or repeat > 1
    runs: list[Run] = []
    for i in range(repeat):
        for transport in transports:
            run = Run(transport)
            async with OPENERS[transport](options) as paths:
                await measure(paths, run, n, concurrency)
            runs.append(run)
            if headed:
                print(f"== {transport}" + (f", run {i + 1} of {repeat}" if repeat > 1 else "") + " ==")
            print_run(run, extras)
            sys.stdout.flush()  # a long run shows each transport's figures as they come
    if repeat > 1:
        print_ranges(runs, repeat)
    if chart is not None:
        write_chart(chart, runs, n)


async def main(
    n: int,
    metrics: bool,
    state: str | None = None,
    transports: Sequence[str] = ("memory",),
    concurrency: Sequence[int] = (),
    repeat: int = 1,
    chart: Path | None = None,
    server_args: Sequence[str] = (),
) -> None:
    # SIGTERM or SIGHUP cancels the run like Ctrl-C does, so the server processes are stopped.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
        received: list[int] = []

        async def stop_on_signal(scope: trio.CancelScope) -> None:
            async for signum in signals:
                received.append(signum)
                scope.cancel()
                return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_signal, nursery.cancel_scope)
            await measure_all(n, metrics, state, transports, concurrency, repeat, chart, server_args)
            nursery.cancel_scope.cancel()
    if received:
        sys.exit(128 + received[0])


def parse_concurrency(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("calls", nargs="?", type=int, default=20000, help="calls per path (default 20000)")
    parser.add_argument(
        "--transport",
        choices=[*TRANSPORTS, "all"],
        default="memory",
        help="how the server is reached (default memory; all: memory, stdio and http in turn)",
    )
    parser.add_argument(
        "--concurrency",
        type=parse_concurrency,
        default=[],
        metavar="C[,C...]",
        help="also measure throughput with C concurrent callers (e.g. 16,64)",
    )
    parser.add_argument("--repeat", type=positive, default=1, metavar="R", help="run everything R times")
    parser.add_argument(
        "--pin", action="store_true", help="run this process on the first CPU and the servers on the second"
    )
    parser.add_argument("--metrics", action="store_true", help="attach a Prometheus FleetCollector")
    parser.add_argument("--state", metavar="URL", help="write the event history to this store")
    parser.add_argument(
        "--chart",
        type=Path,
        metavar="PATH",
        help="also write a PNG chart of the ratios to PATH, e.g. docs/bench/invoke_overhead.png "
        "(needs matplotlib: pip install -e '.[bench]'; no chart unless given)",
    )
    args = parser.parse_args()
    transports = TRANSPORTS if args.transport == "all" else (args.transport,)
    server_args: tuple[str, ...] = ()
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            parser.error("--pin needs two CPUs")
        os.sched_setaffinity(0, {cpus[0]})
        server_args = ("--cpu", str(cpus[1]))
    trio.run(
        main,
        args.calls,
        args.metrics,
        args.state,
        transports,
        args.concurrency,
        args.repeat,
        args.chart,
        server_args,
    )
