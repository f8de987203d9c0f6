"""What every transport shares: the connection's :class:`Link`, the ``sent_marker``, and the
wrappers put around the SDK's streams."""

from __future__ import annotations

import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Protocol, Self

import anyio
import trio
from mcp.shared.message import SessionMessage
from mcp_types import JSONRPCNotification, JSONRPCRequest

from .._failure import LinkFacts

STDIO_CLOSE_GRACE = 2.0
"""Seconds a stdio server gets to exit after its stdin is closed, and again after SIGTERM."""
STDOUT_EOF_EXIT_WAIT = 0.5
"""Seconds to wait for a stdio server to exit after its stdout ended, to report why."""
CANCEL_NOTICE_WRITE_TIMEOUT = 5.0
"""A courtesy cancel notice that cannot be written within this many seconds marks the
connection as wedged; the supervisor restarts it."""
_CANCEL_NOTICE_QUEUE = 256
_STDERR_LINES = 20


def size_text(size: int) -> str:
    """``size`` bytes in words: ``8 MiB``, ``1 KiB``, ``1000 bytes``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


def over_bound(max_bytes: int) -> str:
    """Why a connection was closed: the server sent a message larger than ``max_bytes``."""
    return f"message over {size_text(max_bytes)} (max_message_bytes)"


class LineSplitter:
    """Splits a byte stream into lines (without their newline), none longer than ``max_bytes``.

    Never holds more than ``max_bytes`` of an unfinished line: :meth:`feed` returns the lines
    completed before a line that is (or grows) over the bound, and then sets ``overflowed``
    and takes nothing more.
    """

    __slots__ = ("_max", "_parts", "_size", "overflowed")

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._parts: list[bytes] = []
        self._size = 0
        self.overflowed = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines ``chunk`` completes, in order, up to the first one over the bound."""
        if self.overflowed:
            return []
        pieces = chunk.split(b"\n")
        rest = pieces.pop()
        lines: list[bytes] = []
        for piece in pieces:
            if self._parts:
                if self._size + len(piece) > self._max:
                    return self._overflow(lines)
                self._parts.append(piece)
                piece = b"".join(self._parts)
                self._parts.clear()
                self._size = 0
            elif len(piece) > self._max:
                return self._overflow(lines)
            lines.append(piece)
        if rest:
            if self._size + len(rest) > self._max:
                return self._overflow(lines)
            self._parts.append(rest)
            self._size += len(rest)
        return lines

    @property
    def pending(self) -> int:
        """Bytes of the unfinished line held now."""
        return self._size

    def _overflow(self, lines: list[bytes]) -> list[bytes]:
        self.overflowed = True
        self._parts.clear()
        self._size = 0
        return lines


class SentMarker:
    """Set by the write wrapper when a request leaves through this task's context.

    ``sent``: the request was handed to the transport (it may have executed).
    ``refused``: the transport later proved it never reached the server (an HTTP POST whose
    connection could not be established), so it did not execute after all.
    ``scope``: the attempt's cancel scope, which a transport that runs the request in the
    caller's task cancels to end it when the connection closes, setting ``cut`` (see
    ``memory._DirectCalls``).
    """

    __slots__ = ("cut", "refused", "scope", "sent")

    def __init__(self, scope: trio.CancelScope | None = None) -> None:
        self.sent = False
        self.refused = False
        self.scope = scope
        self.cut = False

    @property
    def delivered(self) -> bool:
        """Whether the request may have reached the server."""
        return self.sent and not self.refused


sent_marker: contextvars.ContextVar[SentMarker | None] = contextvars.ContextVar(
    "trio_mcp_sent_marker", default=None
)


OnListenMessage = Callable[[str, dict[str, Any]], Awaitable[None]]
ListenStream = Callable[[str, tuple[str, ...], OnListenMessage], Awaitable[None]]
"""``listen(version, kinds, on_message)``: hold a ``subscriptions/listen`` stream for list
changes of ``kinds``, handing each message read on it to ``on_message(subscription_id,
message)``, until it ends (see :class:`~.http_listen.PlainListen`)."""


class SessionlessRequests(Protocol):
    """Sends a request that needs no session by itself (the dispatcher of an SDK session that
    is never entered: ``http_probe.SessionlessDispatcher``, ``stdio.StdioPipes``)."""

    handshaking: bool
    """Whether what it sends is the connection's handshake (its owner clears it once the
    connection is up)."""

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: Mapping[str, Any] | None = None
    ) -> dict[str, Any]: ...


