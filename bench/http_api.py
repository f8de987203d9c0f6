"""HTTP API throughput: ``POST /api/v1/mcp/invoke/tool`` against its backend alone and a FastMCP proxy.

One backend process (``python -m trio_mcp.demo_server --http PORT``: an SDK ``MCPServer`` with an
``echo(text)`` tool, streamable HTTP under hypercorn's trio worker) answers every target:

- **backend alone** (the ceiling): the backend hit directly with the MCP ``tools/call`` POST;
- **trio-mcp serve**: ``trio-mcp serve --config FLEET`` (one server, the backend) hit with
  ``POST /api/v1/mcp/invoke/tool`` and ``{"tool_name": "echo", "arguments": {"text": "hello"}}``;
- **FastMCP proxy**: ``fastmcp.server.create_proxy`` over one connected ``fastmcp.Client`` (one
  backend session reused by every request), served over streamable HTTP by uvicorn, hit with the
  same ``tools/call`` POST as the backend.

Every HTTP hop speaks MCP 2026-07-28, where a request is one self-contained POST (no
``initialize``, no ``Mcp-Session-Id``): the load generator sends the same request every time, and
each target is checked once in Python to answer ``hello`` before it is measured. No target writes
an access log (the backend has none; ``trio-mcp serve`` runs with ``--log-format json``, uvicorn with
``access_log=False``) and ``trio-mcp serve`` keeps no state (``--state memory``). The server's
``maxConcurrency`` is the largest connection count, so the bulkhead does not shape the figures.

The load is `wrk <https://github.com/wg/wrk>`_ (a Lua script sets the method, body and headers;
requests/s and the p50/p99 latency come from its ``--latency`` report). For each of ``--runs``
runs, each connection count and each target in turn (the order rotates from run to run), wrk
runs ``--duration`` seconds; every process's CPU per request is measured beside it (the backend's
too: on a small machine the targets compete with the backend and wrk for the same cores). It
prints, per target and connection count, the ranges over runs, then the throughput ratios paired
run by run: trio-mcp serve / backend alone (target >= 0.8) and trio-mcp serve / FastMCP proxy
(target >= 2).

FastMCP is not a dependency of trio-mcp: it runs from its own virtual environment, ``.bench-venv``
at the repository's root, created on first use (``python -m venv .bench-venv`` and ``pip install
fastmcp==4.2.3``). Run::

    .venv/bin/python bench/http_api.py                          # 3 runs x 10 s, 16 and 64 connections
    .venv/bin/python bench/http_api.py --runs 2 --duration 10 --connections 16,64
    .venv/bin/python bench/http_api.py --no-fastmcp             # without the proxy (no .bench-venv)
    .venv/bin/python bench/http_api.py --bench-venv /tmp/fastmcp-venv   # FastMCP from elsewhere
    .venv/bin/python bench/http_api.py --smoke                  # one 2 s run, 16 connections
    .venv/bin/python bench/http_api.py --workers 2              # hypercorn --workers 2 web.app:app

``--chart PATH`` also draws requests/s and the ratios as a PNG (matplotlib: ``pip install -e
'.[bench]'``); no chart is drawn without it::

    .venv/bin/python bench/http_api.py --runs 1 --duration 5 --chart docs/bench/http_api.png

wrk must be installed (Debian/Ubuntu: ``apt-get install -y wrk``); without it the script exits 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _charts
from _procs import CLOCK_TICKS, cpu_seconds_of, free_port, listening, stat_fields

REPO = Path(__file__).resolve().parent.parent
BENCH_VENV = REPO / ".bench-venv"
FASTMCP_REQUIREMENT = "fastmcp==4.2.3"
PROTOCOL_VERSION = "2026-07-28"
API_PATH = "/api/v1/mcp/invoke/tool"
MCP_PATH = "/mcp"
TEXT = "hello"

API_BODY = {"tool_name": "echo", "arguments": {"text": TEXT}}
MCP_BODY = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {
        "name": "echo",
        "arguments": {"text": TEXT},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": PROTOCOL_VERSION,
            "io.modelcontextprotocol/clientInfo": {"name": "wrk", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {},
        },
    },
}
MCP_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": PROTOCOL_VERSION,
    "Mcp-Method": "tools/call",
    "Mcp-Name": "echo",
}
API_HEADERS = {"Content-Type": "application/json"}

WRK_MISSING = (
    "wrk is not installed: it generates the load. Install it (Debian/Ubuntu, as root: "
    "`apt-get install -y wrk`; macOS: `brew install wrk`; or build https://github.com/wg/wrk) "
    "and run this again."
)


# ---------------------------------------------------------------------------------------------
# the FastMCP proxy process (runs in .bench-venv: only the standard library is imported above)
# ---------------------------------------------------------------------------------------------


def serve_fastmcp_proxy(backend_url: str, port: int) -> None:
    """Serve a FastMCP proxy of ``backend_url`` on ``127.0.0.1:port`` until SIGTERM.

    The proxy is given a connected ``Client``: FastMCP then reuses that one backend session for
    every request instead of opening a session per request.
    """
    import asyncio

    from fastmcp import Client
    from fastmcp.server import create_proxy

    async def main() -> None:
        async with Client(backend_url) as client:
            proxy = create_proxy(client, name="bench-proxy")
            await proxy.run_http_async(
                show_banner=False,
                host="127.0.0.1",
                port=port,
                log_level="warning",
                uvicorn_config={"access_log": False},
            )

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------------------------


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                children.setdefault(int(stat_fields(int(entry))[1]), []).append(int(entry))
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError, IndexError):
            total += cpu_seconds_of(current)
        todo.extend(children.get(current, ()))
    return total


def machine_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine so far, summed over its cores."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS  # guest time is already counted in user


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise SystemExit(f"{self.name} exited with code {self.proc.returncode}:\n{self.tail()}")


@dataclass
class Processes:
    """Every process the benchmark starts; :meth:`stop_all` terminates and reaps them."""

    directory: Path
    started: list[Process] = field(default_factory=list)

    def start(self, name: str, command: Sequence[str], env: dict[str, str] | None = None) -> Process:
        log = self.directory / f"{name.replace(' ', '-')}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                list(command), stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, cwd=REPO
            )
        process = Process(name, proc, log)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            if process.proc.poll() is None:
                process.proc.terminate()
        for process in reversed(self.started):
            try:
                process.proc.wait(15)
            except subprocess.TimeoutExpired:
                process.proc.kill()
                process.proc.wait()


def wait_listening(process: Process, port: int, within: float = 60.0) -> None:
    if listening(port, process.check_alive, within):
        return
    raise SystemExit(f"{process.name} did not listen on port {port} within {within:g}s:\n{process.tail()}")


def post(url: str, body: dict[str, Any], headers: dict[str, str], timeout: float = 10.0) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        with exc:
            text = exc.read().decode(errors="replace")
        return exc.code, text


def wait_ready(process: Process, base: str, within: float = 60.0) -> None:
    """Wait until ``trio-mcp serve`` at ``base`` says it is ready (its one server is healthy)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        process.check_alive()
        try:
            with urllib.request.urlopen(f"{base}/api/v1/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"{process.name} was not ready within {within:g}s:\n{process.tail()}")


# ---------------------------------------------------------------------------------------------
# targets and wrk
# ---------------------------------------------------------------------------------------------


@dataclass
class Target:
    key: str
    label: str
    url: str
    body: dict[str, Any]
    headers: dict[str, str]
    process: Process
    script: Path = Path()

    def check(self) -> None:
        """One request in Python: the target must answer ``hello``."""
        self.process.check_alive()
        status, answer = post(self.url, self.body, self.headers)
        result = answer.get("result") if isinstance(answer, dict) else None
        content = result.get("content") if isinstance(result, dict) else None
        text = content[0].get("text") if isinstance(content, list) and content else None
        if status != 200 or text != TEXT:
            raise SystemExit(f"{self.label} answered {status}: {str(answer)[:500]}")


def lua_long_string(text: str) -> str:
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def write_wrk_script(target: Target, directory: Path) -> Path:
    lines = ['wrk.method = "POST"', f"wrk.body = {lua_long_string(json.dumps(target.body))}"]
    for name, value in target.headers.items():
        lines.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    path = directory / f"{target.key}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class Sample:
    """One wrk run against one target."""

    requests: int
    rps: float
    p50: float
    p99: float
    errors: int
    cpu_ms: float
    """CPU milliseconds per request of the process hit (its whole process tree)."""
    backend_cpu_ms: float | None
    """The backend's CPU milliseconds per request, when it is not the process hit."""
    busy_cores: float
    """How many cores the whole machine kept busy during the run."""


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_wrk(output: str) -> tuple[int, float, float, float, int]:
    """(requests, requests/s, p50 s, p99 s, errors) from the report of ``wrk --latency``."""
    percentiles: dict[str, float] = {}
    for match in re.finditer(r"^\s*(50|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE):
        percentiles[match[1]] = _seconds(match[2], match[3])
    requests = re.search(r"^\s*(\d+) requests in ", output, re.MULTILINE)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    if requests is None or rps is None or set(percentiles) != {"50", "99"}:
        raise SystemExit(f"cannot read wrk's report:\n{output}")
    errors = 0
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non_2xx:
        errors += int(non_2xx[1])
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if sockets:
        errors += sum(int(n) for n in sockets.groups())
    return int(requests[1]), float(rps[1]), percentiles["50"], percentiles["99"], errors


def run_wrk(target: Target, connections: int, duration: int, threads: int, backend: Process | None) -> Sample:
    command = [
        "wrk",
        f"--threads={min(threads, connections)}",
        f"--connections={connections}",
        f"--duration={duration}s",
        "--timeout=30s",
        "--latency",
        f"--script={target.script}",
        target.url,
    ]
    pid = target.process.proc.pid
    cpu_before = tree_cpu_seconds(pid)
    backend_before = tree_cpu_seconds(backend.proc.pid) if backend else 0.0
    busy_before = machine_busy_seconds()
    wall_before = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=False)
    wall = time.monotonic() - wall_before
    busy_after = machine_busy_seconds()
    cpu = tree_cpu_seconds(pid) - cpu_before
    backend_cpu = tree_cpu_seconds(backend.proc.pid) - backend_before if backend else None
    if done.returncode:
        raise SystemExit(f"wrk exited with code {done.returncode}:\n{done.stdout}{done.stderr}")
    target.process.check_alive()
    requests, rps, p50, p99, errors = parse_wrk(done.stdout)
    per_request = 1000 / requests if requests else float("nan")
    return Sample(
        requests=requests,
        rps=rps,
        p50=p50,
        p99=p99,
        errors=errors,
        cpu_ms=cpu * per_request,
        backend_cpu_ms=None if backend_cpu is None else backend_cpu * per_request,
        busy_cores=(busy_after - busy_before) / wall,
    )


# ---------------------------------------------------------------------------------------------
# the bench venv
# ---------------------------------------------------------------------------------------------


def installed_fastmcp(venv: Path) -> str | None:
    """The fastmcp version installed in ``venv``, if any."""
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    done = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('fastmcp'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_bench_venv(venv: Path) -> str:
    """Create ``venv`` with FastMCP in it unless it has the version benchmarked; returns the version."""
    wanted = FASTMCP_REQUIREMENT.partition("==")[2]
    version = installed_fastmcp(venv)
    if version == wanted:
        return version
    print(f"installing {FASTMCP_REQUIREMENT} into {venv} (FastMCP is not a trio-mcp dependency) ...")
    steps = [[sys.executable, "-m", "venv", str(venv)]] if not (venv / "bin" / "python").exists() else []
    steps.append([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", FASTMCP_REQUIREMENT])
    for step in steps:
        if subprocess.run(step, check=False).returncode:
            raise SystemExit(f"could not set up the FastMCP environment: `{' '.join(step)}` failed")
    version = installed_fastmcp(venv)
    if version != wanted:
        raise SystemExit(f"{venv} has fastmcp {version}, not {wanted}")
    return version


# ---------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------


def start_targets(
    processes: Processes,
    *,
    bench_venv: Path | None,
    max_connections: int,
    workers: int,
) -> tuple[Process, list[Target]]:
    directory = processes.directory
    port = free_port()
    backend = processes.start(
        "backend", [sys.executable, "-m", "trio_mcp.demo_server", "--name", "backend", "--http", str(port)]
    )
    backend_url = f"http://127.0.0.1:{port}{MCP_PATH}"

    fleet = directory / "fleet.json"
    entry = {"url": backend_url, "maxConcurrency": max_connections}
    fleet.write_text(json.dumps({"mcpServers": {"backend": entry}}))
    serve_port = free_port()
    command = [
        sys.executable,
        "-m",
        "trio_mcp._cli",
        "serve",
        f"--config={fleet}",
        "--host=127.0.0.1",
        f"--port={serve_port}",
        "--state=memory",
        "--log-format=json",
        "--log-level=warning",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("TRIO_MCP_TOKEN", "TRIO_MCP_STATE")}
    if workers > 1:
        # The same application under hypercorn's own multi-process server: each worker process
        # opens a manager on the fleet file (web.app:app reads it from $TRIO_MCP_CONFIG).
        command = [
            sys.executable,
            "-m",
            "hypercorn",
            "--worker-class=trio",
            f"--workers={workers}",
            f"--bind=127.0.0.1:{serve_port}",
            "web.app:app",
        ]
        env["TRIO_MCP_CONFIG"] = str(fleet)

    wait_listening(backend, port)
    serve = processes.start("trio-mcp serve", command, env=env)
    proxy: Process | None = None
    proxy_port = free_port()
    if bench_venv is not None:
        proxy = processes.start(
            "FastMCP proxy",
            [
                str(bench_venv / "bin" / "python"),
                str(Path(__file__).resolve()),
                "--fastmcp-proxy",
                backend_url,
                "--port",
                str(proxy_port),
            ],
            env={**os.environ, "FASTMCP_CHECK_FOR_UPDATES": "off", "FASTMCP_SHOW_SERVER_BANNER": "false"},
        )

    serve_base = f"http://127.0.0.1:{serve_port}"
    wait_ready(serve, serve_base)
    targets = [
        Target("backend", "backend alone", backend_url, MCP_BODY, MCP_HEADERS, backend),
        Target("trio-mcp", "trio-mcp serve", serve_base + API_PATH, API_BODY, API_HEADERS, serve),
    ]
    if proxy is not None:
        wait_listening(proxy, proxy_port)
        proxy_url = f"http://127.0.0.1:{proxy_port}{MCP_PATH}"
        targets.append(Target("fastmcp", "FastMCP proxy", proxy_url, MCP_BODY, MCP_HEADERS, proxy))
    for target in targets:
        target.check()
        target.script = write_wrk_script(target, directory)
    return backend, targets


def _range(values: Sequence[float], spec: str) -> str:
    low, high = min(values), max(values)
    if format(low, spec) == format(high, spec):
        return format(low, spec)
    return f"{low:{spec}}-{high:{spec}}"


COMPARISONS = [("backend", "backend alone", 0.8), ("fastmcp", "FastMCP proxy", 2.0)]
"""(target key, label, the least requests/s ratio trio-mcp serve / that target aimed at)."""


def paired_ratios(samples: dict[tuple[str, int], list[Sample]], other: str, connections: int) -> list[float]:
    """trio-mcp serve's requests/s over ``other``'s, run by run, at ``connections`` connections."""
    return [
        s.rps / o.rps if o.rps else float("nan")
        for s, o in zip(samples[("trio-mcp", connections)], samples[(other, connections)], strict=True)
    ]


def print_results(
    targets: list[Target], connection_counts: list[int], samples: dict[tuple[str, int], list[Sample]]
) -> None:
    header = (
        f"{'conns':>5}  {'target':<15}{'req/s':>13}{'p50 ms':>13}{'p99 ms':>13}"
        f"{'CPU ms/req':>12}{'backend ms/req':>16}{'busy cores':>12}{'errors':>8}"
    )
    print(header)
    print("-" * len(header))
    for connections in connection_counts:
        for target in targets:
            runs = samples[(target.key, connections)]
            backend_ms = [s.backend_cpu_ms for s in runs if s.backend_cpu_ms is not None]
            print(
                f"{connections:>5}  {target.label:<15}"
                f"{_range([s.rps for s in runs], '.0f'):>13}"
                f"{_range([s.p50 * 1000 for s in runs], '.1f'):>13}"
                f"{_range([s.p99 * 1000 for s in runs], '.1f'):>13}"
                f"{statistics.median(s.cpu_ms for s in runs):>12.2f}"
                f"{(format(statistics.median(backend_ms), '.2f') if backend_ms else '-'):>16}"
                f"{statistics.median(s.busy_cores for s in runs):>12.2f}"
                f"{sum(s.errors for s in runs):>8}"
            )
    print(
        "(CPU ms/req: the process hit; backend ms/req: the backend behind it; busy cores: the whole "
        f"machine, {os.cpu_count()} cores; errors: non-2xx answers and socket errors)"
    )
    print()
    keys = {t.key for t in targets}
    for other, label, goal in COMPARISONS:
        if other not in keys:
            print(f"trio-mcp serve / {label}: not measured")
            continue
        parts = []
        for connections in connection_counts:
            ratios = paired_ratios(samples, other, connections)
            verdict = "ok" if all(r >= goal for r in ratios) else "below"
            parts.append(f"{connections} conns {_range(ratios, '.2f')} ({verdict})")
        print(f"trio-mcp serve / {label}, req/s per run: {'; '.join(parts)}   target >= {goal:g}")


def write_chart(
    path: Path,
    targets: list[Target],
    connection_counts: list[int],
    samples: dict[tuple[str, int], list[Sample]],
    duration: float,
) -> None:
    """Requests/s per target and trio-mcp serve's ratios as a PNG at ``path`` (if matplotlib is there)."""
    if not _charts.available():
        return
    keys = {t.key for t in targets}
    _charts.http_api(
        path,
        connection_counts=connection_counts,
        rps={t.label: {c: [s.rps for s in samples[(t.key, c)]] for c in connection_counts} for t in targets},
        ratios={
            label: {c: paired_ratios(samples, other, c) for c in connection_counts}
            for other, label, _ in COMPARISONS
            if other in keys
        },
        goals={label: goal for other, label, goal in COMPARISONS if other in keys},
        duration=duration,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="measured runs per target and connection count")
    parser.add_argument("--duration", type=int, default=10, help="seconds of each wrk run")
    parser.add_argument("--connections", default="16,64", help="comma-separated connection counts")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (the load shares the machine)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load per target before measuring")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="N > 1: the API served by `hypercorn --worker-class trio --workers N web.app:app` (N"
        " processes, each its own manager of the same fleet) in place of `trio-mcp serve`",
    )
    parser.add_argument("--no-fastmcp", action="store_true", help="leave the FastMCP proxy out")
    parser.add_argument(
        "--bench-venv",
        type=Path,
        default=BENCH_VENV,
        metavar="DIR",
        help=f"the virtual environment FastMCP runs from (default: {BENCH_VENV.relative_to(REPO)})",
    )
    parser.add_argument("--smoke", action="store_true", help="one 2 s run at 16 connections (a quick check)")
    parser.add_argument(
        "--chart",
        type=Path,
        metavar="PATH",
        help="also write a PNG chart of the results to PATH, e.g. docs/bench/http_api.png "
        "(needs matplotlib: pip install -e '.[bench]'; no chart unless given)",
    )
    # Internal: the FastMCP proxy process, run by .bench-venv's Python.
    parser.add_argument("--fastmcp-proxy", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.fastmcp_proxy is not None:
        serve_fastmcp_proxy(args.fastmcp_proxy, args.port)
        return

    if shutil.which("wrk") is None:
        print(WRK_MISSING, file=sys.stderr)
        raise SystemExit(2)
    if args.workers < 1:
        parser.error("--workers must be >= 1")

    fastmcp_version: str | None = None
    if args.smoke:
        runs, duration, connection_counts, warmup = 1, 2, [16], 1
        fastmcp_version = None if args.no_fastmcp else installed_fastmcp(args.bench_venv)
        if fastmcp_version is None and not args.no_fastmcp:
            print(f"(smoke: no FastMCP proxy: {args.bench_venv} has no FastMCP)")
    else:
        runs, duration, warmup = args.runs, args.duration, args.warmup
        connection_counts = [int(c) for c in args.connections.split(",") if c.strip()]
        if not args.no_fastmcp:
            fastmcp_version = ensure_bench_venv(args.bench_venv)
    if runs < 1 or duration <= 0 or not connection_counts or min(connection_counts) < 1:
        parser.error("--runs, --duration and --connections must be positive")

    # A terminated driver still stops its processes (see the finally below).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    samples: dict[tuple[str, int], list[Sample]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-http-api-") as tmp:
        processes = Processes(Path(tmp))
        try:
            backend, targets = start_targets(
                processes,
                bench_venv=None if fastmcp_version is None else args.bench_venv.resolve(),
                max_connections=max(connection_counts),
                workers=args.workers,
            )
            print(
                f"POST {API_PATH} and its equivalents: {runs} run(s) x {duration:g} s per target and "
                f"connection count, wrk {args.threads} thread(s), targets interleaved run by run"
            )
            print(f"  backend alone:  MCPServer echo under hypercorn (trio), pid {backend.proc.pid}")
            serve = targets[1].process.proc.pid
            print(
                f"  trio-mcp serve: pid {serve}, "
                + ("1 process, " if args.workers == 1 else f"hypercorn web.app:app, {args.workers} workers, ")
                + f"maxConcurrency {max(connection_counts)}, MCP {PROTOCOL_VERSION} to the backend"
            )
            if fastmcp_version is not None:
                print(
                    f"  FastMCP proxy:  fastmcp {fastmcp_version}, create_proxy(connected Client): one "
                    f"backend session reused, uvicorn, pid {targets[2].process.proc.pid}"
                )
            print(flush=True)
            for target in targets:
                run_wrk(target, max(connection_counts), warmup, args.threads, None)
            for run in range(runs):
                order = targets[run % len(targets) :] + targets[: run % len(targets)]
                for connections in connection_counts:
                    for target in order:
                        other = backend if target.process is not backend else None
                        sample = run_wrk(target, connections, duration, args.threads, other)
                        samples.setdefault((target.key, connections), []).append(sample)
            for target in targets:
                target.check()
        finally:
            processes.stop_all()
    print_results(targets, connection_counts, samples)
    if args.chart is not None:
        write_chart(args.chart, targets, connection_counts, samples, duration)
    if args.smoke:
        bad = [k for k, runs_of in samples.items() if any(s.requests == 0 or s.errors for s in runs_of)]
        if bad:
            raise SystemExit(f"smoke run failed: no answers or errors for {bad}")


if __name__ == "__main__":
    main()
