"""The stdio transport: a server process in its own process group, torn down as a whole."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
import trio
from mcp.shared.message import SessionMessage
from mcp_types import JSONRPCRequest, jsonrpc_message_adapter

from .._config import StdioTransport
from .._exceptions import SessionError
from .base import STDIO_CLOSE_GRACE, STDOUT_EOF_EXIT_WAIT, LineSplitter, Link, over_bound

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


@asynccontextmanager
async def _open_stdio(config: StdioTransport, link: Link) -> AsyncIterator[tuple[Any, Any]]:
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
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    stdin, stdout, stderr = process.stdin, process.stdout, process.stderr

    link.track_delivery = True
    read_send, read_receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_send, write_receive = anyio.create_memory_object_stream[SessionMessage](0)

    max_bytes = config.max_message_bytes

    async def read_stdout() -> None:
        lines = LineSplitter(max_bytes)
        async with read_send:
            try:
                while True:
                    chunk = bytes(await stdout.receive_some(_READ_SIZE))  # bytes already: not copied
                    if not chunk:
                        # EOF: usually the process is exiting. Say so, rather than a bare
                        # "connection closed", when it exits promptly.
                        with trio.move_on_after(STDOUT_EOF_EXIT_WAIT):
                            code = await process.wait()
                            link.mark_dead("process_exited", f"server process exited with code {code}")
                        return
                    # The lines before a bad one are delivered; then the connection is closed
                    # (the end of the read stream fails every pending request).
                    for line in lines.feed(chunk):
                        if not line.strip():
                            continue
                        item: SessionMessage | Exception
                        try:
                            item = SessionMessage(jsonrpc_message_adapter.validate_json(line, by_name=False))
                        except ValueError as exc:
                            if not _is_utf8(line):
                                link.mark_dead("protocol_error", NOT_UTF8)
                                return
                            item = exc
                        await read_send.send(item)
                    if lines.overflowed:
                        link.mark_dead("protocol_error", over_bound(max_bytes))
                        return
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, trio.ClosedResourceError, OSError):
                return

    async def read_stderr() -> None:
        tail = StderrTail(link.stderr_tail)
        with suppress(trio.ClosedResourceError, trio.BrokenResourceError, OSError):
            while chunk := await stderr.receive_some(_READ_SIZE):
                tail.feed(bytes(chunk))
        tail.flush()

    async def write_stdin() -> None:
        async with write_receive:
            try:
                async for message in write_receive:
                    request = message.message
                    marker = (
                        link.awaiting_delivery.pop(str(request.id), None)
                        if isinstance(request, JSONRPCRequest)
                        else None
                    )
                    data = request.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                    try:
                        await stdin.send_all(data.encode())
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        # Its newline was never written: the server did not get this request.
                        if marker is not None:
                            marker.refused = True
                        raise
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                link.mark_dead("transport_error", "could not write to the server's stdin")
                read_send.close()

    async def watch_process() -> None:
        code = await process.wait()
        link.mark_dead("process_exited", f"server process exited with code {code}")
        # The dispatcher wakes every pending request with "Connection closed".
        read_send.close()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_stdout, name=f"{link.server}: read stdout")
            nursery.start_soon(read_stderr, name=f"{link.server}: read stderr")
            nursery.start_soon(write_stdin, name=f"{link.server}: write stdin")
            nursery.start_soon(watch_process, name=f"{link.server}: watch process")
            try:
                yield read_receive, write_send
            finally:
                write_send.close()
                read_receive.close()
                await _stop_process_group(process, STDIO_CLOSE_GRACE)
                nursery.cancel_scope.cancel()
    finally:
        # A cancellation before the nursery was entered must not leak the process. Shielded:
        # checking the group awaits a worker thread, and this may run in a cancelled scope.
        with trio.CancelScope(shield=True):
            if process.returncode is None or await _check_group_alive(process.pid, STDIO_CLOSE_GRACE):
                await _stop_process_group(process, STDIO_CLOSE_GRACE)