class PlainCallSender(Protocol):
    """Sends every request of a session by itself (``http_probe.PlainCalls``)."""

    on_notification: Callable[[dict[str, Any]], Awaitable[None]] | None

    def abandon(self) -> None: ...

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: Mapping[str, Any] | None = None
    ) -> dict[str, Any]: ...

    async def notify(
        self, method: str, params: Mapping[str, Any] | None, opts: Mapping[str, Any] | None = None
    ) -> None: ...


class HeldPipes(Protocol):
    """A stdio server's pipes held by its connection (``stdio.StdioPipes``)."""

    def attach(self) -> tuple[Any, Any]:
        """The (read, write) stream pair of an SDK session opened over them."""
        ...


class Link:
    """What one connection's transport knows about the peer, shared with its supervisor."""

    __slots__ = (
        "_notice_receive",
        "_notice_send",
        "awaiting_delivery",
        "dead",
        "discover_probe",
        "exit_reason",
        "http_status",
        "listen_stream",
        "ping_probe",
        "plain_calls",
        "server",
        "sessionless",
        "stderr_tail",
        "stdio",
        "track_delivery",
        "until_still",
    )

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
        """Set by transports that can tell an undelivered request only after it was handed on
        (streamable HTTP: the POST found no connection). A stdio write happens in the caller's
        task and marks its ``sent_marker`` itself."""
        self.awaiting_delivery: dict[str, SentMarker] = {}
        self.discover_probe: Callable[[str], Awaitable[None]] | None = None
        """A ``server/discover`` at the given version that the transport sends by itself,
        outside the SDK session (streamable HTTP: one POST; stdio: one line); ``None``: probe
        through the session."""
        self.ping_probe: Callable[[], Awaitable[None]] | None = None
        """A ``ping`` that the transport sends by itself, outside the SDK session (stdio: one
        line); ``None``: ping through the session."""
        self.listen_stream: ListenStream | None = None
        """A ``subscriptions/listen`` stream that the transport holds by itself, outside the SDK
        session (plain streamable HTTP, stdio); ``None``: listen through the session."""
        self.sessionless: SessionlessRequests | None = None
        """A dispatcher for an SDK session that is never entered, sending the requests that
        need no session (the handshake's) by itself (plain streamable HTTP, stdio); ``None``:
        they go through an open session."""
        self.plain_calls: PlainCallSender | None = None
        """A dispatcher for the SDK session a 2026-07-28 connection is served with, sending
        every request by itself, one POST each (plain streamable HTTP: ``http_probe.PlainCalls``);
        ``None``: an SDK session is opened over the transport."""
        self.stdio: HeldPipes | None = None
        """The stdio process and pipes the connection holds, which outlive its SDK sessions
        (a session is opened over them, see ``stdio.StdioPipes.attach``); ``None``: not stdio,
        or each session has a process of its own."""
        self.until_still: Callable[[float], Awaitable[None]] | None = None
        """``until_still(at_most)`` returns once no handshake to the server's origin is under
        way (or after ``at_most`` seconds), for what can wait until then (plain streamable
        HTTP); ``None``: nothing waits."""

    def facts(self) -> LinkFacts:
        """What this transport knows now, as plain facts (for classifying a failure)."""
        return LinkFacts(self.exit_reason, self.http_status)

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

    __slots__ = ()
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

    __slots__ = ()

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

    __slots__ = ("_inner", "_link")

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

    async def __anext__(self) -> Any:
        # The session iterates: one frame less than ``receive`` under the default ``__anext__``,
        # crossed by every message.
        try:
            return await self._inner.receive()
        except anyio.EndOfStream:
            self._ended()
            raise StopAsyncIteration from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._ended()
            raise


class _LinkedWriteStream(_StreamWrapper):
    """Wraps the SDK write stream: marks requests as sent and diverts cancel notices."""

    __slots__ = ("_inner", "_link")

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
        if self._link.dead.is_set():
            # The transport already knows the peer is gone (a stdio server that exited, say):
            # the request is not written, so it provably never reached the server.
            await trio.lowlevel.checkpoint()
            raise anyio.BrokenResourceError("the connection is dead")
        marker = sent_marker.get()
        if marker is not None and self._link.track_delivery:
            self._link.awaiting_delivery[str(message.id)] = marker
        try:
            await self._inner.send(item)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            # The stream was already closed: the request provably never left.
            if marker is not None:
                self._link.awaiting_delivery.pop(str(message.id), None)
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
