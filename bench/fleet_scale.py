"""Fleet scale: what N supervised streamable-HTTP servers cost the manager process.

One backend process (``python -m trio_mcp.demo_server --http PORT``) serves every server; the
manager supervises N servers that all point at it (each its own name, the same URL), probing
each every ``--interval`` seconds. Each run has a fresh backend (one that served a fleet before
is slower for the next: the SDK server keeps some of what it held) and runs the manager in a
fresh process, which reports:

- **healthy after**: seconds from entering ``open_manager`` until every server is healthy
  (and, beside it, when ``open_manager`` itself returned), and **start ms/server**: the manager
  process's CPU over that time per server (its own share of a start that one backend may bound),
  and the backend's beside it;
- **listening after**: seconds until every 2026-07-28 server's list-change stream was
  acknowledged too, and **settled after**: until the catalogs of every stream acknowledged late
  were listed again as well (see ``UNWATCHED_SECONDS`` in ``trio_mcp._supervisor``; spread over
  20 s, that is still the fleet's start): the steady-state window starts then;
- **CPU**: the manager process's CPU time over ``--seconds`` of steady state, as a fraction
  of one core (the backend's own CPU is shown beside it: both share the machine);
- **KiB/server**: (RSS with N servers - RSS with none) / N. The baseline is taken after the
  HTTP client modules are imported and an empty manager was opened, so what is left is what
  each server holds;
- **probe failures** over the whole run, probes per second in the window, and the **stalest
  check**: at the window's end, the longest time since any server was last found healthy (so a
  run where probes silently stopped cannot look cheap). Probes of a healthy server publish no
  state change, so they are counted where they are sent (by a server's own task, or by its
  origin's probe rounds).

Run::

    .venv/bin/python bench/fleet_scale.py --servers 10,100,300,1000 --seconds 10
    .venv/bin/python bench/fleet_scale.py --smoke          # N=10 for 2 s: checks it still works

``--transport stdio`` supervises N demo server processes over stdio instead (one each; their
CPU is shown as the backend's, and KiB/server is still the manager process's own)::

    .venv/bin/python bench/fleet_scale.py --transport stdio --servers 100 --seconds 10

``--protocol legacy`` handshakes every server with ``initialize`` (2025-11-25) instead; such a
connection parks only once idle for ``park_after``, so give a short one to measure it parked::

    .venv/bin/python bench/fleet_scale.py --transport stdio --servers 100 --protocol legacy --park-after 2

``--backends B`` spreads the servers over B backend processes (server i at backend i mod B;
the backend CPU column is their sum), for a fleet that one backend process cannot serve on its
own::

    .venv/bin/python bench/fleet_scale.py --servers 1000 --backends 2

``--backend-server uvicorn`` serves the backend as the SDK's own ``MCPServer.run("streamable-http")``
does, with uvicorn (``bench/_uvicorn_backend.py``), instead of hypercorn's trio worker: the HTTP
stack most deployed SDK servers run on, and about a third cheaper per request here::

    .venv/bin/python bench/fleet_scale.py --servers 1000 --backend-server uvicorn

``--origins K`` spreads the servers over K origins (``http://127.0.x.y:PORT/mcp``, all loopback
addresses of the one backend, which then binds every address: ``0.0.0.0``), as a fleet of
distinct servers is::

    .venv/bin/python bench/fleet_scale.py --servers 500 --origins 500

``--park-after SECONDS`` sets every server's ``park_after`` (default: the library's; ``none``:
parking off, so every server holds an open SDK session); up to 30 s the window starts once every
server is parked. RSS keeps its high-water mark: a fleet whose sessions were all open once shows
that, even after they closed::

    .venv/bin/python bench/fleet_scale.py --servers 1000 --park-after none

``--chart PATH`` also draws the three figures against N as a PNG (matplotlib: ``pip install -e
'.[bench]'``); no chart is drawn without it::

    .venv/bin/python bench/fleet_scale.py --servers 10,100,300 --seconds 5 --chart docs/bench/fleet_scale.png
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _charts
import trio
from _procs import cpu_seconds_of, free_port, listening

import trio_mcp

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
UVICORN_BACKEND = Path(__file__).resolve().with_name("_uvicorn_backend.py")


def rss_bytes() -> int:
    """This process's resident set size now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------------------------
