"""The transports package: its layout, stdio teardown that never blocks the event loop, and
the HTTP pools a manager's servers share.

The unit tests drive ``_stop_process_group`` with a stand-in process and a stand-in group
check (real clock, no processes); the integration tests tear down real process groups with
grandchildren. The HTTP tests build pools (no socket), answer the discover probe from an
in-process handler, and script a raw HTTP/1.1 server to close pooled keep-alive connections.
"""

from __future__ import annotations

import ast
import re
import signal
import ssl
import subprocess
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

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
        "HttpPool": http.HttpPool,
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
    """``base``, ``http1`` (HTTP/1.1 written and read) and ``wire`` (the messages sent outside a
    session) import no sibling, and the probe rounds only ``http1``; each transport imports
    only ``base`` and ``wire`` (and ``http`` its probe, which imports only those, ``http1`` and
    the rounds it can be sent in, and its listen stream, which imports only the probe, ``http1``
    and ``wire``); ``__init__`` imports them all and nothing imports ``__init__``."""
    assert _sibling_imports("base") == set()
    assert _sibling_imports("http1") == set()
    assert _sibling_imports("probe_rounds") == {"http1"}
    assert _sibling_imports("wire") == set()
    assert _sibling_imports("stdio") == {"base", "wire"}
    assert _sibling_imports("memory") == {"base"}
    assert _sibling_imports("http_probe") == {"base", "http1", "probe_rounds", "wire"}
    assert _sibling_imports("http_listen") == {"http1", "http_probe", "wire"}
    assert _sibling_imports("http") == {"base", "http_probe", "http_listen", "probe_rounds", "wire"}
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


# ---------------------------------------------------------------------------------------------
# stdio pipes without a session: what a parked connection's pipes do (real processes, real clock)
# ---------------------------------------------------------------------------------------------

ANSWERS_EVERY_REQUEST = (
    "import json, sys\n"
    "for line in sys.stdin:\n"
    "    m = json.loads(line)\n"
    "    if 'id' in m and 'method' in m:\n"
    "        answer = {'jsonrpc': '2.0', 'id': m['id'], 'result': {'method': m['method']}}\n"
    "        print(json.dumps(answer), flush=True)\n"
)
"""Answers every request with its method; the pipes' routing is what is under test."""

ASKS_THE_CLIENT = (
    "import sys\n"
    'print(\'{"jsonrpc": "2.0", "id": 7, "method": "ping"}\', flush=True)\n'
    'print(\'{"jsonrpc": "2.0", "id": "r", "method": "roots/list"}\', flush=True)\n'
    "with open(sys.argv[1], 'w') as out:\n"
    "    for _ in range(2):\n"
    "        out.write(sys.stdin.readline())\n"
    "        out.flush()\n"
    "sys.stdin.read()\n"
)
"""Sends two requests to its client, and writes the two answers it reads to the file argv[1]."""

NEVER_READS = "import time; time.sleep(30)"


@asynccontextmanager
async def started_pipes(script: str, *args: str) -> AsyncIterator[tuple[stdio.StdioPipes, base.Link]]:
    """``python -c script args`` behind pipes whose readers run, stopped on exit."""
    import sys

    link = base.Link("s")
    config = trio_mcp.StdioTransport(command=sys.executable, args=("-c", script, *args))
    pipes = await stdio.spawn(config, link)
    try:
        async with trio.open_nursery() as nursery:
            pipes.start(nursery)
            yield pipes, link
            nursery.cancel_scope.cancel()
    finally:
        await pipes.aclose()


