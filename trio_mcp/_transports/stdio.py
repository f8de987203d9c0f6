"""The stdio transport: a server process in its own process group, torn down as a whole.

Its pipes (:class:`StdioPipes`) are held by the connection, and SDK sessions are opened over
them and closed again: a parked stdio connection keeps its process and answers its probes and
list-change stream without a session.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import subprocess
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any, cast

import anyio
import trio
from mcp.shared.message import SessionMessage
from mcp.shared.subscriptions import SUBSCRIPTION_ID_META_KEY
from mcp_types import (
    CONNECTION_CLOSED,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    jsonrpc_message_adapter,
)

from .._config import StdioTransport
from .._exceptions import SessionError
from .base import (
    STDIO_CLOSE_GRACE,
    STDOUT_EOF_EXIT_WAIT,
    LineSplitter,
    Link,
    OnListenMessage,
    over_bound,
    sent_marker,
)
from .wire import (
    SESSIONLESS_METHODS,
    ListenLostError,
    check_answer,
    discover_message,
    listen_body,
    request_message,
    result_of,
    rpc_error,
)

_READ_SIZE = 65536
STDERR_LINE_CHARS = 500
"""Characters kept of one line of a server's stderr (its start)."""
_STDERR_LINE_BYTES = 4 * STDERR_LINE_CHARS
NOT_UTF8 = "the server wrote a line that is not UTF-8 text"


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class StderrTail:
    """Keeps the last lines of a server's stderr in ``tail``, each cut to its first
    :data:`STDERR_LINE_CHARS` characters: however much the server writes, with or without
    newlines, only the kept lines and the start of the line being written are held.
    """

    __slots__ = ("_line", "_tail")

    def __init__(self, tail: deque[str]) -> None:
        self._tail = tail
        self._line = b""

    def feed(self, chunk: bytes) -> None:
        # Only the last ``maxlen`` lines of a chunk can be kept: split off no more than those.
        parts = chunk.rsplit(b"\n", self._tail.maxlen or 1)
        if len(parts) == 1:
            self._line = self._extend(self._line, chunk)
            return
        first = parts[0]
        cut = first.rfind(b"\n")
        # The line ending where ``first`` ends began in this chunk when ``first`` holds a newline.
        self._add(first[cut + 1 :] if cut >= 0 else self._extend(self._line, first))
        for line in parts[1:-1]:
            self._add(line)
        self._line = self._extend(b"", parts[-1])

    def flush(self) -> None:
        """The server is gone: keep the line it did not finish."""
        line, self._line = self._line, b""
        self._add(line)

    @staticmethod
    def _extend(line: bytes, more: bytes) -> bytes:
        room = _STDERR_LINE_BYTES - len(line)
        return line + more[:room] if room > 0 else line

    def _add(self, line: bytes) -> None:
        if line.strip():
            self._tail.append(line[:_STDERR_LINE_BYTES].decode("utf-8", "replace")[:STDERR_LINE_CHARS])


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is left in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # The group still has members, but they may all be zombies: orphans that exited and wait for
    # an init that does not reap them (common in containers). Those need no signal and no wait.
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


async def _check_group_alive(pgid: int, within: float) -> bool:
    """:func:`_group_alive` in a worker thread: its ``/proc`` scan must not block the event loop.

    Waits at most ``within`` seconds for a worker thread (the default thread limiter may be
    busy), so that teardown stays bounded; a group that could not be checked counts as alive,
    so teardown goes on to signal it (signalling a group that is gone already does nothing).
    """
    with trio.move_on_after(within):
        return await trio.to_thread.run_sync(_group_alive, pgid)
    return True