# the manager process (one per N)
# ---------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class _Counts:
    probes_ok: int = 0
    probe_failures: int = 0
    connections_lost: int = 0
    connect_failures: int = 0
    left_healthy: int = 0
    listening: int = 0
    relists_pending: int = 0
    relisted: int = 0


def children_cpu_seconds() -> float:
    """User + system CPU seconds this process's live child processes (stdio servers) have used."""
    total = 0.0
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                total += cpu_seconds_of(int(pid))
            except (OSError, IndexError):  # it exited meanwhile
                pass
    return total


def origin_url(url: str, origin: int) -> str:
    """``url`` (at 127.0.0.1) at loopback address number ``origin`` instead: 127.0.0.1,
    127.0.0.2, ... 127.0.0.250, 127.0.1.1, ..."""
    return url.replace("127.0.0.1", f"127.0.{origin // 250}.{1 + origin % 250}", 1)


def transport_of(name: str, url: str | None) -> trio_mcp.HttpTransport | trio_mcp.StdioTransport:
    """The one backend at ``url``, or without one a demo server process of its own over stdio."""
    if url is not None:
        return trio_mcp.HttpTransport(url=url)
    return trio_mcp.StdioTransport(
        command=sys.executable, args=("-m", "trio_mcp.demo_server", "--name", name)
    )