@pytest.mark.integration
async def test_answers_to_requests_sent_without_a_session_are_not_handed_to_the_session() -> None:
    """The handshake, probes and listings sent by the pipes themselves get their answers; the
    session attached meanwhile sees only the answers to its own requests."""
    from mcp.shared.message import SessionMessage
    from mcp_types import JSONRPCRequest, JSONRPCResponse

    with trio.fail_after(10):
        async with started_pipes(ANSWERS_EVERY_REQUEST) as (pipes, _):
            read, write = pipes.attach()
            async with trio.open_nursery() as nursery:
                listed: list[dict[str, Any]] = []

                async def list_tools() -> None:
                    listed.append(await pipes.send_raw_request("tools/list", None))

                nursery.start_soon(list_tools)
                await write.send(SessionMessage(JSONRPCRequest(jsonrpc="2.0", id=1, method="tools/call")))
                answer = await read.receive()
            assert isinstance(answer.message, JSONRPCResponse)
            assert (answer.message.id, answer.message.result) == (1, {"method": "tools/call"})
            assert listed == [{"method": "tools/list"}]
            with pytest.raises(RuntimeError, match="needs a session"):
                await pipes.send_raw_request("tools/call", None)
            await pipes.discover("2026-07-28")  # a result: the probe succeeds
            with trio.move_on_after(0.2):
                await read.receive()
                pytest.fail("the probe's answer reached the session")


@pytest.mark.integration
async def test_with_no_session_attached_a_ping_is_answered_and_a_request_waits_for_the_next(
    tmp_path: Path,
) -> None:
    """A ``ping`` is answered by the pipes themselves; another request is held, the owner is told
    once to open a session, and the session opened then reads it first and answers it."""
    import json

    from mcp.shared.message import SessionMessage
    from mcp_types import JSONRPCRequest, JSONRPCResponse

    answers = tmp_path / "answers"
    told: list[int] = []
    with trio.fail_after(10):
        async with started_pipes(ASKS_THE_CLIENT, str(answers)) as (pipes, _):
            pipes.on_inbound = lambda: told.append(1)
            while not told:  # noqa: ASYNC110 (what the reader does has no event)
                await trio.sleep(0.02)
            read, write = pipes.attach()
            held = await read.receive()
            assert isinstance(held.message, JSONRPCRequest)
            assert (held.message.id, held.message.method) == ("r", "roots/list")
            answer = JSONRPCResponse(jsonrpc="2.0", id="r", result={"roots": []})
            await write.send(SessionMessage(answer))
            while not answers.exists() or answers.read_text().count("\n") < 2:  # noqa: ASYNC110
                await trio.sleep(0.02)
    assert told == [1]
    ping, roots = map(json.loads, answers.read_text().splitlines())
    assert ping == {"jsonrpc": "2.0", "id": 7, "result": {}}
    assert roots == {"jsonrpc": "2.0", "id": "r", "result": {"roots": []}}


@pytest.mark.integration
async def test_a_write_cut_short_kills_the_connection_and_one_never_begun_does_not() -> None:
    """A write cancelled while the server does not read: the one that had begun left half a
    line in the pipe, so the connection is dead; the one still waiting for its turn wrote
    nothing. Neither request reached the server."""
    with trio.fail_after(10):
        async with started_pipes(NEVER_READS) as (pipes, link):
            markers = {"long": base.SentMarker(), "short": base.SentMarker()}
            scopes = {name: trio.CancelScope() for name in markers}

            async def write(name: str, data: bytes) -> None:
                base.sent_marker.set(markers[name])
                with scopes[name]:
                    await pipes.write(data)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(write, "long", b"x" * (1 << 20) + b"\n")  # more than a pipe holds
                await trio.sleep(0.2)
                nursery.start_soon(write, "short", b"{}\n")
                await trio.sleep(0.2)
                scopes["short"].cancel()
                await trio.sleep(0.1)
                assert markers["short"].refused and not link.dead.is_set()
                scopes["long"].cancel()
            assert markers["long"].refused
            assert link.exit_reason == ("transport_error", "a message to the server's stdin was cut short")


@pytest.mark.integration
async def test_a_request_without_a_session_fails_as_connection_closed_when_the_server_exits() -> None:
    from mcp.shared.exceptions import MCPError

    with trio.fail_after(10):
        async with started_pipes("import sys; sys.stdin.readline(); sys.exit(4)") as (pipes, link):
            with pytest.raises(MCPError) as failed:
                await pipes.send_raw_request("tools/list", None)
            assert failed.value.error.code == -32000
            await link.dead.wait()
            assert link.exit_reason == ("process_exited", "server process exited with code 4")
            with pytest.raises(MCPError):
                await pipes.send_raw_request("tools/list", None)  # failed at once: the pipes ended


