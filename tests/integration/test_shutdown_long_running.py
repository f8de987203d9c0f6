"""SIGTERM while a real long-running tool is in flight: ``trio-mcp serve`` answers it.

Regression: one ``@modelcontextprotocol/server-everything`` over stdio, a
``trigger-long-running-operation`` call through ``POST /invoke/tool``, SIGTERM a second later.
Progress notifications extended the attempt's deadline past the drain deadline, so the attempt
outlived hypercorn's graceful timeout and the client got an empty reply instead of the
documented 503 whose last attempt says ``shutdown``.

Real processes, sockets and clock (no autojump). Skipped without the reference servers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from _support import free_port, kill_leftovers, pid_alive
from test_reference_servers import EVERYTHING, needs_everything
from test_serve_e2e import API, _descendants, _wait_until_ready

pytestmark = pytest.mark.integration

GRACE = 2.0
"""``--shutdown-grace``: seconds the in-flight call gets after SIGTERM."""

TOOL = "trigger-long-running-operation"
# A progress notification every 2 s: the one at ~2 s lands between the SIGTERM (1 s) and the
# drain deadline (1 s + GRACE), which is what pushed the deadline out. (With 4 steps the first
# notification would come at 5 s, after the drain deadline, and the test would not catch it.)
ARGUMENTS = {"duration": 20, "steps": 10}


@needs_everything
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and /proc")
async def test_sigterm_answers_long_running_tool_with_shutdown_503(tmp_path: Path) -> None:
    config = tmp_path / "servers.json"
    config.write_text(
        json.dumps({"mcpServers": {"everything": {"command": str(EVERYTHING), "args": ["stdio"]}}})
    )
    port = free_port()
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "TRIO_MCP_TOKEN"}
    command = [sys.executable, "-m", "trio_mcp._cli", "serve", "--port", str(port)]
    command += ["--config", str(config), "--shutdown-grace", str(GRACE)]
    with log.open("wb") as out:
        proc = await trio.lowlevel.open_process(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env
        )
    children: set[int] = set()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            await _wait_until_ready(client, proc, log)
            children = _descendants(proc.pid)
            assert children, "the everything server should run as a child of trio-mcp"

            outcome: dict[str, Any] = {}
            answered = trio.Event()

            async def invoke() -> None:
                body = {
                    "tool_name": TOOL,
                    "arguments": ARGUMENTS,
                    "timeout_seconds": 30,
                    "request_id": "long-running",
                }
                try:
                    outcome["response"] = await client.post(f"{API}/invoke/tool", json=body)
                except httpx.TransportError as exc:
                    outcome["error"] = exc
                outcome["at"] = trio.current_time()
                answered.set()

            async with trio.open_nursery() as nursery:
                posted = trio.current_time()
                nursery.start_soon(invoke)
                # The call must really be in flight (sent to the server) before the signal.
                with trio.fail_after(1):
                    while True:
                        events = (await client.get(f"{API}/invocation-events?request_id=long-running")).json()
                        if any(e["kind"] == "invoke_start" for e in events["events"]):
                            break
                        await trio.sleep(0.05)
                await trio.sleep_until(posted + 1)
                children |= _descendants(proc.pid)
                proc.send_signal(signal.SIGTERM)
                signalled = trio.current_time()
                with trio.fail_after(GRACE + 5):
                    await answered.wait()

        assert "error" not in outcome, f"no answer, the connection was dropped: {outcome['error']!r}"
        response: httpx.Response = outcome["response"]
        waited = outcome["at"] - signalled
        assert response.status_code == 503, response.text
        detail = response.json()["detail"]
        last = detail["attempts"][-1]
        assert last["error_category"] == "shutdown", detail
        assert last["sent"] is True, detail
        assert GRACE - 0.2 <= waited <= GRACE + 1.5, f"answered {waited:.2f}s after SIGTERM"

        with trio.fail_after(10):
            await proc.wait()
        output = await trio.Path(log).read_text()
        assert proc.returncode == 0, output
        assert [pid for pid in children if pid_alive(pid)] == []
    finally:
        await kill_leftovers(proc, children)
