"""Transports: ``open_transport(config, link)`` yields the SDK stream pair for one connection.

Every transport is entered and exited by the supervisor task that owns the connection.
The streams handed to the SDK are wrapped so that we learn

- whether a request was ever written (``sent_marker``: a context variable the caller sets;
  the write happens in the caller's task, so the marker is the caller's own), which decides
  whether failover may run a side-effecting tool again;
- when the peer is gone (read side ended), so the supervisor reconnects at once;
- and so that the SDK's courtesy ``notifications/cancelled`` never blocks the caller: it is
  handed to a supervisor-owned forwarder, so a caller's deadline holds even when the
  transport's writer is wedged by a hung server.
"""

from __future__ import annotations

import contextvars
import errno
import json
import os
import signal
import subprocess
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from types import TracebackType
from typing import Any, Self

import anyio
import trio
from mcp.shared.message import SessionMessage
from mcp_types import JSONRPCNotification, JSONRPCRequest, jsonrpc_message_adapter

from ._config import HttpTransport, MemoryTransport, StdioTransport, TransportConfig
from ._exceptions import SessionError

STDIO_CLOSE_GRACE = 2.0
"""Seconds a stdio server gets to exit after its stdin is closed, and again after SIGTERM."""
STDOUT_EOF_EXIT_WAIT = 0.5
"""Seconds to wait for a stdio server to exit after its stdout ended, to report why."""
CANCEL_NOTICE_WRITE_TIMEOUT = 5.0
"""A courtesy cancel notice that cannot be written within this many seconds marks the
connection as wedged; the supervisor restarts it."""
_CANCEL_NOTICE_QUEUE = 256
_STDERR_LINES = 20


class SentMarker:
    """Set by the write wrapper when a request leaves through this task's context.

    ``sent``: the request was handed to the transport (it may have executed).
    ``refused``: the transport later proved it never reached the server (an HTTP POST whose
    connection could not be established), so it did not execute after all.
    """

    __slots__ = ("refused", "sent")

    def __init__(self) -> None:
        self.sent = False
        self.refused = False

    @property
    def delivered(self) -> bool:
        """Whether the request may have reached the server."""
        return self.sent and not self.refused


sent_marker: contextvars.ContextVar[SentMarker | None] = contextvars.ContextVar(
    "trio_mcp_sent_marker", default=None
)


class Link:
    """What one connection's transport knows about the peer, shared with its supervisor."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.dead = trio.Event()
        self.exit_reason: tuple[str, str] | None = None
        self.http_status: int | None = None
        self.stderr_tail: deque[str] = deque(maxlen=_STDERR_LINES)
        self._notice_send, self._notice_receive = trio.open_memory_channel[SessionMessage](
            _CANCEL_NOTICE_QUEUE
        )
        self.track_delivery = False
        """Set by transports that can tell an undelivered request (streamable HTTP)."""
        self.awaiting_delivery: dict[str, SentMarker] = {}

    def mark_dead(self, category: str, reason: str) -> None:
        if self.exit_reason is None:
            if self.stderr_tail and category == "process_exited":
                reason = f"{reason}; stderr: {self.stderr_tail[-1]}"
            self.exit_reason = (category, reason)
        self.dead.set()

    def queue_cancel_notice(self, item: SessionMessage) -> None:
        try:
            self._notice_send.send_nowait(item)
        except trio.WouldBlock:
            self.mark_dead("transport_error", "transport wedged: cancel notices are not being written")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def forward_cancel_notices(self, write: Callable[[SessionMessage], Any]) -> None:
        """Write queued cancel notices; runs in the supervisor's connection nursery."""
        async for item in self._notice_receive:
            with trio.move_on_after(CANCEL_NOTICE_WRITE_TIMEOUT) as scope:
                try:
                    await write(item)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, trio.BrokenResourceError):
                    return
            if scope.cancelled_caught:
                self.mark_dead("transport_error", "transport wedged: a cancel notice could not be written")
                return


