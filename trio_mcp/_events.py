"""The manager's state-change stream, and the bounded, filterable logs fed from it.

Every server's state transitions, every invocation lifecycle event and the end of every
invocation go through one :class:`EventStream` per manager, in order, numbered by ``seq``. The
connection log (status changes) and the invocation log are fed from it; so are subscribers
(metrics, a status page, persistence), each through its own bounded channel.
"""

from __future__ import annotations

import itertools
import logging
import math
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import trio

if TYPE_CHECKING:
    from ._attempt import Attempt
    from ._state import ServerState

DEFAULT_EVENT_LOG_SIZE = 1000
DEFAULT_SUBSCRIBER_BUFFER = 1000

logger = logging.getLogger("trio_mcp")


@dataclass(frozen=True, kw_only=True)
class ConnectionEvent:
    """A server's status changed."""

    seq: int
    server: str
    from_status: str
    to_status: str
    reason: str
    category: str | None
    correlation_id: str | None
    at: float
    """Trio-clock time."""
    timestamp: float
    """Unix timestamp derived from the manager's clock anchor."""
    replica: str | None = None
    """The process that recorded it, when read from a history that several share (``None``:
    this process's own log)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["from"] = data.pop("from_status")
        data["to"] = data.pop("to_status")
        return data


@dataclass(kw_only=True, slots=True)
class InvocationEvent:
    """One step of an invocation on one server."""

    seq: int
    kind: str
    """``handshake_start`` / ``handshake_success`` / ``handshake_failure`` /
    ``invoke_start`` / ``invoke_success`` / ``invoke_failure``."""
    server: str
    method: str
    request_id: str
    target: str | None
    error: str | None
    category: str | None
    at: float
    timestamp: float
    replica: str | None = None
    """The process that recorded it, when read from a history that several share (``None``:
    this process's own log)."""

    @property
    def correlation_id(self) -> str:
        return self.request_id

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["correlation_id"] = self.request_id
        return data


@dataclass(frozen=True, kw_only=True, slots=True)
class StateChange:
    """One transition of one server's state, as its supervisor applied it."""

    seq: int
    server: str
    previous: ServerState
    current: ServerState
    reason: str
    category: str | None
    correlation_id: str | None
    at: float
    timestamp: float


@dataclass(kw_only=True, slots=True)
class InvocationFinished:
    """An invocation ended: how, where, and every attempt it made.

    Delivered to the stream's subscribers and listeners only (the invocation log keeps the
    steps on each server). An invocation cancelled by its caller ends without one.
    """

    seq: int
    method: str
    target: str | None
    request_id: str
    outcome: str
    """``success``; ``tool_error`` (the tool answered with ``isError``); ``rejected`` (the
    request itself was refused: no failover); ``not_offered`` (no server offers the target);
    ``failed`` (it executed nowhere) or ``unknown`` (a request was sent: it may have executed)."""
    server: str | None
    """The server that answered or refused; otherwise the last one tried (``None``: none was)."""
    attempts: tuple[Attempt, ...]
    started_at: float
    """Trio-clock time."""
    at: float
    """Trio-clock time."""
    timestamp: float

    @property
    def correlation_id(self) -> str:
        return self.request_id

    @property
    def duration(self) -> float:
        return self.at - self.started_at


E = TypeVar("E", ConnectionEvent, InvocationEvent)
StreamEvent = StateChange | InvocationEvent | InvocationFinished
"""What the state-change stream carries."""


class EventLog(Generic[E]):
    """A bounded log: the newest ``maxlen`` events are kept.

    With ``build``, the log may also keep an event as the tuple of fields ``build`` makes it
    from, when nobody listens (an invocation's steps are logged on every call and read far
    less often): it is built when it is read.

    ``recorded`` counts every event ever appended; ``dropped`` those pushed out.
    """

    def __init__(
        self, maxlen: int = DEFAULT_EVENT_LOG_SIZE, *, build: Callable[[tuple[Any, ...]], E] | None = None
    ) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be >= 1")
        self._events: deque[E | tuple[Any, ...]] = deque(maxlen=maxlen)
        self.recorded = 0
        self._listeners: list[Callable[[E], None]] = []
        self._build: Callable[[tuple[Any, ...]], E] | None = build

    @property
    def maxlen(self) -> int:
        assert self._events.maxlen is not None
        return self._events.maxlen

    @property
    def dropped(self) -> int:
        return self.recorded - len(self._events)

    def append(self, event: E) -> None:
        self._events.append(event)
        self.recorded += 1
        if self._listeners:
            _call_listeners(self._listeners, event)

    def _read(self, entry: E | tuple[Any, ...]) -> E:
        if isinstance(entry, tuple):
            assert self._build is not None
            return self._build(entry)
        return entry

    def add_listener(self, listener: Callable[[E], None]) -> Callable[[], None]:
        """Call ``listener`` synchronously for every new event; returns a function that removes it.

        A listener that raises is logged and otherwise ignored: it cannot break the state
        transition that produced the event.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[E]:
        return map(self._read, list(self._events))

    def query(self, *, limit: int | None = None, **filters: str | None) -> list[E]:
        """Events matching every non-``None`` filter (attribute == value), oldest first,
        keeping only the newest ``limit``."""
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        active = {k: v for k, v in filters.items() if v is not None}
        matched = [e for e in self if all(getattr(e, k) == v for k, v in active.items())]
        if limit is not None:
            matched = matched[-limit:] if limit else []
        return matched

    def __repr__(self) -> str:
        return f"<EventLog {len(self)}/{self.maxlen} recorded={self.recorded}>"


def _call_listeners(listeners: list[Callable[[Any], None]], event: Any) -> None:
    for listener in list(listeners):
        try:
            listener(event)
        except Exception:
            logger.exception("event listener %r failed", listener)


class EventStream:
    """One manager's ordered stream of state changes and invocation events.

    Writers (each server's supervisor for its transitions; invocations for their lifecycle
    events and their end) call :meth:`state_changed` / :meth:`invocation` /
    :meth:`invocation_finished`; it numbers the event, appends it to the bounded logs and
    hands it to every subscriber without ever blocking: a subscriber that falls behind loses
    events, counted in its ``dropped``.
    """

    def __init__(self, anchor: Any, *, connection_log_size: int, invocation_log_size: int) -> None:
        self._anchor = anchor
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self._id_prefix = uuid.uuid4().hex[:8]
        self.connection_log: EventLog[ConnectionEvent] = EventLog(connection_log_size)
        self.invocation_log: EventLog[InvocationEvent] = EventLog(
            invocation_log_size, build=self._invocation_event
        )
        self._subscribers: list[_Subscriber] = []
        self._listeners: list[Callable[[StreamEvent], None]] = []
        self.routing_version = 0
        """Counts the state changes that can change where an invocation goes (a status, a
        catalog or a retry window): what is derived from the states for routing is good while
        it stays the same."""

    def new_correlation_id(self) -> str:
        """A fresh id joining the events one operation caused (unique per manager)."""
        return f"{self._id_prefix}-{next(self._ids):x}"

    def state_changed(
        self,
        server: str,
        previous: ServerState,
        current: ServerState,
        *,
        reason: str,
        category: str | None,
        correlation_id: str | None,
        at: float,
    ) -> None:
        seq = next(self._seq)
        timestamp = self._anchor.at(at)
        if (
            current.status is not previous.status
            or current.catalog is not previous.catalog
            or current.retry_at != previous.retry_at
        ):
            self.routing_version += 1
        if current.status is not previous.status:
            self.connection_log.append(
                ConnectionEvent(
                    seq=seq,
                    server=server,
                    from_status=previous.status.value,
                    to_status=current.status.value,
                    reason=reason,
                    category=category,
                    correlation_id=correlation_id,
                    at=at,
                    timestamp=timestamp,
                )
            )
        if self._subscribers or self._listeners:
            self._deliver(
                StateChange(
                    seq=seq,
                    server=server,
                    previous=previous,
                    current=current,
                    reason=reason,
                    category=category,
                    correlation_id=correlation_id,
                    at=at,
                    timestamp=timestamp,
                )
            )

    def invocation(
        self,
        kind: str,
        server: str,
        method: str,
        request_id: str,
        target: str | None,
        error: str | None,
        category: str | None,
        at: float,
    ) -> None:
        fields = (next(self._seq), kind, server, method, request_id, target, error, category, at)
        log = self.invocation_log
        if not (self._subscribers or self._listeners or log._listeners):
            # Nobody wants the event now: it is built when the log is read.
            log._events.append(fields)
            log.recorded += 1
            return
        event = self._invocation_event(fields)
        log.append(event)
        if self._subscribers or self._listeners:
            self._deliver(event)

    def _invocation_event(self, fields: tuple[Any, ...]) -> InvocationEvent:
        seq, kind, server, method, request_id, target, error, category, at = fields
        return InvocationEvent(
            seq=seq,
            kind=kind,
            server=server,
            method=method,
            request_id=request_id,
            target=target,
            error=error,
            category=category,
            at=at,
            timestamp=self._anchor.at(at),
        )

    def invocation_finished(
        self,
        method: str,
        target: str | None,
        request_id: str,
        outcome: str,
        server: str | None,
        attempts: tuple[Attempt, ...],
        started_at: float,
    ) -> None:
        """An invocation ended now (only subscribers and listeners see it)."""
        seq = next(self._seq)
        if self._subscribers or self._listeners:
            at = trio.current_time()
            self._deliver(
                InvocationFinished(
                    seq=seq,
                    method=method,
                    target=target,
                    request_id=request_id,
                    outcome=outcome,
                    server=server,
                    attempts=attempts,
                    started_at=started_at,
                    at=at,
                    timestamp=self._anchor.at(at),
                )
            )

    def _deliver(self, event: StreamEvent) -> None:
        for subscriber in self._subscribers:
            subscriber.offer(event)
        if self._listeners:
            _call_listeners(self._listeners, event)

    def add_listener(self, listener: Callable[[StreamEvent], None]) -> Callable[[], None]:
        """Call ``listener`` synchronously for every event; returns a function that removes it.
        A listener that raises is logged and ignored."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    @contextmanager
    def subscribe(self, max_buffer: int = DEFAULT_SUBSCRIBER_BUFFER) -> Iterator[_Subscription]:
        """Receive every event from now on, in order, through a bounded buffer.

        Use as ``with stream.subscribe() as sub: async for event in sub.receive: ...``; when the
        buffer is full, new events are dropped and counted in ``sub.dropped``.
        """
        if max_buffer < 1 and max_buffer != math.inf:
            raise ValueError("max_buffer must be >= 1")
        send, receive = trio.open_memory_channel[StreamEvent](max_buffer)
        subscriber = _Subscriber(send)
        self._subscribers.append(subscriber)
        try:
            with receive:
                yield _Subscription(receive, subscriber)
        finally:
            self._subscribers.remove(subscriber)
            send.close()


class _Subscriber:
    __slots__ = ("dropped", "send")

    def __init__(self, send: trio.MemorySendChannel[StreamEvent]) -> None:
        self.send = send
        self.dropped = 0

    def offer(self, event: StreamEvent) -> None:
        try:
            self.send.send_nowait(event)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self.dropped += 1


class _Subscription:
    """A subscriber's end of the stream: ``receive`` (a trio receive channel) and ``dropped``."""

    def __init__(self, receive: trio.MemoryReceiveChannel[StreamEvent], subscriber: _Subscriber) -> None:
        self.receive = receive
        self._subscriber = subscriber

    @property
    def dropped(self) -> int:
        return self._subscriber.dropped

    def __aiter__(self) -> trio.MemoryReceiveChannel[StreamEvent]:
        return self.receive
