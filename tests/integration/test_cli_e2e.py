"""``trio-mcp`` with real processes: stdio servers run one-shot from a config file, and the
same commands against a running ``trio-mcp serve``.

Real clock, real pipes and sockets. Most commands run in this process (``main([...])``, in a
worker thread where a trio run is already going); the entry point itself, and ``events
--follow`` ended by Ctrl-C, run as processes of their own.
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
from _support import coverage_env, free_port, kill_leftovers

from trio_mcp._cli import main

pytestmark = pytest.mark.integration

PROGRESS_SERVER = Path(__file__).with_name("_progress_server.py")
EVERYTHING = Path(__file__).resolve().parents[2] / ".tools" / "reference" / "node_modules" / ".bin"
EVERYTHING /= "mcp-server-everything"
TOKEN = "cli-e2e-token"
CLI = [sys.executable, "-m", "trio_mcp._cli"]


def write_fleet(path: Path, servers: dict[str, dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"mcpServers": servers}))
    return path


def demo(name: str) -> dict[str, Any]:
    return {
        "command": sys.executable,
        "args": ["-m", "trio_mcp.demo_server", "--name", name],
        "env": coverage_env(),
    }


def progress() -> dict[str, Any]:
    return {
        "command": sys.executable,
        "args": [str(PROGRESS_SERVER)],
        "env": coverage_env(),
        "healthInterval": 1,
    }


def missing(tmp_path: Path) -> dict[str, Any]:
    return {"command": str(tmp_path / "no-such-server")}


def json_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines()]


# -- one-shot on a config file ------------------------------------------------------------------------


async def test_call_echo_on_a_config_file_prints_the_result(tmp_path: Path) -> None:
    config = write_fleet(tmp_path / "servers.json", {"primary": demo("primary"), "backup": demo("backup")})
    result = await trio.run_process(
        [*CLI, "call", "echo", "text=hi", "--config", str(config)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"hi\n", b"")


def test_call_json_shows_progress_in_order_then_the_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_fleet(tmp_path / "servers.json", {"main": progress()})
    assert main(["call", "count", "steps=3", "--json", "--config", str(config)]) == 0
    lines = json_lines(capsys.readouterr().out)
    assert lines[:3] == [
        {"progress": 1, "total": 3, "message": "step 1 of 3"},
        {"progress": 2, "total": 3, "message": "step 2 of 3"},
        {"progress": 3, "total": 3, "message": "step 3 of 3"},
    ]
    assert len(lines) == 4
    assert lines[3]["server"] == "main"
    assert lines[3]["result"]["content"] == [{"type": "text", "text": "counted to 3"}]


def test_exit_codes_on_a_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_fleet(tmp_path / "servers.json", {"main": progress(), "broken": missing(tmp_path)})
    argv = ["--config", str(config)]

    assert main(["call", "fail", "reason=out of cheese", *argv]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "trio-mcp: fail answered with an error (server main):",
        "Error executing tool fail: out of cheese",
    ]

    assert main(["call", "count", "steps=1", "--prefer", "broken", "--failover", "never", *argv]) == 3
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("trio-mcp: tools/call count: ")
    assert err[2].split()[:5] == ["1", "broken", err[2].split()[2], "no", "no"]

    assert main(["call", "die", *argv]) == 4
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith("; outcome unknown: it may have executed")
    assert err[2].split()[:5] == ["1", "main", "invoke", "no", "yes"]


@pytest.mark.skipif(not EVERYTHING.exists(), reason="server-everything not installed")
def test_a_long_running_operation_of_server_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    everything = {"command": str(EVERYTHING), "args": ["stdio"], "handshakeTimeout": 20, "callTimeout": 20}
    config = write_fleet(tmp_path / "servers.json", {"everything": everything})
    argv = [
        "call",
        "trigger-long-running-operation",
        "duration=1",
        "steps=4",
        "--json",
        "--config",
        str(config),
    ]
    assert main(argv) == 0
    lines = json_lines(capsys.readouterr().out)
    assert [(line["progress"], line["total"]) for line in lines[:-1]] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert "completed" in lines[-1]["result"]["content"][0]["text"]


# -- against a running trio-mcp serve ----------------------------------------------------------------------


async def wait_until_ready(base_url: str, proc: trio.Process, log: Path) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
        with trio.fail_after(60):
            while True:  # a process has no readiness event to wait on
                if proc.returncode is not None:
                    raise AssertionError(f"trio-mcp exited early:\n{await trio.Path(log).read_text()}")
                try:
                    servers = (await client.get("/api/v1/mcp/servers")).json()["servers"]
                    if any(s["name"] == "main" and s["adapter_session"]["active"] for s in servers):
                        return
                except (httpx.TransportError, KeyError):
                    pass
                await trio.sleep(0.1)


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``trio-mcp ARGV`` in this process (in a worker thread: it runs trio itself)."""
    code = await trio.to_thread.run_sync(main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def read_until(stream: trio.abc.ReceiveStream, buffer: bytearray, needle: bytes) -> None:
    with trio.fail_after(20):
        while needle not in buffer:
            chunk = await stream.receive_some()
            assert chunk, f"the stream ended before {needle!r}: {bytes(buffer)!r}"
            buffer += chunk


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_the_commands_against_a_running_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_fleet(tmp_path / "servers.json", {"main": progress(), "broken": missing(tmp_path)})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    monkeypatch.delenv("TRIO_MCP_URL", raising=False)
    monkeypatch.setenv("TRIO_MCP_TOKEN", TOKEN)
    with log.open("wb") as out:
        proc = await trio.lowlevel.open_process(
            [*CLI, "serve", "--port", str(port), "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env={**os.environ, "TRIO_MCP_TOKEN": TOKEN},
        )
    follower: trio.Process | None = None
    try:
        await wait_until_ready(url, proc, log)
        api = ["--url", url]

        code, out, _ = await cli(capsys, "servers", "--json", *api)
        assert code == 0
        assert [s["name"] for s in json.loads(out)["servers"]] == ["main", "broken"]

        code, out, _ = await cli(capsys, "status", *api)
        assert code == 0
        rows = out.splitlines()
        assert rows[1].split()[:3] == ["main", "healthy", "ready"]
        assert rows[2].split()[0] == "broken" and rows[2].split()[1] != "healthy"

        code, out, _ = await cli(capsys, "tools", *api)
        assert code == 0
        assert sorted(row.split()[0] for row in out.splitlines()[1:]) == ["count", "die", "fail"]

        code, out, err = await cli(capsys, "call", "count", "steps=2", *api)
        assert (code, out, err) == (0, "counted to 2\n", "")
        code, out, _ = await cli(capsys, "call", "count", "steps=2", "--json", *api)
        (answer,) = json_lines(out)  # the API passes no progress on: only the result
        assert answer["result"]["content"] == [{"type": "text", "text": "counted to 2"}]

        code, _, err = await cli(capsys, "call", "fail", *api)
        assert (code, err.splitlines()[0]) == (1, "trio-mcp: fail answered with an error (server main):")

        code, _, err = await cli(
            capsys, "call", "count", "steps=1", "--prefer", "broken", "--failover", "never", *api
        )
        assert code == 3
        assert err.startswith("trio-mcp: tools/call count: ")

        code, _, err = await cli(capsys, "servers", "--token", "wrong", *api)
        assert (code, err) == (2, f"trio-mcp: the API at {url} refused the token\n")

        # events --follow in a process of its own, ended by Ctrl-C.
        follower = await trio.lowlevel.open_process(
            [*CLI, "events", "--follow", "--json", "--interval", "0.2", "--limit", "1", "--url", url],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "TRIO_MCP_TOKEN": TOKEN},
        )
        assert follower.stdout is not None
        seen = bytearray()
        await read_until(follower.stdout, seen, b"\n")
        code, _, _ = await cli(capsys, "call", "count", "steps=1", "--request-id", "followed", *api)
        assert code == 0
        await read_until(follower.stdout, seen, b'"kind": "invoke_success"')
        follower.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            await follower.wait()
        assert follower.returncode == 0
        followed = [e for e in json_lines(seen.decode()) if e.get("request_id") == "followed"]
        assert [(e["log"], e["kind"]) for e in followed][:2] == [
            ("invocation", "invoke_start"),
            ("invocation", "invoke_success"),
        ]

        # Last: the server's process dies while the call runs.
        code, _, err = await cli(capsys, "call", "die", *api)
        assert code == 4
        assert "outcome unknown" in err.splitlines()[0]

        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await proc.wait()
        assert proc.returncode == 0, await trio.Path(log).read_text()
    finally:
        if follower is not None:
            await kill_leftovers(follower, set())
        await kill_leftovers(proc, set())