class _StreamWrapper:
    """Shared plumbing of the stream wrappers: closing and the async context manager."""

    _inner: Any

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class _ReadStreamWrapper(_StreamWrapper):
    """A wrapped read stream: iteration ends where ``receive`` reaches the end of the stream."""

    async def receive(self) -> Any:
        raise NotImplementedError

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None


class _LinkedReadStream(_ReadStreamWrapper):
    """Wraps the SDK read stream: its end means the peer is gone."""

    def __init__(self, inner: Any, link: Link) -> None:
        self._inner = inner
        self._link = link

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    def _ended(self) -> None:
        if self._link.exit_reason is None:
            if self._link.http_status is not None and self._link.http_status in (401, 403):
                self._link.mark_dead("auth_required", f"HTTP {self._link.http_status}")
            else:
                self._link.mark_dead("transport_error", "connection closed by the server")
        self._link.dead.set()

    async def receive(self) -> Any:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._ended()
            raise


class _LinkedWriteStream(_StreamWrapper):
    """Wraps the SDK write stream: marks requests as sent and diverts cancel notices."""

    def __init__(self, inner: Any, link: Link) -> None:
        self._inner = inner
        self._link = link

    async def send(self, item: SessionMessage, /) -> None:
        message = item.message
        if isinstance(message, JSONRPCNotification) and message.method == "notifications/cancelled":
            self._link.queue_cancel_notice(item)
            await trio.lowlevel.checkpoint()
            return
        if not isinstance(message, JSONRPCRequest):
            await self._inner.send(item)
            return
        marker = sent_marker.get()
        if marker is not None and self._link.track_delivery:
            self._link.awaiting_delivery[str(message.id)] = marker
        try:
            await self._inner.send(item)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            # The stream was already closed: the request provably never left.
            raise
        except BaseException:
            # A write interrupted midway may still have delivered: count it as sent.
            if marker is not None:
                marker.sent = True
            raise
        if marker is not None:
            marker.sent = True

    async def send_direct(self, item: SessionMessage) -> None:
        await self._inner.send(item)


# ---------------------------------------------------------------------------------------------
# stdio
# ---------------------------------------------------------------------------------------------


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


def _signal_group(pgid: int, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _stop_process_group(process: trio.Process, grace: float) -> None:
    """Close stdin, let the server exit, then SIGTERM / SIGKILL its whole process group.

    Runs shielded; every wait is bounded. Grandchildren are reached through the group even
    when the leader has already exited.
    """
    pgid = process.pid
    with trio.CancelScope(shield=True):
        if process.stdin is not None:
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await process.stdin.aclose()
        with trio.move_on_after(grace):
            await process.wait()
        if process.returncode is None or _group_alive(pgid):
            _signal_group(pgid, signal.SIGTERM)
            with trio.move_on_after(grace):
                while process.returncode is None or _group_alive(pgid):
                    if process.returncode is None:
                        with trio.move_on_after(0.02):
                            await process.wait()
                    else:
                        await trio.sleep(0.02)
        if process.returncode is None or _group_alive(pgid):
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

    read_send, read_receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_send, write_receive = anyio.create_memory_object_stream[SessionMessage](0)

    async def read_stdout() -> None:
        buffer = b""
        async with read_send:
            try:
                while True:
                    chunk = await stdout.receive_some(65536)
                    if not chunk:
                        # EOF: usually the process is exiting. Say so, rather than a bare
                        # "connection closed", when it exits promptly.
                        with trio.move_on_after(STDOUT_EOF_EXIT_WAIT):
                            code = await process.wait()
                            link.mark_dead("process_exited", f"server process exited with code {code}")
                        return
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if not line.strip():
                            continue
                        item: SessionMessage | Exception
                        try:
                            item = SessionMessage(jsonrpc_message_adapter.validate_json(line, by_name=False))
                        except ValueError as exc:
                            item = exc
                        await read_send.send(item)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, trio.ClosedResourceError, OSError):
                return

    async def read_stderr() -> None:
        buffer = b""
        with suppress(trio.ClosedResourceError, trio.BrokenResourceError, OSError):
            while chunk := await stderr.receive_some(65536):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        link.stderr_tail.append(line.decode("utf-8", "replace")[:500])
                buffer = buffer[-4096:]

    async def write_stdin() -> None:
        async with write_receive:
            try:
                async for message in write_receive:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                    await stdin.send_all(data.encode())
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
        # A cancellation before the nursery was entered must not leak the process.
        if process.returncode is None or _group_alive(process.pid):
            await _stop_process_group(process, STDIO_CLOSE_GRACE)


