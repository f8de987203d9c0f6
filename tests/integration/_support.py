"""Helpers for the real-clock integration tests: demo servers, ports, process checks."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from _ports import free_port
from mcp.server.mcpserver import MCPServer

import trio_mcp
from trio_mcp.demo_server import CHILD_PIDFILE_ENV, LEDGER_ENV, build_server, serve_http

FAST = trio_mcp.ServerPolicy(
    health_interval=0.5,
    probe_timeout=2,
    handshake_timeout=10,
    backoff=trio_mcp.BackoffPolicy(initial=0.2, cap=1, jitter=0),
)
"""Probe often, reconnect fast: what the real-clock tests run with."""


def policy(**overrides: Any) -> trio_mcp.ServerPolicy:
    """:data:`FAST` with ``overrides``."""
    return dataclasses.replace(FAST, **overrides)


def coverage_env() -> dict[str, str]:
    """The coverage settings of this run (``COVERAGE_*``; empty when not measuring), for the
    environment of a stdio server: a stdio server gets only a minimal environment plus its
    configured ``env``, so without these ``coverage run`` would not measure it."""
    return {k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")}


def stdio_demo(
    name: str,
    *,
    spawn_child: bool = False,
    child_pidfile: Path | None = None,
    ledger: Path | None = None,
    gate: Path | None = None,
    server_policy: trio_mcp.ServerPolicy = FAST,
) -> trio_mcp.ServerConfig:
    """A stdio ``python -m trio_mcp.demo_server --name NAME`` server.

    With ``gate``, the server starts only while that file exists (else its process exits at
    once with code 3): a way to keep a killed server down.
    """
    args = ["-m", "trio_mcp.demo_server", "--name", name]
    if spawn_child:
        args.append("--spawn-child")
    env: dict[str, str] = coverage_env()
    if child_pidfile is not None:
        env[CHILD_PIDFILE_ENV] = str(child_pidfile)
    if ledger is not None:
        env[LEDGER_ENV] = str(ledger)
    if gate is None:
        transport = trio_mcp.StdioTransport(command=sys.executable, args=tuple(args), env=env)
    else:
        script = 'if [ -e "$0" ]; then exec "$@"; else exit 3; fi'
        transport = trio_mcp.StdioTransport(
            command="sh", args=("-c", script, str(gate), sys.executable, *args), env=env
        )
    return trio_mcp.ServerConfig(name=name, transport=transport, policy=server_policy)


class PostFilter:
    """An ASGI app in front of an SDK server's: each POSTed JSON-RPC message goes to
    :meth:`answer` first, which may answer it itself (returns ``True``); the rest pass through."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def answer(self, sent: dict[str, Any], send: Any) -> bool:
        return False

    @staticmethod
    async def reply(send: Any, message: dict[str, Any]) -> None:
        """Answer with ``message`` as a JSON body (what :meth:`answer` sends to answer itself)."""
        payload = json.dumps(message).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        sent = json.loads(body) if body else {}
        if isinstance(sent, dict) and await self.answer(sent, send):
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def serve_asgi(nursery: trio.Nursery, app: Any) -> str:
    """Serve ``app`` with hypercorn (trio) in ``nursery``; its MCP endpoint's URL."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = config.errorlog = None
    await nursery.start(functools.partial(serve, app, config))
    return f"http://127.0.0.1:{port}/mcp"


async def kill_leftovers(proc: trio.Process, pids: set[int]) -> None:
    """Test cleanup: kill ``proc`` if it still runs and every process of ``pids`` still alive."""
    if proc.returncode is None:
        proc.kill()
        await proc.wait()
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, exited but not reaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return False
    state = stat[stat.rfind(b")") + 2 :].split()[0]
    return state not in (b"Z", b"X")


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return int(stat[stat.rfind(b")") + 2 :].split()[1])


async def wait_gone(*pids: int, within: float = 10.0) -> None:
    """Wait until none of ``pids`` is alive (fails after ``within`` seconds)."""
    with trio.fail_after(within):
        while True:  # processes have no exit event to wait on (they are not our children)
            if not any(pid_alive(pid) for pid in pids):
                return
            await trio.sleep(0.02)


async def wait_probed(
    manager: trio_mcp.Manager, name: str, *, within: float = 5.0
) -> trio_mcp.ServerSnapshot:
    """Wait until a periodic health probe of ``name`` has succeeded after its handshake.

    Polls: a probe that changes nothing but ``last_checked_at`` need not wake ``wait_for``.
    Call it before any invocation (an invocation's success also counts as a check).
    """
    interval = manager.config(name).policy.health_interval
    with trio.fail_after(within):
        while True:
            snap = manager.server(name)
            if (
                snap.status is trio_mcp.ServerStatus.HEALTHY
                and snap.handshaken_at is not None
                and snap.last_checked_at is not None
                # The handshake itself counts as a check; a probe comes a health interval later.
                and snap.last_checked_at - snap.handshaken_at >= interval / 2
            ):
                return snap
            await trio.sleep(0.05)


async def read_pidfile(path: Path, *, within: float = 10.0) -> int:
    """Wait for the demo server to write its child's pid to ``path``; returns it."""
    with trio.fail_after(within):
        while True:
            text = _read_if_exists(path)
            if text.endswith("\n"):
                return int(text)
            await trio.sleep(0.02)


def _read_if_exists(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


async def server_pid(manager: trio_mcp.Manager, name: str) -> int:
    """The process id of stdio server ``name`` (its ``pid`` tool)."""
    result = await manager.call_tool("pid", preferred=[name], failover="never", timeout=5)
    assert result.structured_content is not None
    pid: int = result.structured_content["result"]
    return pid


def text_of(result: object) -> str:
    content = getattr(result, "content", None) or getattr(result, "contents", None)
    assert content, result
    text: str = content[0].text
    return text


class HttpDemoServer:
    """A demo server served by hypercorn (trio) in the test's nursery, stoppable and restartable
    on the same port."""

    def __init__(
        self,
        nursery: trio.Nursery,
        name: str = "web",
        port: int | None = None,
        build: Callable[[str], MCPServer] = build_server,
    ) -> None:
        self.nursery = nursery
        self.name = name
        self.build = build
        """Makes the server anew at each start (so a restart forgets what the server learned)."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.starts = 0
        self._scope: trio.CancelScope | None = None
        self._stopped = trio.Event()

    async def start(self) -> None:
        self._scope = trio.CancelScope()
        self._stopped = trio.Event()
        await self.nursery.start(self._run, self._scope, self._stopped)
        self.starts += 1

    async def _run(
        self, scope: trio.CancelScope, stopped: trio.Event, *, task_status: trio.TaskStatus[list[str]]
    ) -> None:
        try:
            with scope:
                await serve_http(self.build(self.name), self.port, task_status=task_status)
        finally:
            stopped.set()

    async def stop(self) -> None:
        """Stop serving; returns once the port is closed."""
        assert self._scope is not None
        self._scope.cancel()
        await self._stopped.wait()

    def config(self, server_policy: trio_mcp.ServerPolicy = FAST) -> trio_mcp.ServerConfig:
        return trio_mcp.ServerConfig(
            name=self.name, transport=trio_mcp.HttpTransport(url=self.url), policy=server_policy
        )


def tasks_of(server: str) -> list[str]:
    """The names of the running tasks that belong to ``server``'s supervisor."""
    names: list[str] = []

    def walk(task: trio.lowlevel.Task) -> None:
        if task.name.startswith(f"{server}:"):
            names.append(task.name)
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    walk(trio.lowlevel.current_root_task())
    return sorted(names)


async def settled_tasks(server: str, wanted: list[str]) -> list[str]:
    """``server``'s tasks once they are ``wanted`` (tasks start and end a moment after the state
    that causes it is published), or as they are after a second."""
    for _ in range(100):
        if tasks_of(server) == wanted:
            break
        await trio.sleep(0.01)
    return tasks_of(server)
