"""F6: SIGTERM to a real ``trio-mcp serve`` with hundreds of invocations in flight.

``trio-mcp serve`` supervises a few stdio ledger servers (``ledger_server.py``); a client
posts ``invocations`` calls at once over HTTP (``charge`` and ``lookup``), waits until the
servers' ledger shows every one of them executing, and sends SIGTERM. From then on each call
takes 0 to twice the shutdown grace (some are held forever), so some finish within the grace
and the others are abandoned by it. Every call must get its answer (N1) by the shutdown grace
+ 2 s (N4), the answers must agree with the ledger (N2, N3), the process must exit with code 0
within the grace + 2 s with every server process gone, and the client process must be back to
its baseline (N5).
Real processes, sockets and clock.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio
from _kills import SERVER_SCRIPT, LedgerFile
from _ports import free_port

from trio_mcp.testing import Baseline, History
from trio_mcp.testing._baseline import _descendants

API = "/api/v1/mcp"
IDEMPOTENT = {"charge": False, "lookup": True}


@dataclass(frozen=True, kw_only=True)
class SigtermConfig:
    invocations: int = 500
    servers: int = 4
    grace: float = 2.0
    """``--shutdown-grace``."""
    hold_share: float = 0.2
    """Calls that would never finish by themselves."""
    seed: int = 1


@dataclass(kw_only=True)
class SigtermReport:
    config: SigtermConfig
    history: History
    statuses: Counter[int]
    exit_code: int | None
    exited_after: float
    last_answer_after: float
    children_left: list[int]
    in_flight: int
    """Calls executing on a server when SIGTERM was sent."""
    real_seconds: float

    def table(self) -> str:
        c = self.config
        return self.history.table(
            f"F6 SIGTERM to trio-mcp serve (seed {c.seed}): {c.invocations} invocations in flight "
            f"over {c.servers} stdio servers, --shutdown-grace {c.grace:g}",
            faults={"SIGTERM": 1},
            notes={
                "in flight at SIGTERM": self.in_flight,
                "HTTP answers": ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items())),
                "last answer": f"{self.last_answer_after:.2f} s after SIGTERM",
                "exit": f"code {self.exit_code}, {self.exited_after:.2f} s after SIGTERM "
                f"(bound: grace + 2 = {c.grace + 2:g} s)",
                "server processes left": len(self.children_left),
                "duration": f"{self.real_seconds:.1f} real s",
            },
        )

    def problems(self) -> list[str]:
        """What broke besides the history's invariants: exit code, exit time, processes left."""
        out = []
        bound = self.config.grace + 2.0
        if self.exit_code != 0:
            out.append(f"exit code {self.exit_code}")
        if self.exited_after > bound:
            out.append(f"exited {self.exited_after:.2f} s after SIGTERM (bound {bound:g} s)")
        if self.children_left:
            out.append(f"processes left: {self.children_left}")
        return out


def write_config(path: Path, ledger: Path, gate: Path, servers: int) -> None:
    entries = {
        f"t{i}": {
            "command": sys.executable,
            "args": [str(SERVER_SCRIPT), "--name", f"t{i}", "--ledger", str(ledger), "--gate", str(gate)],
            "idempotentTools": ["lookup"],
            "maxConcurrency": 1000,
        }
        for i in range(servers)
    }
    path.write_text(json.dumps({"mcpServers": entries}))


async def _wait_until_ready(client: httpx.AsyncClient, proc: trio.Process, servers: int) -> None:
    with trio.fail_after(60):
        while proc.returncode is None:
            try:
                response = await client.get(f"{API}/servers")
                listed = response.json()["servers"] if response.status_code == 200 else []
                if len(listed) == servers and all(s["adapter_session"]["active"] for s in listed):
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.1)  # a process starting up has no readiness event to wait on
    raise AssertionError(f"trio-mcp serve exited early with code {proc.returncode}")


