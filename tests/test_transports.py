"""The transports package: its layout, and stdio teardown that never blocks the event loop.

The unit tests drive ``_stop_process_group`` with a stand-in process and a stand-in group
check (real clock, no processes); the integration tests tear down real process groups with
grandchildren.
"""

from __future__ import annotations

import ast
import signal
import subprocess
import threading
from pathlib import Path
from typing import cast

import pytest
import trio
from integration._support import pid_alive, read_pidfile, wait_gone

import trio_mcp
import trio_mcp._transports as transports
from trio_mcp._transports import base, http, memory, stdio

PACKAGE_DIR = Path(transports.__file__).parent
SUBMODULES = ("base", "stdio", "http", "memory")


# ---------------------------------------------------------------------------------------------
# layout
# ---------------------------------------------------------------------------------------------


def test_package_reexports_what_the_rest_of_the_code_imports() -> None:
    """``from ._transports import X`` keeps working for every X imported elsewhere."""
    expected = {
        "Link": base.Link,
        "SentMarker": base.SentMarker,
        "sent_marker": base.sent_marker,
        "MemoryConnectionInfo": memory.MemoryConnectionInfo,
        "MemoryServerHooks": memory.MemoryServerHooks,
        "memory_connection": memory.memory_connection,
    }
    for name, obj in expected.items():
        assert getattr(transports, name) is obj, name
    assert set(transports.__all__) == {*expected, "open_transport"}
    assert callable(transports.open_transport)
    assert stdio._open_stdio and http._open_http and memory._open_memory


