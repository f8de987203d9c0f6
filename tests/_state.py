"""Helpers of the state store's tests: ``serve`` in this process or as a ``trio-mcp serve``
process, registration bodies, the store's log lines, and metric samples."""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio
from _ports import free_port

import trio_mcp
from web.serve import serve

API = "/api/v1/mcp"


@asynccontextmanager
async def serving(
    servers: Sequence[trio_mcp.ServerConfig], state: str | None, **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """``serve`` in this process until the block ends, and a client of it."""
    stop = trio.Event()
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                functools.partial(
                    serve,
                    servers,
                    port=0,
                    state=state,
                    shutdown_trigger=stop.wait,
                    allow_private_urls=True,
                    **options,
                )
            )
            try:
                async with httpx.AsyncClient(base_url=binds[0], timeout=30) as client:
                    yield client
            finally:
                stop.set()


def remote(name: str, **extra: Any) -> dict[str, Any]:
    """A registration of an HTTP server nobody answers for, which does not try to connect."""
    return {"name": name, "url": "http://127.0.0.1:9/mcp", "connectOnStart": False, **extra}


def demo(name: str) -> dict[str, Any]:
    """A registration of a stdio demo server (``python -m trio_mcp.demo_server``)."""
    body: dict[str, Any] = {
        "name": name,
        "command": sys.executable,
        "args": ["-m", "trio_mcp.demo_server", "--name", name],
    }
    coverage = {k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")}
    if coverage:
        body["env"] = coverage
    return body


async def names(client: httpx.AsyncClient) -> list[str]:
    return [s["name"] for s in (await client.get(f"{API}/servers")).json()["servers"]]


def metric(text: str, sample: str) -> float:
    """The value of ``sample`` (name and labels) in a Prometheus exposition."""
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert match, f"{sample} not in the metrics"
    return float(match.group(1))


class Records(logging.Handler):
    """The messages of one logger (attached directly: another test may have configured the
    ``trio_mcp`` logger not to propagate)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def capture(name: str = "trio_mcp.store") -> Iterator[Records]:
    """A fixture body: ``Records`` of logger ``name`` at DEBUG, for one test."""
    logger = logging.getLogger(name)
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _descendants(root: int) -> set[int]:
    children: dict[int, set[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), set()).add(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


@dataclass
class ServeProcess:
    """A ``trio-mcp serve`` process and a client of its API."""

    proc: trio.Process
    client: httpx.AsyncClient
    log: Path

    async def output(self) -> str:
        return await trio.Path(self.log).read_text()

    async def stop(self) -> int:
        """SIGTERM; returns the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            return await self.proc.wait()


@asynccontextmanager
async def serve_process(
    args: Sequence[str], log: Path, *, connected: bool = True
) -> AsyncIterator[ServeProcess]:
    """``trio-mcp serve --port P ARGS`` until the block ends (then SIGTERM, or SIGKILL for what
    is left); the block starts once the API answers and (``connected``) every server has a
    session."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "TRIO_MCP_TOKEN"}
    argv = [sys.executable, "-m", "trio_mcp._cli", "serve", "--port", str(port), *args]
    with log.open("ab") as out:
        proc = await trio.lowlevel.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env
        )
    seen: set[int] = set()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            served = ServeProcess(proc, client, log)
            with trio.fail_after(60):
                while True:
                    if proc.returncode is not None:
                        raise AssertionError(f"trio-mcp exited early:\n{await served.output()}")
                    try:
                        if (await client.get("/api/v1/health")).status_code == 200:
                            servers = (await client.get(f"{API}/servers")).json()["servers"]
                            if not connected or all(s["adapter_session"]["active"] for s in servers):
                                break
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.05)
            seen |= _descendants(proc.pid)
            yield served
            seen |= _descendants(proc.pid) if proc.returncode is None else set()
    finally:
        if proc.returncode is None:
            seen |= _descendants(proc.pid)
            proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(30):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        for pid in seen:
            try:  # a stdio server the process left behind (and not a process that took its pid)
                if b"trio_mcp" in await trio.Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError):
                pass
