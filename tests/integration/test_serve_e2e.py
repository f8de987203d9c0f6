"""``trio-mcp serve`` as a real process: hypercorn, two stdio demo servers, failover, SIGTERM.

Real clock, real sockets and pipes (no autojump: it would jump while we wait on I/O).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from _support import free_port, kill_leftovers, pid_alive

pytestmark = pytest.mark.integration

API = "/api/v1/mcp"


def _descendants(root: int) -> set[int]:
    children: dict[int, set[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, set()).add(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


async def _wait_until_ready(client: httpx.AsyncClient, proc: trio.Process, log: Path) -> None:
    with trio.fail_after(60):
        while True:
            if proc.returncode is not None:
                output = await trio.Path(log).read_text()
                raise AssertionError(f"trio-mcp exited early:\n{output}")
            try:
                if (await client.get("/api/v1/health")).status_code == 200:
                    servers = (await client.get(f"{API}/servers")).json()["servers"]
                    if all(s["adapter_session"]["active"] for s in servers):
                        return
            except httpx.TransportError:
                pass
            await trio.sleep(0.1)


def _few_open_files() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))


def _open_files_limit(pid: int) -> int:
    """The soft limit on open files of process ``pid``."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-files limit listed")


async def _invoke(client: httpx.AsyncClient, tool: str, **extra: Any) -> httpx.Response:
    body = {"tool_name": tool, "arguments": {}, "preferred_servers": ["primary", "backup"], **extra}
    return await client.post(f"{API}/invoke/tool", json=body)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and /proc")
async def test_serve_fails_over_and_shuts_down_cleanly(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "TRIO_MCP_TOKEN"}
    with log.open("wb") as out:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "trio_mcp._cli", "serve", "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=env,
            preexec_fn=_few_open_files,  # as many systems start a process
        )
    children: set[int] = set()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            await _wait_until_ready(client, proc, log)
            children = _descendants(proc.pid)
            assert len(children) >= 2
            # A fleet of a thousand needs more open files than 1,024: serve asks for them.
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            wanted = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
            assert _open_files_limit(proc.pid) == wanted

            response = await _invoke(client, "pid")
            assert response.status_code == 200, response.text
            first = response.json()
            assert first["server"] == "primary"
            primary_pid = first["result"]["structuredContent"]["result"]
            assert primary_pid in children

            # Kill the primary's process; the next call must be answered by the backup.
            os.kill(primary_pid, signal.SIGKILL)
            response = await _invoke(client, "whoami", failover="always", request_id="after-kill")
            assert response.status_code == 200, response.text
            second = response.json()
            assert second["server"] == "backup"
            assert second["result"]["content"][0]["text"] == "backup"
            failed = [a for a in second["attempts"] if not a["success"]]
            assert failed and all(a["server"] == "primary" for a in failed)

            events = (await client.get(f"{API}/invocation-events?request_id=after-kill")).json()["events"]
            kinds = [(e["server"], e["kind"]) for e in events]
            assert kinds[-2:] == [("backup", "invoke_start"), ("backup", "invoke_success")]
            # The primary either failed in this call or was skipped (its retry window was closed):
            # the attempt trace says which; its death is in the connection events either way.
            assert ("primary", "invoke_success") not in kinds
            changes = (await client.get(f"{API}/events?server=primary")).json()["events"]
            assert changes[-1]["to"] in ("degraded", "unreachable")
            primary = (await client.get(f"{API}/servers/primary")).json()
            assert primary["last_error"]

            children |= _descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await proc.wait()
        output = await trio.Path(log).read_text()
        assert proc.returncode == 0, output
        assert "SIGTERM received" in output
        assert [pid for pid in children if pid_alive(pid)] == []
    finally:
        await kill_leftovers(proc, children)


def _demo_entry(name: str) -> dict[str, Any]:
    return {"command": sys.executable, "args": ["-m", "trio_mcp.demo_server", "--name", name]}


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_json_logs_and_sighup_reload(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    config = tmp_path / "servers.json"
    config.write_text(json.dumps({"mcpServers": {"one": _demo_entry("one")}}))
    env = {k: v for k, v in os.environ.items() if k != "TRIO_MCP_TOKEN"}
    argv = ["serve", "--port", str(port), "--config", str(config), "--log-format", "json"]
    with log.open("wb") as out:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "trio_mcp._cli", *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=env,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            await _wait_until_ready(client, proc, log)
            before = (await client.get(f"{API}/servers/one")).json()["adapter_session"]["opened_at"]
            config.write_text(
                json.dumps({"mcpServers": {"one": _demo_entry("one"), "two": _demo_entry("two")}})
            )
            proc.send_signal(signal.SIGHUP)
            with trio.fail_after(30):
                names: list[str] = []
                while names != ["one", "two"]:
                    await trio.sleep(0.1)
                    names = [s["name"] for s in (await client.get(f"{API}/servers")).json()["servers"]]
            assert (await client.get(f"{API}/servers/one")).json()["adapter_session"]["opened_at"] == before
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await proc.wait()
        assert proc.returncode == 0
    finally:
        await kill_leftovers(proc, set())
    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    messages = [r["message"] for r in records]
    assert any(r.get("server") == "one" and "unknown -> healthy" in r["message"] for r in records), messages
    assert any(m.startswith("reload (SIGHUP): ") and "'added': ['two']" in m for m in messages), messages
    assert any(m.startswith("shutdown: ") for m in messages), messages
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