def _sibling_imports(module: str) -> set[str]:
    """The package's modules that ``module`` imports, anywhere in it (TYPE_CHECKING and
    function-level imports included)."""
    tree = ast.parse((PACKAGE_DIR / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:
                found.update(alias.name for alias in node.names)
            else:
                found.add(node.module.split(".")[0])
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[:2] == ["trio_mcp", "_transports"]:
                found.add(parts[2] if len(parts) > 2 else "__init__")
    return found


def test_no_import_cycles_inside_the_package() -> None:
    """``base`` imports no sibling; each transport imports only ``base``; ``__init__`` imports
    them all and nothing imports ``__init__``."""
    assert _sibling_imports("base") == set()
    for module in ("stdio", "http", "memory"):
        assert _sibling_imports(module) == {"base"}, module
    assert _sibling_imports("__init__") == set(SUBMODULES)


# ---------------------------------------------------------------------------------------------
# stdio teardown: the group check runs in a worker thread (unit, real clock, no processes)
# ---------------------------------------------------------------------------------------------


class ExitedLeader:
    """Stands in for a ``trio.Process`` whose leader has exited and been reaped."""

    pid = 2_000_000_000  # never signalled: ``_signal_group`` is replaced in these tests
    returncode = 0
    stdin = stdout = stderr = None

    async def wait(self) -> int:
        await trio.lowlevel.checkpoint()
        return 0


def record_signals(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sent: list[int] = []
    monkeypatch.setattr(stdio, "_signal_group", lambda pgid, sig: sent.append(sig))
    return sent


async def test_group_is_checked_in_a_worker_thread_while_polled(monkeypatch: pytest.MonkeyPatch) -> None:
    """The leader has exited and its group lingers for three checks: SIGTERM, then polled
    until it is gone (and checked once more before SIGKILL). Every check ran off the event
    loop's thread."""
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def group_alive(pgid: int) -> bool:
        threads.append(threading.get_ident())
        return len(threads) <= 3

    monkeypatch.setattr(stdio, "_group_alive", group_alive)
    sent = record_signals(monkeypatch)
    with trio.fail_after(5):
        await stdio._stop_process_group(cast(trio.Process, ExitedLeader()), 2.0)
    assert len(threads) == 5
    assert loop_thread not in threads
    assert sent == [signal.SIGTERM]


async def test_event_loop_runs_while_the_group_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A group check that can only finish once another task has run: on the event loop's
    thread it would wait in vain (and time out); in a worker thread it is released."""
    entered = threading.Event()
    release = threading.Event()
    released: list[bool] = []

    def group_alive(pgid: int) -> bool:
        entered.set()
        released.append(release.wait(timeout=2))
        return False

    async def releaser() -> None:
        while not entered.is_set():  # noqa: ASYNC110 (set by a thread, maybe the loop's own)
            await trio.sleep(0.005)
        release.set()

    monkeypatch.setattr(stdio, "_group_alive", group_alive)
    sent = record_signals(monkeypatch)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(releaser)
            await stdio._stop_process_group(cast(trio.Process, ExitedLeader()), 2.0)
    assert released == [True, True]  # checked after the leader's exit, and before SIGKILL
    assert sent == []


async def test_teardown_stays_bounded_when_no_worker_thread_is_free(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every worker token taken, the group cannot be checked: teardown does not wait for
    a thread beyond its grace periods, and treats the group as alive (SIGTERM, then SIGKILL)."""
    calls: list[int] = []
    monkeypatch.setattr(stdio, "_group_alive", lambda pgid: calls.append(pgid) or False)
    sent = record_signals(monkeypatch)
    limiter = trio.to_thread.current_default_thread_limiter()
    borrowers: list[object] = []
    while limiter.available_tokens:
        borrower = object()
        limiter.acquire_on_behalf_of_nowait(borrower)
        borrowers.append(borrower)

    async def give_back_later() -> None:
        # Should teardown wait for a thread after all, it is not stuck forever (it runs shielded).
        await trio.sleep(3)
        while borrowers:
            limiter.release_on_behalf_of(borrowers.pop())

    grace = 0.2
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(give_back_later)
            start = trio.current_time()
            await stdio._stop_process_group(cast(trio.Process, ExitedLeader()), grace)
            elapsed = trio.current_time() - start
            nursery.cancel_scope.cancel()
    finally:
        while borrowers:
            limiter.release_on_behalf_of(borrowers.pop())
    # Three checks, each bounded by the grace period.
    assert elapsed < 3 * grace + 1.0
    assert sent == [signal.SIGTERM, signal.SIGKILL]
    assert calls == []


# ---------------------------------------------------------------------------------------------
# stdio teardown of real process groups (integration)
# ---------------------------------------------------------------------------------------------

# A group leader that starts a grandchild, then exits once its stdin closes. Each writes its
# own pid once set up (the grandchild after its SIGTERM disposition is in place).
LEADER_SCRIPT = """
sh -c '{trap}echo $$ > "$1"; exec sleep 1000' grandchild "$0.child" </dev/null >/dev/null 2>&1 &
echo $$ > "$0.leader"
read _ || :
"""
OBEYS_SIGTERM = ""
IGNORES_SIGTERM = 'trap "" TERM; '


def leader_command(pidfile: Path, grandchild: str) -> list[str]:
    return ["sh", "-c", LEADER_SCRIPT.format(trap=grandchild), str(pidfile)]


def record_group_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Run the real group check, recording the thread of each call."""
    threads: list[int] = []
    real = stdio._group_alive

    def group_alive(pgid: int) -> bool:
        threads.append(threading.get_ident())
        return real(pgid)

    monkeypatch.setattr(stdio, "_group_alive", group_alive)
    return threads


def record_real_signals(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sent: list[int] = []
    real = stdio._signal_group

    def signal_group(pgid: int, sig: int) -> None:
        sent.append(sig)
        real(pgid, sig)

    monkeypatch.setattr(stdio, "_signal_group", signal_group)
    return sent


@pytest.mark.integration
@pytest.mark.parametrize(
    ("grandchild", "signals"),
    [(OBEYS_SIGTERM, [signal.SIGTERM]), (IGNORES_SIGTERM, [signal.SIGTERM, signal.SIGKILL])],
    ids=["obeys-sigterm", "ignores-sigterm"],
)
async def test_stop_process_group_reaps_a_grandchild_after_the_leader_exited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grandchild: str, signals: list[int]
) -> None:
    loop_thread = threading.get_ident()
    checks = record_group_checks(monkeypatch)
    sent = record_real_signals(monkeypatch)
    pidfile = tmp_path / "pids"
    with trio.fail_after(15):
        process = await trio.lowlevel.open_process(
            leader_command(pidfile, grandchild),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        child = await read_pidfile(Path(f"{pidfile}.child"))
        await read_pidfile(Path(f"{pidfile}.leader"))
        assert pid_alive(process.pid) and pid_alive(child)

        await stdio._stop_process_group(process, 0.5)
        assert process.returncode == 0  # the leader left by itself when its stdin closed
        await wait_gone(child, within=2)
    assert sent == signals
    assert checks and loop_thread not in checks
    assert not stdio._group_alive(process.pid)


@pytest.mark.integration
@pytest.mark.parametrize("cancelled", [False, True], ids=["closed", "cancelled"])
async def test_stdio_transport_leaves_no_process_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cancelled: bool
) -> None:
    """Through ``open_transport``, left normally or by cancellation: the leader and its
    SIGTERM-ignoring grandchild are gone, and the group was only ever checked off the loop."""
    loop_thread = threading.get_ident()
    checks = record_group_checks(monkeypatch)
    sent = record_real_signals(monkeypatch)
    monkeypatch.setattr(stdio, "STDIO_CLOSE_GRACE", 0.5)
    pidfile = tmp_path / "pids"
    command, *args = leader_command(pidfile, IGNORES_SIGTERM)
    config = trio_mcp.StdioTransport(command=command, args=tuple(args))
    link = transports.Link("t")
    pids: list[int] = []
    with trio.fail_after(15):
        with trio.CancelScope() as scope:
            async with transports.open_transport(config, link):
                pids.append(await read_pidfile(Path(f"{pidfile}.leader")))
                pids.append(await read_pidfile(Path(f"{pidfile}.child")))
                assert all(pid_alive(pid) for pid in pids)
                if cancelled:
                    scope.cancel()
                    await trio.sleep_forever()
        assert scope.cancelled_caught is cancelled
        await wait_gone(*pids, within=2)
    # SIGKILL for the grandchild. (A second round may follow when the group check right after
    # SIGKILL still sees the dying grandchild: a race as old as the check, and harmless.)
    assert sent[:2] == [signal.SIGTERM, signal.SIGKILL]
    assert checks and loop_thread not in checks