# ---------------------------------------------------------------------------------------------
# the shared HTTP pools (unit: building a pool opens no socket)
# ---------------------------------------------------------------------------------------------

PLAIN = ("http", "127.0.0.1", 8000)
OTHER = ("http", "127.0.0.1", 8001)
SECURE = ("https", "mcp.example", None)


def test_connections_at_one_origin_share_a_pool_up_to_its_share() -> None:
    pool = http.HttpPool(share=2)
    a, b, c = pool.lease(PLAIN), pool.lease(PLAIN), pool.lease(PLAIN)
    assert a is b and c is not a  # the first pool is full after two
    d = pool.lease(OTHER)
    assert d is not a and d is not c  # keep-alive connections are per origin
    assert pool.statistics() == {"origins": 2, "pools": 3, "leases": 4}
    pool.release(a)
    assert pool.lease(PLAIN) is a  # the first pool with room again
    assert pool.transport_for(PLAIN) is a.transport
    assert repr(pool) == "<HttpPool origins=2 pools=3 leases=4>"


async def test_plain_http_pools_load_no_certificates(monkeypatch: pytest.MonkeyPatch) -> None:
    """A certificate store costs about a megabyte and tens of milliseconds: ``http://`` pools
    build none (and could complete no TLS handshake), and ``https://`` pools share one."""
    import httpx2

    built: list[object] = []
    real = httpx2.create_ssl_context

    def counting(*args: object, **kwargs: object) -> object:
        context = real()
        built.append(context)
        return context

    monkeypatch.setattr(httpx2, "create_ssl_context", counting)
    pool = http.HttpPool(share=1)
    plain = pool.lease(PLAIN).transport
    assert built == []
    context = plain._pool._ssl_context  # type: ignore[attr-defined]
    assert context.cert_store_stats() == {"x509": 0, "crl": 0, "x509_ca": 0}
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    first, second = pool.lease(SECURE).transport, pool.lease(SECURE).transport
    assert first is not second
    assert len(built) == 1
    assert first._pool._ssl_context is second._pool._ssl_context is built[0]  # type: ignore[attr-defined]
    await pool.aclose()
    assert pool.statistics() == {"origins": 0, "pools": 0, "leases": 0}


# ---------------------------------------------------------------------------------------------
# HTTP keep-alive: a pooled connection the server closed for idleness (real sockets, real clock)
# ---------------------------------------------------------------------------------------------


class KeepAliveServer:
    """A raw HTTP/1.1 server scripted per connection: ``drop_after[i]`` requests are answered
    on connection ``i``, and the next request on it is read and then dropped without a byte of
    answer (what a server closing an idle keep-alive connection looks like from our side)."""

    def __init__(self, drop_after: list[int | None]) -> None:
        self.drop_after = drop_after
        self.connections = 0
        self.answered: list[int] = []
        self.port = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        index = self.connections
        self.connections += 1
        limit = self.drop_after[index] if index < len(self.drop_after) else None
        buffer = b""
        served = 0
        async with stream:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = await stream.receive_some()
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                while len(buffer) < length:
                    buffer += await stream.receive_some()
                buffer = buffer[length:]
                if limit is not None and served == limit:
                    return  # read, and dropped without an answer
                served += 1
                self.answered.append(index)
                body = b'{"jsonrpc":"2.0","id":"1","result":{}}'
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + b"content-length: %d\r\n\r\n" % len(body)
                    + body
                )


def post(port: int, method: str = "ping") -> object:
    import httpx2

    return httpx2.Request(
        "POST", f"http://127.0.0.1:{port}/mcp", json={"jsonrpc": "2.0", "id": "1", "method": method}
    )


@asynccontextmanager
async def keep_alive_transport(
    drop_after: list[int | None],
) -> AsyncIterator[tuple[KeepAliveServer, base.Link, Any]]:
    """A :class:`KeepAliveServer` and a connection's transport to it, both closed afterwards."""
    server = KeepAliveServer(drop_after=drop_after)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            link = base.Link("web")
            pool = http.HttpPool()
            transport = http._LinkedHttpTransport(link, pool, ("http", "127.0.0.1", server.port))
            yield server, link, transport
            await transport.aclose()
            await pool.aclose()
            nursery.cancel_scope.cancel()