async def measure(
    n: int,
    urls: list[str],
    *,
    seconds: float,
    interval: float,
    backend_pids: list[int],
    healthy_within: float,
    park_after: float | None,
    origins: int = 1,
    protocol: str = "auto",
) -> dict[str, Any]:
    # What every server uses is imported before the baseline: module code is not per server.
    import httpx2  # noqa: F401
    import mcp.client.stdio
    import mcp.client.streamable_http  # noqa: F401

    async with trio_mcp.open_manager([]):
        pass
    gc.collect()
    rss_empty = rss_bytes()

    def backend_cpu_seconds() -> float:
        # Over stdio every server is a child process: their CPU is the backend's.
        return sum(map(cpu_seconds_of, backend_pids)) if backend_pids else children_cpu_seconds()

    def url_of(i: int) -> str | None:
        # Server i: backend i % B, then origin (i // B) % origins of that backend.
        if not urls:
            return None
        return origin_url(urls[i % len(urls)], i // len(urls) % origins)

    policy = trio_mcp.ServerPolicy(health_interval=interval, park_after=park_after, protocol=protocol)  # type: ignore[arg-type]
    configs = [
        trio_mcp.ServerConfig(
            name=f"s{i:04d}",
            transport=transport_of(f"s{i:04d}", url_of(i)),
            policy=policy,
        )
        for i in range(n)
    ]
    counts = _Counts()
    # Probes of a healthy server publish no state change: they are counted where they are sent.
    from trio_mcp import _supervisor

    probe = _supervisor.probe  # type: ignore[attr-defined]

    async def counted_probe(conn: Any, kind: str) -> None:
        await probe(conn, kind)
        counts.probes_ok += 1

    _supervisor.probe = counted_probe  # type: ignore[attr-defined]
    # Nor does a list-change stream's acknowledgement: it is counted where it is read.
    stream_event = _supervisor.stream_event  # type: ignore[attr-defined]

    def counted_event(message: Any, subscription_id: str) -> str | None:
        said = stream_event(message, subscription_id)
        if said == "acknowledged":
            counts.listening += 1
            if counts.listening >= n:
                all_listening.set()
        return said

    _supervisor.stream_event = counted_event  # type: ignore[attr-defined]
    # The catalogs of a stream acknowledged late are listed again, a little later.
    list_again = _supervisor.ServerSupervisor._list_again_later

    async def counted_list_again(self: Any, conn: Any, kinds: Any) -> None:
        counts.relists_pending += 1
        try:
            await list_again(self, conn, kinds)
        finally:
            counts.relists_pending -= 1
            counts.relisted += 1

    _supervisor.ServerSupervisor._list_again_later = counted_list_again  # type: ignore[method-assign]
    all_listening = trio.Event()
    healthy: set[str] = set()
    all_healthy = trio.Event()
    parked_now: set[str] = set()
    all_parked = trio.Event()

    def on_event(event: Any) -> None:
        if not isinstance(event, trio_mcp.StateChange):
            return
        reason = event.reason
        if reason.startswith("probe failed"):
            counts.probe_failures += 1
        elif reason.startswith("connection lost"):
            counts.connections_lost += 1
        elif reason.startswith(("connect failed", "handshake failed")):
            counts.connect_failures += 1
        if event.current.parked:
            parked_now.add(event.server)
            if len(parked_now) == n:
                all_parked.set()
        else:
            parked_now.discard(event.server)
        if event.current.status is trio_mcp.ServerStatus.HEALTHY:
            healthy.add(event.server)
            if len(healthy) == n:
                all_healthy.set()
        elif event.server in healthy:
            healthy.discard(event.server)
            counts.left_healthy += 1

    started = trio.current_time()
    started_cpu = own_cpu_seconds()
    started_backend_cpu = backend_cpu_seconds()
    startup_cpu: float | None = None
    startup_backend_cpu: float | None = None
    async with trio_mcp.open_manager(configs) as manager:
        opened_after = trio.current_time() - started
        manager.stream.add_listener(on_event)
        # Servers that turned healthy before the listener was added.
        for snap in manager.servers():
            if snap.status is trio_mcp.ServerStatus.HEALTHY:
                healthy.add(snap.name)
        if len(healthy) == n:
            all_healthy.set()
        healthy_after: float | None = None
        with trio.move_on_after(healthy_within):
            await all_healthy.wait()
            healthy_after = trio.current_time() - started
            startup_cpu = own_cpu_seconds() - started_cpu
            startup_backend_cpu = backend_cpu_seconds() - started_backend_cpu
        listening_after: float | None = None
        if healthy_after is not None and urls:
            # The fleet settles: every list-change stream held (stdio ones go through sessions).
            with trio.move_on_after(healthy_within):
                await all_listening.wait()
                listening_after = trio.current_time() - started
        settled_after: float | None = None
        if listening_after is not None:
            # ... and every catalog dropped for a late stream listed again.
            supervisors = list(manager._supervisors.values())
            with trio.move_on_after(healthy_within):
                # Polled: a relisting about to start is seen only in the counter.
                while counts.relists_pending or any(_supervisor._stale(s._state.value) for s in supervisors):  # noqa: ASYNC110
                    await trio.sleep(0.1)
                settled_after = trio.current_time() - started
        parked_after: float | None = None
        if park_after is not None and park_after <= MAX_PARK_WAIT and healthy_after is not None:
            # An idle fleet parks: the window measures it parked.
            with trio.move_on_after(park_after + 10):
                await all_parked.wait()
                parked_after = trio.current_time() - started
        # Measure the steady state: every server connected and probing.
        pool = manager._http_pool
        assert pool is not None

        def probes_sent() -> int:
            # The probes a server's own task sent, and those its origin's rounds sent.
            return counts.probes_ok + pool.probes_in_rounds

        probes_before = probes_sent()
        backend_before = backend_cpu_seconds()
        cpu_before = own_cpu_seconds()
        wall_before = time.perf_counter()
        await trio.sleep(seconds)
        wall = time.perf_counter() - wall_before
        cpu = own_cpu_seconds() - cpu_before
        backend_cpu = backend_cpu_seconds() - backend_before
        probes = probes_sent() - probes_before
        gc.collect()
        rss_full = rss_bytes()
        statuses: dict[str, int] = {}
        parked = 0
        now = trio.current_time()
        stalest = 0.0
        for snap in manager.servers():
            statuses[snap.status.value] = statuses.get(snap.status.value, 0) + 1
            parked += snap.session.parked
            checked = snap.last_checked_at if snap.last_checked_at is not None else started
            stalest = max(stalest, now - checked)
    return {
        "transport": "http" if urls else "stdio",
        "backends": len(urls),
        "servers": n,
        "origins": origins if urls else n,
        "opened_after": opened_after,
        "healthy_after": healthy_after,
        "listening_after": listening_after,
        "settled_after": settled_after,
        "relisted": counts.relisted,
        "startup_cpu_ms_per_server": None if startup_cpu is None else 1000 * startup_cpu / n,
        "startup_backend_cpu_ms_per_server": (
            None if startup_backend_cpu is None else 1000 * startup_backend_cpu / n
        ),
        "park_after": park_after,
        "protocol": protocol,
        "parked_after": parked_after,
        "parked": parked,
        "cpu": cpu / wall,
        "backend_cpu": backend_cpu / wall,
        "kib_per_server": (rss_full - rss_empty) / 1024 / n,
        "rss_empty_mib": rss_empty / 2**20,
        "rss_full_mib": rss_full / 2**20,
        "probes_per_second": probes / wall,
        "stalest_check": stalest,
        "probe_failures": counts.probe_failures,
        "connections_lost": counts.connections_lost,
        "connect_failures": counts.connect_failures,
        "left_healthy": counts.left_healthy,
        "statuses": statuses,
    }


# ---------------------------------------------------------------------------------------------
# the driver: one backend, one manager process per N, a table
# ---------------------------------------------------------------------------------------------


def wait_listening(port: int, proc: subprocess.Popen[bytes], within: float = 30.0) -> None:
    def check_alive() -> None:
        if proc.poll() is not None:
            raise SystemExit(f"the backend exited with code {proc.returncode}")

    if not listening(port, check_alive, within):
        raise SystemExit(f"the backend did not listen on port {port} within {within:g}s")


def run_child(
    n: int,
    urls: list[str],
    *,
    seconds: float,
    interval: float,
    backend_pids: list[int],
    healthy_within: float,
    park_after: float | None,
    origins: int = 1,
    protocol: str = "auto",
) -> dict[str, Any]:
    backend = ["--url", ",".join(urls), "--backend-pid", ",".join(map(str, backend_pids))] if urls else []
    command = [
        sys.executable,
        __file__,
        "--child",
        str(n),
        *backend,
        "--seconds",
        str(seconds),
        "--interval",
        str(interval),
        "--healthy-within",
        str(healthy_within),
        "--park-after",
        "none" if park_after is None else str(park_after),
        "--origins",
        str(origins),
        "--protocol",
        protocol,
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE) as child:
        try:
            out, _ = child.communicate()
        finally:
            if child.poll() is None:  # interrupted: take the manager process down too
                child.kill()
    if child.returncode:
        raise SystemExit(f"the manager process for {n} servers exited with code {child.returncode}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


MAX_PARK_WAIT = 30.0
"""A ``--park-after`` up to this is waited for before the window (an idle fleet, parked)."""


def _park_after(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def _fmt(value: float | None, spec: str) -> str:
    return "never" if value is None else format(value, spec)


def _per_probe(row: dict[str, Any]) -> str:
    """Manager CPU milliseconds per probe in the window (what a server costs while idle)."""
    rate = row["probes_per_second"]
    return format(1000 * row["cpu"] / rate, ".2f") if rate else "-"


def print_table(rows: list[dict[str, Any]], interval: float) -> None:
    header = (
        f"{'servers':>7} {'open_manager s':>14} {'healthy after s':>15} {'listening after s':>17} "
        f"{'settled after s':>15} {'relisted':>8} {'start ms/server':>15} {'backend start ms/server':>23} "
        f"{'CPU (1 core)':>12} {'CPU ms/probe':>12} {'backend CPU':>11} {'KiB/server':>10} {'probes/s':>9} "
        f"{'stalest check s':>15} {'probe fails':>11} {'conn lost':>9} {'left healthy':>12} {'parked':>7}"
    )
    transport = rows[0].get("transport", "http") if rows else "http"
    origins = rows[0].get("origins", 1) if rows else 1
    backends = rows[0].get("backends", 1) if rows else 1
    served = rows[0].get("backend_server", "hypercorn") if rows else "hypercorn"
    backend = (
        "a demo server process each; backend CPU: theirs"
        if transport == "stdio"
        else (f"one {served} backend" if backends == 1 else f"{backends} {served} backends, CPU summed")
        + (f" at {origins} origins" if origins > 1 else "")
    )
    park_after = rows[0].get("park_after") if rows else None
    parking = "never" if park_after is None else f"{park_after:g}s"
    protocol = rows[0].get("protocol", "auto") if rows else "auto"
    print(
        f"transport={transport} ({backend}), health_interval={interval:g}s, park_after={parking}, "
        f"protocol={protocol}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['servers']:>7} {r['opened_after']:>14.2f} {_fmt(r['healthy_after'], '.2f'):>15} "
            f"{_fmt(r.get('listening_after'), '.2f') if r.get('backends', 1) else '-':>17} "
            f"{_fmt(r.get('settled_after'), '.2f') if r.get('backends', 1) else '-':>15} "
            f"{r.get('relisted', 0):>8} "
            f"{_fmt(r.get('startup_cpu_ms_per_server'), '.2f'):>15} "
            f"{_fmt(r.get('startup_backend_cpu_ms_per_server'), '.2f'):>23} "
            f"{r['cpu']:>12.3f} {_per_probe(r):>12} {r['backend_cpu']:>11.3f} {r['kib_per_server']:>10.1f} "
            f"{r['probes_per_second']:>9.0f} {r.get('stalest_check', 0.0):>15.2f} "
            f"{r['probe_failures']:>11} {r['connections_lost']:>9} "
            f"{r['left_healthy']:>12} {r['parked']:>7}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="10,100,300,1000", help="comma-separated fleet sizes")
    parser.add_argument("--seconds", type=float, default=10.0, help="steady-state window per fleet size")
    parser.add_argument("--interval", type=float, default=1.0, help="health_interval of every server")
    parser.add_argument("--runs", type=int, default=1, help="repeat each fleet size this many times")
    parser.add_argument(
        "--healthy-within", type=float, default=300.0, help="give up waiting for all healthy after this"
    )
    parser.add_argument(
        "--transport",
        choices=("http", "stdio"),
        default="http",
        help="http: every server at one backend process; stdio: a demo server process per server",
    )
    parser.add_argument(
        "--park-after",
        type=_park_after,
        default=trio_mcp.ServerPolicy().park_after,
        metavar="SECONDS|none",
        help="park_after of every server (default: the library's); at most "
        f"{MAX_PARK_WAIT:g}s: the window starts once every server is parked",
    )
    parser.add_argument(
        "--backends",
        type=int,
        default=1,
        help="spread the HTTP servers over this many backend processes (their CPU is summed)",
    )
    parser.add_argument(
        "--backend-server",
        choices=("hypercorn", "uvicorn"),
        default="hypercorn",
        help="what serves the backend's HTTP: hypercorn's trio worker (python -m trio_mcp.demo_server "
        "--http), or uvicorn as the SDK's own MCPServer.run('streamable-http') (bench/_uvicorn_backend.py)",
    )
    parser.add_argument(
        "--origins", type=int, default=1, help="spread the HTTP servers over this many loopback origins"
    )
    parser.add_argument(
        "--protocol",
        choices=("auto", "modern", "legacy"),
        default="auto",
        help="every server's protocol policy (legacy: the demo servers are handshaken with initialize)",
    )
    parser.add_argument("--smoke", action="store_true", help="N=10 for 2 s (a quick check)")
    parser.add_argument("--json", action="store_true", help="also print each result as a JSON line")
    parser.add_argument(
        "--chart",
        type=Path,
        metavar="PATH",
        help="also write a PNG chart of the table to PATH, e.g. docs/bench/fleet_scale.png "
        "(needs matplotlib: pip install -e '.[bench]'; no chart unless given)",
    )
    # Internal: run one manager process.
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--backend-pid", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child is not None:
        result = trio.run(
            lambda: measure(
                args.child,
                args.url.split(",") if args.url else [],
                seconds=args.seconds,
                interval=args.interval,
                backend_pids=[int(pid) for pid in args.backend_pid.split(",") if pid],
                healthy_within=args.healthy_within,
                park_after=args.park_after,
                origins=args.origins,
                protocol=args.protocol,
            )
        )
        print(json.dumps(result), flush=True)
        return

    if args.smoke:
        sizes, seconds, healthy_within = [10], 2.0, 30.0
    else:
        sizes = [int(s) for s in args.servers.split(",") if s.strip()]
        seconds, healthy_within = args.seconds, args.healthy_within

    # A terminated driver still stops its backend and manager processes (see the finally below).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    rows: list[dict[str, Any]] = []

    def run_once(n: int, urls: list[str], backend_pids: list[int]) -> None:
        row = run_child(
            n,
            urls,
            seconds=seconds,
            interval=args.interval,
            backend_pids=backend_pids,
            healthy_within=healthy_within,
            park_after=args.park_after,
            origins=args.origins,
            protocol=args.protocol,
        )
        if urls:
            row["backend_server"] = args.backend_server
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)

    for n in sizes:
        for _ in range(args.runs):
            if args.transport == "stdio":
                run_once(n, [], [])
                continue
            backends: list[tuple[int, subprocess.Popen[bytes]]] = []
            try:
                for _ in range(args.backends):
                    port = free_port()
                    serve = (
                        (sys.executable, str(UVICORN_BACKEND), str(port))
                        if args.backend_server == "uvicorn"
                        else (sys.executable, "-m", "trio_mcp.demo_server", "--http", str(port))
                    )
                    backend = subprocess.Popen(
                        [
                            *serve,
                            *("--name", "fleet"),
                            # Servers at other loopback addresses than 127.0.0.1 need it bound to
                            # them all.
                            *(("--host", "0.0.0.0") if args.origins > 1 else ()),
                        ],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    backends.append((port, backend))
                    wait_listening(port, backend)
                run_once(
                    n,
                    [f"http://127.0.0.1:{port}/mcp" for port, _ in backends],
                    [backend.pid for _, backend in backends],
                )
            finally:
                for _, backend in backends:
                    backend.terminate()
                for _, backend in backends:
                    try:
                        backend.wait(10)
                    except subprocess.TimeoutExpired:
                        backend.kill()
                        backend.wait()
    print_table(rows, args.interval)
    if args.chart is not None and _charts.available():
        count = "one" if args.backends == 1 else str(args.backends)
        served = f"{count} {args.backend_server} backend{'s' if args.backends > 1 else ''}"
        _charts.fleet_scale(args.chart, rows=rows, interval=args.interval, backends=served)
    if args.smoke:
        row = rows[0]
        if row["healthy_after"] is None or row["probes_per_second"] <= 0:
            raise SystemExit("smoke run failed: not every server became healthy and probed")


if __name__ == "__main__":
    main()