async def run_sigterm(config: SigtermConfig, workdir: Path) -> SigtermReport:
    """Run F6 (real clock); files go to ``workdir``."""
    real_start = time.perf_counter()
    rng = random.Random(config.seed)
    ledger = LedgerFile(workdir / "ledger.txt")
    servers_json = workdir / "servers.json"
    gate = workdir / "gate"
    write_config(servers_json, ledger.path, gate, config.servers)
    port = free_port()
    history = History()
    statuses: Counter[int] = Counter()
    names = [f"t{i}" for i in range(config.servers)]
    baseline = Baseline.capture()
    # Not measured by coverage: its tracing multiplies the CPU cost of each of the 500 answers
    # written at the end of the grace, and N4 is about the product's timing, not the tracer's.
    env = {k: v for k, v in os.environ.items() if k != "TRIO_MCP_TOKEN" and not k.startswith("COVERAGE_")}
    command = [sys.executable, "-m", "trio_mcp._cli", "serve", "--port", str(port)]
    command += ["--config", str(servers_json), "--shutdown-grace", str(config.grace)]
    # Every call in flight at once: none refused as one too many.
    command += ["--max-invocations", str(config.invocations + 100)]
    log = workdir / "serve.log"
    with log.open("wb") as out:
        proc = await trio.lowlevel.open_process(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env
        )
    children: set[int] = set()
    signalled = answered_last = exited = 0.0
    in_flight = 0
    try:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        timeout = httpx.Timeout(60.0)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=timeout
        ) as client:
            await _wait_until_ready(client, proc, config.servers)
            children = _descendants(proc.pid)[0]

            async def invoke(number: int) -> None:
                nonlocal answered_last
                tool = rng.choice(("charge", "lookup"))
                first, second = rng.sample(names, 2)
                invocation_id = f"sigterm-{number}"
                delay = rng.uniform(0.0, 2 * config.grace) or 0.001  # counted from the SIGTERM
                arguments: dict[str, Any] = {"invocation_id": invocation_id, "delay": delay}
                if rng.random() < config.hold_share:
                    arguments.update(hold="after_start", hold_on=first)
                history.invoke(tool, idempotent=IDEMPOTENT[tool], timeout=30.0, invocation_id=invocation_id)
                body = {
                    "tool_name": tool,
                    "arguments": arguments,
                    "preferred_servers": [first, second],
                    "timeout_seconds": 30,
                    "request_id": invocation_id,
                }
                try:
                    response = await client.post(f"{API}/invoke/tool", json=body)
                except httpx.TransportError:
                    # No answer at all: the invocation has no outcome (N1 will say so).
                    statuses[0] += 1
                    return
                answered_last = max(answered_last, trio.current_time())
                statuses[response.status_code] += 1
                _record(history, invocation_id, response)

            async with trio.open_nursery() as nursery:
                for number in range(config.invocations):
                    nursery.start_soon(invoke, number)
                # Every call in flight: each has started executing on a server.
                started = 0
                with trio.move_on_after(60):
                    while started < config.invocations:
                        await trio.sleep(0.02)  # a file has no change event to wait on
                        ledger.refresh()
                        started = len({i for _, _, e, _, i in ledger.lines if e == "start"})
                if started < config.invocations:
                    raise AssertionError(
                        f"only {started} of {config.invocations} calls started executing within 60 s "
                        f"(HTTP answers so far: {dict(statuses)})"
                    )
                children |= _descendants(proc.pid)[0]
                proc.send_signal(signal.SIGTERM)
                signalled = trio.current_time()
                gate.touch()
                ledger.refresh()
                in_flight = len({i for _, _, e, _, i in ledger.lines if e == "start"}) - len(
                    {i for _, _, e, _, i in ledger.lines if e == "done"}
                )
                history.drain(at=signalled, grace=config.grace, slack=2.0)
            with trio.move_on_after(config.grace + 10):
                await proc.wait()
            exited = trio.current_time()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    children_left = [pid for pid in sorted(children) if _alive(pid)]
    for pid in children_left:
        os.kill(pid, signal.SIGKILL)
    for server, executions in ledger.executions().items():
        history.load_ledger(server, executions)
    await history.check_baseline(baseline, groups=children)
    return SigtermReport(
        config=config,
        history=history,
        statuses=statuses,
        exit_code=proc.returncode,
        exited_after=exited - signalled,
        last_answer_after=answered_last - signalled,
        children_left=children_left,
        in_flight=in_flight,
        real_seconds=time.perf_counter() - real_start,
    )


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


def _record(history: History, invocation_id: str, response: httpx.Response) -> None:
    body = response.json()
    if response.status_code == 200:
        sent = [a["server"] for a in body["attempts"] if a["sent"] and a["stage"] != "select"]
        text = body["result"]["content"][0]["text"]
        history.ok(invocation_id, server=body["server"], answered_by=text.split(" ", 1)[0], sent_to=sent)
        return
    detail = body.get("detail", {})
    attempts = detail.get("attempts") or []
    sent = [a["server"] for a in attempts if a["sent"] and a["stage"] != "select"]
    reason = f"{response.status_code} {detail.get('error')}: {detail.get('message')}"
    if detail.get("error") == "invocation_failed" and detail.get("outcome") == "failed":
        history.fail(invocation_id, reason=reason, sent_to=sent)
    elif detail.get("error") in ("manager_closed", "busy", "rate_limited"):
        # Refused before it started.
        history.fail(invocation_id, reason=reason, sent_to=())
    else:
        history.info(invocation_id, reason=reason, sent_to=sent if attempts else None)