def _signal_group(pgid: int, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _stop_process_group(process: trio.Process, grace: float) -> None:
    """Close stdin, let the server exit, then SIGTERM / SIGKILL its whole process group.

    Runs shielded; every wait is bounded. Grandchildren are reached through the group even
    when the leader has already exited. The group is checked in a worker thread (polled every
    20 ms while it is given time to exit), never on the event loop.
    """
    pgid = process.pid
    with trio.CancelScope(shield=True):
        if process.stdin is not None:
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await process.stdin.aclose()
        with trio.move_on_after(grace):
            await process.wait()
        if process.returncode is None or await _check_group_alive(pgid, grace):
            _signal_group(pgid, signal.SIGTERM)
            with trio.move_on_after(grace):
                while process.returncode is None or await _check_group_alive(pgid, grace):
                    if process.returncode is None:
                        with trio.move_on_after(0.02):
                            await process.wait()
                    else:
                        await trio.sleep(0.02)
        if process.returncode is None or await _check_group_alive(pgid, grace):
            _signal_group(pgid, signal.SIGKILL)
            with trio.move_on_after(grace):
                await process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    await stream.aclose()


_PING_ANSWER = b'{"jsonrpc":"2.0","id":%s,"result":{}}\n'
_LISTEN_QUEUE = 64
"""Messages of one list-change stream kept while its reader is busy; a burst beyond it loses
only list-change notices, which say what the next listing shows anyway."""
_PENDING_INBOUND = 256
"""Messages for a session kept while none is open (it is being opened for them); the oldest
beyond it are dropped."""


class _Answer:
    """The answer to one request of our own, once the reader has it (``None``: the pipes
    ended first)."""

    __slots__ = ("arrived", "message")

    def __init__(self) -> None:
        self.arrived = trio.Event()
        self.message: dict[str, Any] | None = None


class _Subscription:
    """The messages read for one list-change stream of our own, until its answer."""

    __slots__ = ("answer", "ended", "messages", "wakeup")

    def __init__(self) -> None:
        self.messages: deque[dict[str, Any]] = deque(maxlen=_LISTEN_QUEUE)
        self.answer: dict[str, Any] | None = None
        self.ended = False
        self.wakeup = trio.Event()

    def wake(self) -> None:
        self.wakeup.set()

    async def wait(self) -> None:
        await self.wakeup.wait()
        self.wakeup = trio.Event()


def _answer_of(message: JSONRPCResponse | JSONRPCError) -> dict[str, Any]:
    if isinstance(message, JSONRPCResponse):
        return {"result": message.result}
    return {"error": message.error.model_dump(by_alias=True, exclude_none=True)}


def _subscription_of(message: JSONRPCNotification) -> Any:
    params = message.params
    meta = params.get("_meta") if params else None
    return meta.get(SUBSCRIPTION_ID_META_KEY) if isinstance(meta, dict) else None


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class StdioPipes:
    """A stdio server process and its pipes, for as long as the connection lives: SDK sessions
    are opened over them (:meth:`attach`) and closed again, and the pipes answer by themselves
    what goes on while no session is open (a parked connection).

    One reader task splits stdout into messages: answers and list-change messages of the
    requests sent here without a session (``trio-mcp-...`` ids: the handshake, probes, the
    list-change stream) go to their waiters, everything else to the session attached, if any.
    With none attached, a ``ping`` is answered here; anything else is held for the next session,
    and its owner is told (``on_inbound``) to open one. A second task keeps the tail of stderr,
    and a third reports the process's exit. Writes go straight to stdin from the writer's own
    task, one message at a time: a write cut short midway (its caller cancelled while the pipe
    was full) leaves half a line in the pipe, so the connection is then dead.

    Also what ``Link.discover_probe``, ``Link.ping_probe``, ``Link.listen_stream`` and
    ``Link.sessionless`` are for a stdio connection (see :meth:`discover`, :meth:`ping`,
    :meth:`listen`, :meth:`send_raw_request`).
    """

    __slots__ = (
        "_attached",
        "_ended",
        "_link",
        "_listens",
        "_max",
        "_pending",
        "_sent",
        "_stdin",
        "_waiting",
        "_write_lock",
        "handshaking",
        "on_inbound",
        "process",
    )

    def __init__(self, process: trio.Process, link: Link, max_bytes: int) -> None:
        self.process = process
        assert process.stdin is not None
        self._stdin = cast(trio.lowlevel.FdStream, process.stdin)
        self._link = link
        self._max = max_bytes
        self._write_lock = trio.StrictFIFOLock()
        self._attached: Any = None
        """The send end of the attached session's read stream."""
        self._waiting: dict[str, _Answer] = {}
        self._listens: dict[str, _Subscription] = {}
        self._sent = 0
        self._ended = False
        self._pending: deque[SessionMessage | Exception] = deque(maxlen=_PENDING_INBOUND)
        """What the server sent for a session while none was open, handed to the next."""
        self.on_inbound: Callable[[], None] | None = None
        """Called when the server sends what needs a session while none is open (its owner
        opens one: the messages wait for it)."""
        self.handshaking = True
        """Unused here (no origin is shared); part of ``SessionlessRequests``."""

    def start(self, nursery: trio.Nursery) -> None:
        """Start the reader tasks in ``nursery`` (which must be left before the pipes close)."""
        server = self._link.server
        nursery.start_soon(self._read_stdout, name=f"{server}: read stdout")
        nursery.start_soon(self._read_stderr, name=f"{server}: read stderr")
        nursery.start_soon(self._watch_process, name=f"{server}: watch process")

    async def aclose(self) -> None:
        """Stop the process group (shielded, bounded) and end every wait on the pipes."""
        self._end()
        await _stop_process_group(self.process, STDIO_CLOSE_GRACE)

    # -- the session ------------------------------------------------------------------------

    def attach(self) -> tuple[Any, _SessionWrite]:
        """The stream pair of an SDK session opened over the pipes, which first reads what the
        server sent while no session was open; it is detached when it closes its read stream
        (or another is attached)."""
        pending = self._pending
        send, receive = anyio.create_memory_object_stream[SessionMessage | Exception](len(pending))
        while pending:
            send.send_nowait(pending.popleft())
        if self._attached is not None:
            self._attached.close()
        if self._ended:
            send.close()
        else:
            self._attached = send
        return receive, _SessionWrite(self)

    async def _to_session(self, item: SessionMessage | Exception) -> bool:
        """Hand ``item`` to the attached session; ``False``: none is attached."""
        attached = self._attached
        if attached is None:
            return False
        try:
            await attached.send(item)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            if self._attached is attached:
                self._attached = None  # it closed: the connection is parked
            return False
        return True

    # -- writing -----------------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        """Write one message line. Raises ``anyio.BrokenResourceError`` when the server did
        not get it (nothing was written, or only part of the line: the connection is then
        dead, and the line never ends). The caller's ``sent_marker`` is marked refused then."""
        written = 0
        try:
            async with self._write_lock:
                fd = self._stdin.fileno()  # -1 once closed: os.write fails
                view = memoryview(data)
                while written < len(data):
                    try:
                        written += os.write(fd, view[written:])
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(fd)
        except (OSError, trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            self._refused(written)
            self._link.mark_dead("transport_error", "could not write to the server's stdin")
            raise anyio.BrokenResourceError("could not write to the server's stdin") from exc
        except BaseException:
            if written < len(data):
                self._refused(written)
            raise

    def _refused(self, written: int) -> None:
        marker = sent_marker.get()
        if marker is not None:
            marker.refused = True
        if written:
            self._link.mark_dead("transport_error", "a message to the server's stdin was cut short")

    def write_now(self, data: bytes) -> None:
        """Write ``data`` (one short line) at once if the pipe takes it whole, else not at all:
        for what is not worth waiting for (a courtesy cancel, an answer to a ``ping``)."""
        if self._write_lock.locked() or len(data) > select.PIPE_BUF:
            return
        with suppress(OSError):
            os.write(self._stdin.fileno(), data)  # a pipe takes PIPE_BUF bytes whole or not

    # -- reading -----------------------------------------------------------------------------

    async def _read_stdout(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        link = self._link
        lines = LineSplitter(self._max)
        try:
            while True:
                chunk = bytes(await stdout.receive_some(_READ_SIZE))  # bytes already: not copied
                if not chunk:
                    # EOF: usually the process is exiting. Say so, rather than a bare
                    # "connection closed", when it exits promptly.
                    with trio.move_on_after(STDOUT_EOF_EXIT_WAIT):
                        code = await self.process.wait()
                        link.mark_dead("process_exited", f"server process exited with code {code}")
                    return
                # The lines before a bad one are delivered; then the connection is closed
                # (the end of the read stream fails every pending request).
                for line in lines.feed(chunk):
                    if not line.strip():
                        continue
                    try:
                        message = jsonrpc_message_adapter.validate_json(line, by_name=False)
                    except ValueError as exc:
                        if not _is_utf8(line):
                            link.mark_dead("protocol_error", NOT_UTF8)
                            return
                        if not await self._to_session(exc):
                            self._hold(exc)
                        continue
                    await self._route(message)
                if lines.overflowed:
                    link.mark_dead("protocol_error", over_bound(self._max))
                    return
        except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
            return
        finally:
            link.mark_dead("transport_error", "connection closed by the server")
            self._end()

    async def _route(self, message: Any) -> None:
        if isinstance(message, JSONRPCResponse | JSONRPCError):
            waiter = self._waiting.pop(message.id, None) if isinstance(message.id, str) else None
            if waiter is not None:
                waiter.message = _answer_of(message)
                waiter.arrived.set()
                return
            listening = self._listens.get(message.id) if isinstance(message.id, str) else None
            if listening is not None:
                listening.answer = _answer_of(message)
                listening.wake()
                return
        elif isinstance(message, JSONRPCNotification):
            subscription = _subscription_of(message)
            if isinstance(subscription, str) and subscription.startswith(_OWN_LISTEN):
                listening = self._listens.get(subscription)
                if listening is not None:  # else one that was given up: dropped
                    listening.messages.append({"method": message.method, "params": message.params})
                    listening.wake()
                return
        item = SessionMessage(message)
        if await self._to_session(item):
            return
        # No session is open (the connection is parked): a ping is answered here; anything
        # else waits for the session its owner opens for it.
        if isinstance(message, JSONRPCRequest) and message.method == "ping":
            self.write_now(_PING_ANSWER % json.dumps(message.id).encode())
            return
        self._hold(item)

    def _hold(self, item: SessionMessage | Exception) -> None:
        first = not self._pending
        self._pending.append(item)
        if first and self.on_inbound is not None:
            self.on_inbound()

    async def _read_stderr(self) -> None:
        stderr = self.process.stderr
        assert stderr is not None
        tail = StderrTail(self._link.stderr_tail)
        with suppress(trio.ClosedResourceError, trio.BrokenResourceError, OSError):
            while chunk := await stderr.receive_some(_READ_SIZE):
                tail.feed(bytes(chunk))
        tail.flush()

    async def _watch_process(self) -> None:
        code = await self.process.wait()
        self._link.mark_dead("process_exited", f"server process exited with code {code}")
        self._end()

    def _end(self) -> None:
        """The pipes are done: every session and waiter learns it (pending requests fail with
        "Connection closed")."""
        self._ended = True
        if self._attached is not None:
            self._attached.close()
            self._attached = None
        for waiter in self._waiting.values():
            waiter.arrived.set()
        self._waiting.clear()
        for listening in self._listens.values():
            listening.ended = True
            listening.wake()

    # -- requests without a session ----------------------------------------------------------

    async def _request(self, request_id: str, message: dict[str, Any]) -> dict[str, Any]:
        """Send ``message`` (a request of ours) and wait for its answer; cancelled, the server
        is told (best effort)."""
        if self._ended:
            await trio.lowlevel.checkpoint()
            raise _closed()
        waiter = _Answer()
        self._waiting[request_id] = waiter
        try:
            await self.write(_line(message))
            await waiter.arrived.wait()
        except BaseException:
            if self._waiting.pop(request_id, None) is not None:
                self._cancel(request_id)
            raise
        if waiter.message is None:
            raise _closed()
        return waiter.message

    def _cancel(self, request_id: str) -> None:
        params = {"requestId": request_id, "reason": "cancelled"}
        self.write_now(_line({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}))

    def _next_id(self, kind: str = "") -> str:
        self._sent += 1
        return f"{_OWN}{kind}{self._sent}"

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """``SessionlessRequests``: the result the server answered to ``method``; raises the
        ``MCPError`` it answered instead."""
        if method not in SESSIONLESS_METHODS:
            raise RuntimeError(f"{method} needs a session")
        request_id = self._next_id()
        answer = await self._request(request_id, request_message(request_id, method, params))
        return result_of(answer, method)

    async def notify(
        self, method: str, params: Mapping[str, Any] | None, opts: Mapping[str, Any] | None = None
    ) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = dict(params)
        await self.write(_line(message))

    async def discover(self, version: str) -> None:
        """``Link.discover_probe``: ``server/discover`` at ``version``, answered with a result."""
        request_id = self._next_id("probe-")
        check_answer(await self._request(request_id, discover_message(request_id, version)))

    async def ping(self) -> None:
        """``Link.ping_probe``: a ``ping``, answered with a result (a 2025-11-25 connection's
        probe, sent while its session may be closed)."""
        request_id = self._next_id("probe-")
        result_of(await self._request(request_id, request_message(request_id, "ping", None)), "ping")

    async def listen(self, version: str, kinds: tuple[str, ...], on_message: OnListenMessage) -> None:
        """``Link.listen_stream``: hold a ``subscriptions/listen`` stream for changes of
        ``kinds``, handing each message of it to ``on_message`` (see
        :class:`~.http_listen.PlainListen`). Returns on the server's graceful close; raises the
        ``MCPError`` it answered, or :class:`~.http_listen.ListenLostError` when the pipes
        ended first."""
        request_id = self._next_id("listen-")
        subscription = _Subscription()
        self._listens[request_id] = subscription
        try:
            if self._ended:
                raise ListenLostError("the server's pipes are closed")
            await self.write(listen_body(request_id, version, kinds) + b"\n")
            while True:
                while subscription.messages:
                    await on_message(request_id, subscription.messages.popleft())
                if subscription.answer is not None:
                    break
                if subscription.ended:
                    raise ListenLostError("the server's stdout ended without its answer")
                await subscription.wait()
        finally:
            del self._listens[request_id]
            if subscription.answer is None and not subscription.ended:
                self._cancel(request_id)
        error = subscription.answer.get("error")
        if error is not None:
            raise rpc_error(error)


_OWN = "trio-mcp-"
_OWN_LISTEN = f"{_OWN}listen-"


def _closed() -> Exception:
    from mcp.shared.exceptions import MCPError

    return MCPError(CONNECTION_CLOSED, "Connection closed")


class _SessionWrite:
    """The write stream of a session attached to :class:`StdioPipes`: each message is written
    from the sender's own task."""

    __slots__ = ("_pipes",)

    def __init__(self, pipes: StdioPipes) -> None:
        self._pipes = pipes

    async def send(self, item: SessionMessage) -> None:
        data = item.message.model_dump_json(by_alias=True, exclude_unset=True)
        await self._pipes.write(data.encode() + b"\n")

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()  # the pipes outlive the session


async def spawn(config: StdioTransport, link: Link) -> StdioPipes:
    """Start ``config``'s server in a process group of its own; its pipes, not yet read.
    Raises :class:`SessionError` (``spawn_error``) when it cannot be started."""
    from mcp.client.stdio import get_default_environment

    env = {**get_default_environment(), **(config.env or {})}
    try:
        process = await trio.lowlevel.open_process(
            [config.command, *config.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=config.cwd,
            start_new_session=True,
        )
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        if exc.errno in (errno.ENOENT, errno.EACCES, errno.ENOEXEC):
            reason = f"{reason}: {config.command!r}"
        raise SessionError(f"could not start {config.command!r}: {reason}", category="spawn_error") from exc
    pipes = StdioPipes(process, link, config.max_message_bytes)
    link.stdio = pipes
    link.discover_probe = pipes.discover
    link.ping_probe = pipes.ping
    link.listen_stream = pipes.listen
    link.sessionless = pipes
    return pipes


@asynccontextmanager
async def _open_stdio(config: StdioTransport, link: Link) -> AsyncIterator[tuple[Any, Any]]:
    """The stream pair of a session over ``link``'s stdio pipes when its connection holds them
    (``Link.stdio``: they outlive the session); else over a process of its own, started here
    and stopped on exit."""
    pipes = link.stdio
    if pipes is not None:
        yield pipes.attach()
        return
    pipes = await spawn(config, link)
    try:
        async with trio.open_nursery() as nursery:
            pipes.start(nursery)
            try:
                yield pipes.attach()
            finally:
                await pipes.aclose()
                nursery.cancel_scope.cancel()
    finally:
        # A cancellation before the nursery was entered must not leak the process. Shielded:
        # checking the group awaits a worker thread, and this may run in a cancelled scope.
        with trio.CancelScope(shield=True):
            process = pipes.process
            if process.returncode is None or await _check_group_alive(process.pid, STDIO_CLOSE_GRACE):
                await _stop_process_group(process, STDIO_CLOSE_GRACE)
