"""Reference servers written elsewhere: ``@modelcontextprotocol/server-everything`` (TypeScript SDK,
stdio and streamable HTTP) and ``mcp-server-time`` (PyPI), real processes and the real clock.

They are installed, pinned, by ``scripts/install_reference_servers.sh`` into ``.tools/reference``
(``.ci/run`` runs it); without it these tests are skipped.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from _support import free_port, policy, text_of
from mcp_types import (
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequestParams,
    ElicitResult,
    TextContent,
    ToolListChangedNotification,
)

import trio_mcp
from trio_mcp import ServerSnapshot, ServerStatus

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / ".tools" / "reference"
EVERYTHING = REFERENCE / "node_modules" / ".bin" / "mcp-server-everything"
TIME_SERVER = REFERENCE / "time-venv" / "bin" / "mcp-server-time"
INSTALL_HINT = "run scripts/install_reference_servers.sh first"

needs_everything = pytest.mark.skipif(
    not EVERYTHING.exists(), reason=f"@modelcontextprotocol/server-everything not installed: {INSTALL_HINT}"
)
needs_time = pytest.mark.skipif(
    not TIME_SERVER.exists(), reason=f"mcp-server-time not installed: {INSTALL_HINT}"
)

REF_POLICY = policy(protocol="auto", handshake_timeout=20, call_timeout=20)


def healthy(snap: ServerSnapshot) -> bool:
    return snap.status is ServerStatus.HEALTHY and snap.session.active


def everything_stdio(name: str = "everything") -> trio_mcp.ServerConfig:
    return trio_mcp.ServerConfig(
        name=name,
        transport=trio_mcp.StdioTransport(command=str(EVERYTHING), args=("stdio",)),
        policy=REF_POLICY,
        idempotent_tools=frozenset({"echo", "get-sum"}),
    )


class EverythingHttp:
    """``mcp-server-everything streamableHttp`` on a free port, in its own process group."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.process: trio.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def config(self, server_policy: trio_mcp.ServerPolicy = REF_POLICY) -> trio_mcp.ServerConfig:
        return trio_mcp.ServerConfig(
            name=self.name, transport=trio_mcp.HttpTransport(url=self.url), policy=server_policy
        )

    async def start(self) -> None:
        self.process = await trio.lowlevel.open_process(
            [str(EVERYTHING), "streamableHttp"],
            env={**os.environ, "PORT": str(self.port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        with trio.fail_after(15):
            while True:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", self.port)
                except OSError:
                    await trio.sleep(0.1)
                    continue
                await stream.aclose()
                return

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self.process.wait()


@asynccontextmanager
async def running(*servers: EverythingHttp) -> AsyncIterator[None]:
    try:
        for server in servers:
            await server.start()
        yield
    finally:
        for server in servers:
            await server.kill()


async def sample(server: str | None, params: CreateMessageRequestParams) -> CreateMessageResult:
    return CreateMessageResult(
        role="assistant",
        content=TextContent(type="text", text=f"sampled for {server}"),
        model="trio-mcp-test",
    )


async def elicit(server: str | None, params: ElicitRequestParams) -> ElicitResult:
    return ElicitResult(action="accept", content={"name": "Ada Lovelace"})


CLIENT = trio_mcp.ClientFeatures(sampling=sample, elicitation=elicit, roots=["file:///tmp"])


async def exercise_everything(
    manager: trio_mcp.Manager, name: str, changed: trio.Event, *, expect_notification: bool = True
) -> None:
    snap = await manager.wait_for(name, healthy)
    assert snap.capabilities is not None
    assert snap.capabilities.era == "legacy" and snap.capabilities.protocol_version.startswith("2025-")
    assert (snap.capabilities.server_name or "").startswith("mcp-servers/everything")

    # The conditional tools (sampling, elicitation, roots) are registered after the handshake
    # and announced with notifications/tools/list_changed: a new listing picks them up. (Over
    # streamable HTTP the server sends it on the standalone stream, which may not be open yet:
    # the listing must be right either way.)
    with trio.move_on_after(10 if expect_notification else 2):
        await changed.wait()
    assert changed.is_set() or not expect_notification
    tools = {entry.key for entry in await manager.list_tools()}
    assert {"echo", "get-sum", "trigger-long-running-operation"} <= tools
    assert {"trigger-sampling-request", "trigger-elicitation-request"} <= tools

    assert "hello" in text_of(await manager.call_tool("echo", {"message": "hello"}))
    assert "5" in text_of(await manager.call_tool("get-sum", {"a": 2, "b": 3}))

    progress: list[tuple[float, float | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total))

    result = await manager.call_tool(
        "trigger-long-running-operation", {"duration": 1, "steps": 4}, progress_callback=on_progress
    )
    assert "completed" in text_of(result)
    assert [p for p, _ in progress] == [1, 2, 3, 4] and progress[-1][1] == 4

    started = trio.current_time()
    with pytest.raises(trio_mcp.InvocationFailedError):
        await manager.call_tool("trigger-long-running-operation", {"duration": 30, "steps": 30}, timeout=1)
    assert trio.current_time() - started < 8

    # A server-initiated request answered by our handler, on both kinds.
    assert f"sampled for {name}" in text_of(
        await manager.call_tool("trigger-sampling-request", {"prompt": "hi", "maxTokens": 10})
    )
    elicited = await manager.call_tool("trigger-elicitation-request", {})
    assert "Ada Lovelace" in " ".join(b.text for b in elicited.content if isinstance(b, TextContent))

    resources = await manager.list_resources()
    assert resources
    uri = next(e.key for e in resources if e.key.startswith("demo://resource/static"))
    read = await manager.read_resource(uri)
    assert read.contents

    prompts = {entry.key for entry in await manager.list_prompts()}
    assert "simple-prompt" in prompts
    prompt = await manager.get_prompt("simple-prompt", {})
    assert prompt.messages


def list_changed_watcher() -> tuple[dict[str, Any], trio.Event]:
    changed = trio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ToolListChangedNotification):
            changed.set()

    return {"message_handler": on_message}, changed


@needs_everything
async def test_everything_over_stdio() -> None:
    options, changed = list_changed_watcher()
    with trio.fail_after(60):
        async with trio_mcp.open_manager([everything_stdio()], client=CLIENT, session_options=options) as m:
            await exercise_everything(m, "everything", changed)


@needs_everything
async def test_everything_over_streamable_http() -> None:
    options, changed = list_changed_watcher()
    server = EverythingHttp("everything-http")
    with trio.fail_after(60):
        async with (
            running(server),
            trio_mcp.open_manager([server.config()], client=CLIENT, session_options=options) as m,
        ):
            await exercise_everything(m, "everything-http", changed, expect_notification=False)


@needs_time
async def test_mcp_server_time_over_stdio() -> None:
    config = trio_mcp.ServerConfig(
        name="time",
        transport=trio_mcp.StdioTransport(command=str(TIME_SERVER), args=("--local-timezone", "UTC")),
        policy=REF_POLICY,
    )
    with trio.fail_after(60):
        async with trio_mcp.open_manager([config]) as manager:
            snap = await manager.wait_for("time", healthy)
            assert snap.capabilities is not None
            tools = {entry.key for entry in await manager.list_tools()}
            assert "get_current_time" in tools
            result = await manager.call_tool("get_current_time", {"timezone": "UTC"})
            assert "UTC" in text_of(result)


@needs_everything
async def test_mixed_era_fleet() -> None:
    """A TypeScript SDK 1.x server (handshake era) and an SDK 2.x server (2026-07-28) in one fleet."""
    modern = trio_mcp.ServerConfig(
        name="modern",
        transport=trio_mcp.StdioTransport(
            command=sys.executable, args=("-m", "trio_mcp.demo_server", "--name", "modern")
        ),
        policy=REF_POLICY,
    )
    with trio.fail_after(60):
        async with trio_mcp.open_manager([everything_stdio("legacy"), modern]) as manager:
            legacy_snap = await manager.wait_for("legacy", healthy)
            modern_snap = await manager.wait_for("modern", healthy)
            assert legacy_snap.capabilities is not None and modern_snap.capabilities is not None
            assert legacy_snap.capabilities.era == "legacy"
            assert legacy_snap.capabilities.protocol_version.startswith("2025-")
            assert modern_snap.capabilities.era == "modern"
            assert modern_snap.capabilities.protocol_version == "2026-07-28"
            assert "mixed" in text_of(
                await manager.call_tool("echo", {"message": "mixed"}, preferred=["legacy"])
            )
            assert text_of(await manager.call_tool("whoami", {}, preferred=["modern"])) == "modern"
            offered = {entry.key: entry.servers for entry in await manager.list_tools()}
            assert offered["whoami"] == ("modern",) and offered["get-sum"] == ("legacy",)
            snaps = {s.name: s.protocol_version for s in manager.servers()}
            assert snaps == {"legacy": legacy_snap.protocol_version, "modern": "2026-07-28"}


@needs_everything
async def test_failover_across_two_everything_instances() -> None:
    first, second = EverythingHttp("first"), EverythingHttp("second")
    fast = dataclasses.replace(REF_POLICY, call_timeout=5)
    with trio.fail_after(60):
        async with (
            running(first, second),
            trio_mcp.open_manager([first.config(fast), second.config(fast)]) as manager,
        ):
            await manager.wait_for("first", healthy)
            await manager.wait_for("second", healthy)
            uri = "demo://resource/static/document/architecture.md"
            outcome = await manager.invoke("resources/read", uri, preferred=["first", "second"])
            assert outcome.server == "first"

            await first.kill()
            outcome = await manager.invoke("resources/read", uri, preferred=["first", "second"])
            assert outcome.server == "second"
            assert outcome.attempts[0].server == "first" and not outcome.attempts[0].success

            # The failure was recorded: the next invocation prefers the healthy server.
            assert manager.server("first").status is not ServerStatus.HEALTHY
            outcome = await manager.invoke("resources/read", uri)
            assert outcome.server == "second"
            assert [a.server for a in outcome.attempts] == ["second"]