# ---------------------------------------------------------------------------------------------
# streamable HTTP
# ---------------------------------------------------------------------------------------------


def _request_id_of(request: Any) -> str | None:
    """The JSON-RPC id of the request a POST carries, if it carries one."""
    try:
        body = json.loads(request.content)
    except Exception:  # a streamed or non-JSON body carries no request we track
        return None
    if isinstance(body, dict) and "method" in body and body.get("id") is not None:
        return str(body["id"])
    return None


def _linked_http_transport(link: Link) -> Any:
    """An httpx2 transport that marks ``link`` dead when a POST cannot be delivered.

    The SDK runs every request's POST in its transport task group, so a failed POST (server
    down: connection refused) cancels the whole connection before any caller or probe sees an
    error. Marking the link first lets the supervisor record why the connection died. GET
    (the legacy event stream) is left alone: the SDK retries it by itself.
    """
    import httpx2

    from ._errors import classify

    class LinkedHttpTransport(httpx2.AsyncBaseTransport):
        def __init__(self) -> None:
            self._inner = httpx2.AsyncHTTPTransport()

        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            request_id = _request_id_of(request) if request.method == "POST" else None
            marker = link.awaiting_delivery.pop(request_id, None) if request_id is not None else None
            try:
                return await self._inner.handle_async_request(request)
            except Exception as exc:
                if request.method == "POST":
                    if marker is not None and isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout):
                        # No connection, so not one byte of this request reached the server.
                        marker.refused = True
                    failure = classify(exc)
                    link.mark_dead(failure.category, failure.message)
                raise

        async def aclose(self) -> None:
            await self._inner.aclose()

    return LinkedHttpTransport()


@asynccontextmanager
async def _open_http(config: HttpTransport, link: Link) -> AsyncIterator[tuple[Any, Any]]:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    link.track_delivery = True

    async def on_response(response: httpx2.Response) -> None:
        if response.status_code >= 400:
            link.http_status = response.status_code

    from ._auth import build_httpx_auth

    client = httpx2.AsyncClient(
        headers=dict(config.headers or {}),
        auth=build_httpx_auth(config.auth, config.url),
        timeout=httpx2.Timeout(30.0, read=300.0),
        event_hooks={"response": [on_response]},
        transport=_linked_http_transport(link),
    )
    async with client, streamable_http_client(config.url, http_client=client) as (read, write):
        yield read, write


# ---------------------------------------------------------------------------------------------
# in-memory
# ---------------------------------------------------------------------------------------------


class MemoryConnectionInfo:
    """Per-connection facts an in-memory server's handlers can read (via ``memory_connection``)."""

    __slots__ = ("handshaken", "number")

    def __init__(self, number: int) -> None:
        self.number = number
        self.handshaken = False


memory_connection: contextvars.ContextVar[MemoryConnectionInfo | None] = contextvars.ContextVar(
    "trio_mcp_memory_connection", default=None
)


class _TaggedReadStream(_ReadStreamWrapper):
    """Server side of an in-memory connection: handlers see ``memory_connection`` set.

    The SDK runs each handler in the context its message was sent from (the client's), so
    the tag is added to a copy of that context.
    """

    def __init__(self, inner: Any, info: MemoryConnectionInfo) -> None:
        self._inner = inner
        self._info = info
        self.last_context: contextvars.Context | None = None

    async def receive(self) -> Any:
        item = await self._inner.receive()
        sender = getattr(self._inner, "last_context", None)
        context = sender.run(contextvars.copy_context) if sender is not None else contextvars.copy_context()
        context.run(memory_connection.set, self._info)
        self.last_context = context
        return item