async def test_a_request_on_a_keep_alive_connection_the_server_closed_is_sent_again() -> None:
    """The server closed the idle pooled connection as the request went out on it: the request
    never reached the server, so it is sent again at once on a fresh connection, and the
    connection is not reported dead."""
    async with keep_alive_transport([1, None]) as (server, link, transport):
        first = await transport.handle_async_request(post(server.port))  # type: ignore[arg-type]
        await first.aread()
        second = await transport.handle_async_request(post(server.port))  # type: ignore[arg-type]
        await second.aread()
        assert (first.status_code, second.status_code) == (200, 200)
        assert server.answered == [0, 1]  # the second request was answered on a new connection
        assert not link.dead.is_set()


async def test_a_tool_call_on_a_keep_alive_connection_the_server_closed_is_not_sent_again() -> None:
    """The same break, but a tool call: the server may have received it and run the tool
    before the connection broke (nothing on this side tells), so it is not sent again: the
    caller learns that it may have run."""
    import httpx2

    async with keep_alive_transport([1, None]) as (server, _, transport):
        first = await transport.handle_async_request(post(server.port))  # type: ignore[arg-type]
        await first.aread()
        with pytest.raises(httpx2.RemoteProtocolError):
            await transport.handle_async_request(post(server.port, "tools/call"))  # type: ignore[arg-type]
        assert (server.connections, server.answered) == (1, [0])


async def test_a_request_dropped_on_a_fresh_connection_is_not_sent_again() -> None:
    """A fresh connection dropped without an answer may have run the request: no retry."""
    import httpx2

    async with keep_alive_transport([0, None]) as (server, link, transport):
        with pytest.raises(httpx2.RemoteProtocolError):
            await transport.handle_async_request(post(server.port))  # type: ignore[arg-type]
        assert (server.connections, server.answered) == (1, [])
        assert link.dead.is_set()


# ---------------------------------------------------------------------------------------------
# connections held to public addresses (SSRF at connection time)
# ---------------------------------------------------------------------------------------------


class RecordingBackend:
    """Where a backend was asked to connect (it connects nowhere)."""

    def __init__(self) -> None:
        self.connected: list[tuple[str, int]] = []

    async def connect_tcp(self, host: str, port: int, **_: Any) -> Any:
        self.connected.append((host, port))
        return object()

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("localhost", "a loopback address"),
        ("::1", "a loopback address"),
        ("169.254.169.254", "a link-local (where cloud metadata services live) address"),
        ("10.1.2.3", "a private address"),
        ("::ffff:192.168.0.1", "a private address"),
    ],
)
async def test_a_public_only_connection_refuses_internal_addresses(host: str, reason: str) -> None:
    from trio_mcp._addresses import InternalAddressError, PublicOnlyBackend

    inner = RecordingBackend()
    backend = PublicOnlyBackend(inner)  # type: ignore[arg-type]
    with pytest.raises(InternalAddressError) as refused:
        await backend.connect_tcp(host, 80)
    assert str(refused.value).startswith(f"refused to connect to {host}")
    assert reason in str(refused.value)
    assert inner.connected == []


async def test_a_public_only_connection_connects_to_the_address_it_checked() -> None:
    from trio_mcp._addresses import PublicOnlyBackend

    inner = RecordingBackend()
    await PublicOnlyBackend(inner).connect_tcp("93.184.216.34", 443)  # type: ignore[arg-type]
    assert inner.connected == [("93.184.216.34", 443)]


async def test_every_url_a_public_only_connection_fetches_is_held_to_public_addresses() -> None:
    """A request to another origin than the server's (a redirect, an OAuth metadata URL that
    a server's answer named) goes through a public-only pool too."""
    import httpx2

    link = base.Link("web")
    pool = http.HttpPool()
    transport = http._LinkedHttpTransport(link, pool, ("http", "93.184.216.34", 80), public_only=True)
    request = httpx2.Request("GET", "http://127.0.0.1:9/.well-known/oauth-protected-resource")
    with pytest.raises(httpx2.ConnectError, match=re.escape("127.0.0.1: a loopback address")):
        await transport.handle_async_request(request)
    await transport.aclose()
    await pool.aclose()
