"""Real stdio servers (``python -m trio_mcp.demo_server``) under the real clock."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import trio
from _support import (
    parent_pid,
    pid_alive,
    policy,
    read_pidfile,
    server_pid,
    stdio_demo,
    text_of,
    wait_gone,
    wait_probed,
)

import trio_mcp
from trio_mcp import ConnectionState, ServerSnapshot, ServerStatus

pytestmark = pytest.mark.integration


def healthy(snap: ServerSnapshot) -> bool:
    return snap.status is ServerStatus.HEALTHY and snap.session.active


async def test_killed_server_is_detected_and_reconnected(tmp_path: Path) -> None:
    """Connect, probe and call a real stdio server; SIGKILL it: the supervisor sees
    ``process_exited`` at once, cleans up the process group and reconnects by itself; after
    the manager exits no process is left."""
    with trio.fail_after(30):
        pidfile = tmp_path / "child.pid"
        config = stdio_demo("a", spawn_child=True, child_pidfile=pidfile)
        async with trio_mcp.open_manager([config]) as manager:
            snap = await manager.wait_for("a", healthy)
            assert snap.connection is ConnectionState.READY
            assert snap.capabilities is not None
            assert snap.capabilities.protocol_version == "2026-07-28"
            assert snap.capabilities.era == "modern"
            assert snap.capabilities.server_name == "a"
            assert "tools" in snap.capabilities.capabilities
            first_session = snap.session.session_id
            assert first_session is not None

            await wait_probed(manager, "a")
            result = await manager.call_tool("add", {"a": 2, "b": 3})
            assert result.structured_content == {"result": 5}

            pid = await server_pid(manager, "a")
            child = await read_pidfile(pidfile)
            assert pid_alive(pid) and pid_alive(child)
            assert parent_pid(child) == pid
            pidfile.unlink()

            os.kill(pid, signal.SIGKILL)
            killed_at = trio.current_time()
            lost = await manager.wait_for("a", lambda s: s.status is not ServerStatus.HEALTHY)
            assert trio.current_time() - killed_at < 1.0
            assert lost.status is ServerStatus.DEGRADED
            assert lost.last_error_category == "process_exited"
            assert lost.last_error is not None and "code -9" in lost.last_error
            event = manager.connection_events(server="a")[-1]
            assert (event.from_status, event.to_status) == ("healthy", "degraded")
            assert event.category == "process_exited"

            back = await manager.wait_for(
                "a", lambda s: s.session.active and s.session.session_id != first_session
            )
            assert back.status is ServerStatus.RECOVERED
            # The old connection's teardown took the orphaned grandchild with it.
            await wait_gone(pid, child, within=1)

            assert text_of(await manager.call_tool("whoami")) == "a"
            await manager.wait_for("a", healthy)
            new_pid = await server_pid(manager, "a")
            new_child = await read_pidfile(pidfile)
            assert new_pid != pid and pid_alive(new_pid) and pid_alive(new_child)
            statuses = [(e.from_status, e.to_status) for e in manager.connection_events(server="a")]
            assert statuses == [
                ("unknown", "healthy"),
                ("healthy", "degraded"),
                ("degraded", "recovered"),
                ("recovered", "healthy"),
            ]
        # open_manager() closes every session and process before it returns.
        assert not pid_alive(new_pid)
        assert not pid_alive(new_child)


async def test_no_process_survives_a_cancelled_supervisor(tmp_path: Path) -> None:
    """Process groups are cleaned up when a supervisor is cancelled: by ``remove_server``,
    by cancelling the scope around the manager, and in the middle of starting up."""
    with trio.fail_after(30):
        pidfiles = {name: tmp_path / f"{name}.pid" for name in ("x", "y", "z")}
        configs = [stdio_demo(n, spawn_child=True, child_pidfile=pidfiles[n]) for n in ("x", "y")]
        with trio.CancelScope() as outer:
            async with trio_mcp.open_manager(configs) as manager:
                await manager.wait_for("x", healthy)
                await manager.wait_for("y", healthy)
                pids = {
                    n: (await server_pid(manager, n), await read_pidfile(pidfiles[n])) for n in ("x", "y")
                }
                assert all(pid_alive(p) for pair in pids.values() for p in pair)

                await manager.remove_server("x")
                assert not any(pid_alive(p) for p in pids["x"])
                assert all(pid_alive(p) for p in pids["y"])

                outer.cancel()
                await trio.sleep_forever()
        assert outer.cancelled_caught
        assert not any(pid_alive(p) for p in pids["y"])

        # Cancelled while the server is starting: its grandchild exists, the handshake may not.
        with trio.CancelScope() as outer:
            async with trio_mcp.open_manager(
                [stdio_demo("z", spawn_child=True, child_pidfile=pidfiles["z"])]
            ) as manager:
                child = await read_pidfile(pidfiles["z"])
                server = parent_pid(child)
                outer.cancel()
                await trio.sleep_forever()
        assert not pid_alive(server)
        assert not pid_alive(child)


async def test_call_interrupted_by_a_crash_is_not_repeated_and_reads_fail_over(tmp_path: Path) -> None:
    """A non-idempotent tool whose server dies mid-call fails within its deadline with an unknown
    outcome and is never sent to the next server; a read fails over to it."""
    with trio.fail_after(30):
        gate = tmp_path / "a.up"
        gate.touch()
        ledger = tmp_path / "ledger"
        configs = [stdio_demo("a", gate=gate, ledger=ledger), stdio_demo("b", ledger=ledger)]
        async with trio_mcp.open_manager(configs) as manager:
            await manager.wait_for("a", healthy)
            await manager.wait_for("b", healthy)
            pid_a = await server_pid(manager, "a")
            gate.unlink()  # once killed, "a" cannot start again

            failures: list[trio_mcp.InvocationFailedError] = []
            elapsed: list[float] = []

            async def call() -> None:
                start = trio.current_time()
                with pytest.raises(trio_mcp.InvocationFailedError) as info:
                    await manager.call_tool("sleep", {"seconds": 10}, preferred=["a", "b"], timeout=3)
                elapsed.append(trio.current_time() - start)
                failures.append(info.value)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                await trio.sleep(0.5)
                os.kill(pid_a, signal.SIGKILL)

            assert elapsed[0] < 3
            error = failures[0]
            assert error.outcome == "unknown"
            assert [(a.server, a.stage) for a in error.attempts] == [("a", "invoke")]
            attempt = error.attempts[0]
            assert attempt.sent and not attempt.success
            assert attempt.category == "process_exited"
            assert manager.invocation_events(server="b", request_id=error.request_id) == []

            # A read may run anywhere: with "a" down it is served by "b".
            outcome = await manager.invoke(
                "resources/read", "demo://readme", preferred=["a", "b"], timeout=10
            )
            assert outcome.server == "b"
            assert "This is b" in text_of(outcome.result)
            assert [a.server for a in outcome.attempts][-1] == "b"
            assert all(not a.sent for a in outcome.attempts if a.server == "a")

            # A side effect goes to exactly one server.
            result = await manager.call_tool("charge", {"amount": 7}, preferred=["a", "b"], timeout=10)
            assert text_of(result) == "b charged 7"
            assert ledger.read_text() == "b 7\n"


async def test_a_command_that_cannot_start_is_a_spawn_error(tmp_path: Path) -> None:
    """Nothing to run: each attempt fails at once, classified ``spawn_error`` with the reason
    and the command, and the server is retried with backoff (never a live session)."""
    missing = str(tmp_path / "no-such-server")
    not_executable = tmp_path / "server.sh"
    not_executable.write_text("#!/bin/sh\n")
    not_executable.chmod(0o644)
    configs = [
        trio_mcp.ServerConfig(
            name="missing",
            transport=trio_mcp.StdioTransport(command=missing),
            policy=policy(unreachable_threshold=10),
        ),
        trio_mcp.ServerConfig(
            name="denied",
            transport=trio_mcp.StdioTransport(command=str(not_executable)),
            policy=policy(unreachable_threshold=10),
        ),
    ]
    with trio.fail_after(10):
        async with trio_mcp.open_manager(configs) as manager:
            for name, reason in [
                ("missing", f"No such file or directory: {missing!r}"),
                ("denied", f"Permission denied: {str(not_executable)!r}"),
            ]:
                snap = await manager.wait_for(name, lambda s: s.consecutive_failures >= 2)
                assert snap.last_error_category == "spawn_error"
                command = manager.config(name).transport.command  # type: ignore[union-attr]
                assert snap.last_error == f"could not start {command!r}: {reason}"
                assert not snap.session.active
                events = manager.connection_events(server=name)
                assert [(e.from_status, e.to_status, e.category) for e in events] == [
                    ("unknown", "degraded", "spawn_error")
                ]
