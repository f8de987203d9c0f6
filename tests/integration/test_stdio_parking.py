"""Parked stdio connections: an idle 2026-07-28 server over stdio keeps its process and pipes
while its SDK session is closed; probes, the list-change stream and listings go over the pipes
without one, and a call opens a session over them again. Real SDK servers in real processes,
real clock."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import trio
from _support import (
    coverage_env,
    pid_alive,
    policy,
    server_pid,
    settled_tasks,
    stdio_demo,
    text_of,
    wait_gone,
)

import trio_mcp
from trio_mcp import ServerSnapshot, ServerStatus

pytestmark = pytest.mark.integration

PARK_AFTER = 0.4
PARKING = policy(health_interval=0.2, park_after=PARK_AFTER)
CHANGING_SERVER = Path(__file__).with_name("_changing_server.py")


def healthy(snap: ServerSnapshot) -> bool:
    return snap.status is ServerStatus.HEALTHY and snap.session.active


def parked(snap: ServerSnapshot) -> bool:
    return healthy(snap) and snap.session.parked


def tasks(server: str, *names: str) -> list[str]:
    return sorted(f"{server}: {name}" for name in names)


PIPES = ("read stderr", "read stdout", "watch process")
PARKED = (*PIPES, "connection", "health probes", "listen")
SERVING = (*PARKED, "cancel notices", "catalog", "park when idle", "re-handshake", "watch connection")


async def checked_twice(manager: trio_mcp.Manager, name: str) -> None:
    """Wait until ``name`` was checked twice more (its probes go on)."""
    first = manager.server(name).last_checked_at
    seen = 0
    while seen < 2:
        await trio.sleep(0.05)
        now = manager.server(name).last_checked_at
        if now is not None and now != first:
            seen, first = seen + 1, now


async def test_an_idle_stdio_server_parks_with_its_process_and_a_call_opens_a_session_over_it() -> None:
    """The handshake goes over the pipes without a session: the connection comes up parked
    with the reader tasks of its pipes, its probes and its list-change stream, and is probed.
    A call opens a session over the same process (no new handshake: the call is the only
    attempt); idle for ``park_after``, the session closes again and the process stays."""
    with trio.fail_after(30):
        async with trio_mcp.open_manager([stdio_demo("a", server_policy=PARKING)]) as manager:
            first = await manager.wait_for("a", parked)
            assert await settled_tasks("a", tasks("a", *PARKED)) == tasks("a", *PARKED)
            await checked_twice(manager, "a")
            assert manager.server("a").session.parked

            result = await manager.invoke("tools/call", "add", {"a": 2, "b": 3})
            assert result.result.structured_content == {"result": 5}
            assert [(a.server, a.stage, a.success) for a in result.attempts] == [("a", "invoke", True)]
            assert not manager.server("a").session.parked
            assert await settled_tasks("a", tasks("a", *SERVING)) == tasks("a", *SERVING)

            pid = await server_pid(manager, "a")
            again = await manager.wait_for("a", parked)
            assert again.session.session_id == first.session.session_id
            assert await settled_tasks("a", tasks("a", *PARKED)) == tasks("a", *PARKED)
            await checked_twice(manager, "a")
            assert await server_pid(manager, "a") == pid  # the same process all along
        assert not pid_alive(pid)


async def test_a_list_change_while_parked_is_heard_and_listed_without_a_session(tmp_path: Path) -> None:
    """The list-change stream is held over the pipes while parked: a tool the server adds is
    listed without opening a session, and a call is routed to it."""
    trigger = tmp_path / "add-late"
    env = {**coverage_env(), "TRIO_MCP_TEST_TRIGGER": str(trigger)}
    transport = trio_mcp.StdioTransport(command=sys.executable, args=(str(CHANGING_SERVER),), env=env)
    config = trio_mcp.ServerConfig(name="c", transport=transport, policy=PARKING)
    with trio.fail_after(30):
        async with trio_mcp.open_manager([config]) as manager:
            first = await manager.wait_for("c", parked)
            assert manager.candidates("tools/call", "late") == []
            trigger.touch()

            def routed(_: ServerSnapshot) -> bool:
                return manager.candidates("tools/call", "late") == ["c"]

            snap = await manager.wait_for("c", routed)
            assert snap.session.parked
            assert snap.session.session_id == first.session.session_id
            assert await settled_tasks("c", tasks("c", *PARKED)) == tasks("c", *PARKED)
            assert text_of(await manager.call_tool("late")) == "late"


async def test_a_stdio_server_killed_while_parked_is_dropped_at_once_and_recovers() -> None:
    """The pipes' readers see a parked server's process exit: the connection is dropped as
    ``process_exited`` at once (not at the next probe), and a new process is started."""
    with trio.fail_after(30):
        async with trio_mcp.open_manager([stdio_demo("a", server_policy=PARKING)]) as manager:
            await manager.wait_for("a", healthy)
            pid = await server_pid(manager, "a")
            await manager.wait_for("a", parked)
            os.kill(pid, signal.SIGKILL)
            killed_at = trio.current_time()
            lost = await manager.wait_for("a", lambda s: s.status is not ServerStatus.HEALTHY)
            assert trio.current_time() - killed_at < 1.0
            assert lost.last_error_category == "process_exited"
            assert lost.last_error is not None and "code -9" in lost.last_error
            await manager.wait_for("a", lambda s: healthy(s) and s.status is not ServerStatus.DEGRADED)
            assert text_of(await manager.call_tool("whoami")) == "a"
            assert await server_pid(manager, "a") != pid
            await wait_gone(pid, within=1)


def changing_server(name: str, server_policy: trio_mcp.ServerPolicy, **env: str) -> trio_mcp.ServerConfig:
    """``_changing_server.py`` over stdio, with ``env`` (e.g. ``TRIO_MCP_TEST_TRIGGER``)."""
    transport = trio_mcp.StdioTransport(
        command=sys.executable, args=(str(CHANGING_SERVER),), env={**coverage_env(), **env}
    )
    return trio_mcp.ServerConfig(name=name, transport=transport, policy=server_policy)


async def test_a_legacy_stdio_server_parks_too_and_is_probed_with_pings_over_its_pipes() -> None:
    """A 2025-11-25 server keeps its session's state in its process: idle, its connection closes
    the SDK session all the same, probes it with ``ping`` over the pipes, and a call opens a
    session again that adopts the ``initialize`` answer (no second handshake)."""
    config = stdio_demo(
        "a", server_policy=policy(health_interval=0.2, park_after=PARK_AFTER, protocol="legacy")
    )
    with trio.fail_after(30):
        async with trio_mcp.open_manager([config]) as manager:
            snap = await manager.wait_for("a", healthy)
            assert snap.capabilities is not None and snap.capabilities.era == "legacy"
            pid = await server_pid(manager, "a")
            await manager.wait_for("a", parked)
            legacy_parked = tasks("a", *PIPES, "connection", "health probes")
            assert await settled_tasks("a", legacy_parked) == legacy_parked
            await checked_twice(manager, "a")
            assert manager.server("a").session.parked

            result = await manager.invoke("tools/call", "whoami")
            assert text_of(result.result) == "a"
            assert [(a.server, a.stage, a.success) for a in result.attempts] == [("a", "invoke", True)]
            assert await server_pid(manager, "a") == pid
            assert manager.server("a").session.session_id == snap.session.session_id


async def test_a_request_sent_while_parked_opens_a_session_that_answers_it(tmp_path: Path) -> None:
    """A 2025-11-25 server may ask its client something at any time: a request that arrives while
    the connection is parked is held, a session is opened for it, and the client's own handler
    answers it (here the configured roots)."""
    roots = tmp_path / "roots"
    legacy = policy(health_interval=0.2, park_after=PARK_AFTER, protocol="legacy")
    config = changing_server("c", legacy, TRIO_MCP_TEST_ROOTS=str(roots))
    client = trio_mcp.ClientFeatures(roots=["file:///work/project"])
    with trio.fail_after(30):
        async with trio_mcp.open_manager([config], client=client) as manager:
            reasons: list[str] = []

            def on_event(event: object) -> None:
                if isinstance(event, trio_mcp.StateChange):
                    reasons.append(event.reason)

            manager.stream.add_listener(on_event)
            first = await manager.wait_for("c", healthy)
            asked = await manager.call_tool("ask_roots_later", {"seconds": 2 * PARK_AFTER + 0.5})
            assert text_of(asked) == "asked later"
            await manager.wait_for("c", parked)
            resumed = await manager.wait_for("c", lambda s: healthy(s) and not s.session.parked)
            while not roots.exists():  # noqa: ASYNC110 (the server's file has no event)
                await trio.sleep(0.05)
            assert (await trio.Path(roots).read_text()).split() == ["file:///work/project"]
            assert resumed.session.session_id == first.session.session_id
            assert "resume demanded: the server sent a message" in reasons
            await manager.wait_for("c", parked)  # idle again, it parks again