class MemoryServerHooks:
    """Fault hooks for in-memory servers (used by :mod:`trio_mcp.testing`)."""

    def __init__(self) -> None:
        self.refuse_connections = False
        self.legacy_only = False
        self._live: set[trio.CancelScope] = set()
        self.connections_opened = 0
        self.connect_attempts: list[float] = []
        """Trio-clock times of every connection attempt, refused ones included."""

    def kill_connections(self) -> int:
        """Drop every live connection as if the server crashed; returns how many."""
        live = list(self._live)
        for scope in live:
            scope.cancel()
        return len(live)

    @property
    def live_connections(self) -> int:
        return len(self._live)


def _lowlevel(server: Any) -> Any:
    from mcp.server.mcpserver import MCPServer

    if isinstance(server, MCPServer):
        return server._lowlevel_server
    inner = getattr(server, "mcp_server", None)
    if inner is not None:
        return _lowlevel(inner)
    return server


@asynccontextmanager
async def _open_memory(config: MemoryTransport, link: Link) -> AsyncIterator[tuple[Any, Any]]:
    from mcp.server.runner import serve_loop
    from mcp.shared.memory import create_client_server_memory_streams

    hooks: MemoryServerHooks | None = getattr(config.server, "_trio_mcp_hooks", None)
    if hooks is not None:
        hooks.connect_attempts.append(trio.current_time())
    if hooks is not None and hooks.refuse_connections:
        raise ConnectionRefusedError(errno.ECONNREFUSED, "connection refused (in-memory server is down)")
    server = _lowlevel(config.server)
    legacy_only = hooks is not None and hooks.legacy_only

    async with create_client_server_memory_streams() as (client_streams, server_streams):
        client_read, client_write = client_streams
        server_read, server_write = server_streams
        server_scope = trio.CancelScope()
        server_done = trio.Event()

        async def run_server() -> None:
            read: Any = server_read
            if hooks is not None:
                hooks._live.add(server_scope)
                hooks.connections_opened += 1
                read = _TaggedReadStream(server_read, MemoryConnectionInfo(hooks.connections_opened))
            try:
                with server_scope:
                    if legacy_only:
                        async with server.lifespan(server) as state:
                            await serve_loop(
                                server,
                                read,
                                server_write,
                                lifespan_state=state,
                                init_options=server.create_initialization_options(),
                            )
                    else:
                        await server.run(read, server_write, server.create_initialization_options())
            finally:
                if hooks is not None:
                    hooks._live.discard(server_scope)
                link.mark_dead("transport_error", "connection closed by the server")
                # EOF for the client: pending requests get "Connection closed".
                with trio.CancelScope(shield=True):
                    await server_write.aclose()
                    await server_read.aclose()
                server_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_server, name=f"{link.server}: in-memory server")
            try:
                yield client_read, client_write
            finally:
                with trio.CancelScope(shield=True):
                    await client_write.aclose()
                    with trio.move_on_after(STDIO_CLOSE_GRACE):
                        await server_done.wait()
                nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------------


@asynccontextmanager
async def open_transport(
    config: TransportConfig, link: Link
) -> AsyncIterator[tuple[_LinkedReadStream, _LinkedWriteStream]]:
    """Open ``config``'s transport; yield the wrapped (read, write) SDK stream pair."""
    opener: Any
    if isinstance(config, StdioTransport):
        opener = _open_stdio
    elif isinstance(config, HttpTransport):
        opener = _open_http
    else:
        opener = _open_memory
    async with opener(config, link) as (read, write):
        yield _LinkedReadStream(read, link), _LinkedWriteStream(write, link)


__all__ = [
    "Link",
    "MemoryConnectionInfo",
    "MemoryServerHooks",
    "SentMarker",
    "memory_connection",
    "open_transport",
    "sent_marker",
]
