"""Bounded, filterable event logs with correlation ids."""

from __future__ import annotations

import itertools
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

DEFAULT_EVENT_LOG_SIZE = 1000

_counter = itertools.count(1)


_ID_PREFIX = uuid.uuid4().hex[:8]
_ids = itertools.count(1)


def new_correlation_id() -> str:
    """A fresh id joining the events one operation caused (unique per process run)."""
    return f"{_ID_PREFIX}-{next(_ids):x}"


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

    @property
    def correlation_id(self) -> str:
        return self.request_id

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["correlation_id"] = self.request_id
        return data


E = TypeVar("E", ConnectionEvent, InvocationEvent)


next_seq = _counter.__next__
"""The next event sequence number (shared by both logs, so their events interleave in order)."""


class EventLog(Generic[E]):
    """A bounded log: the newest ``maxlen`` events are kept.

    ``recorded`` counts every event ever appended; ``dropped`` those pushed out.
    """

    def __init__(self, maxlen: int = DEFAULT_EVENT_LOG_SIZE) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be >= 1")
        self._events: deque[E] = deque(maxlen=maxlen)
        self.recorded = 0
        self._listeners: list[Callable[[E], None]] = []

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
        for listener in self._listeners:
            listener(event)

    def add_listener(self, listener: Callable[[E], None]) -> Callable[[], None]:
        """Call ``listener`` synchronously for every new event; returns a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[E]:
        return iter(self._events)

    def query(self, *, limit: int | None = None, **filters: str | None) -> list[E]:
        """Events matching every non-``None`` filter (attribute == value), oldest first,
        keeping only the newest ``limit``."""
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        active = {k: v for k, v in filters.items() if v is not None}
        matched = [e for e in self._events if all(getattr(e, k) == v for k, v in active.items())]
        if limit is not None:
            matched = matched[-limit:] if limit else []
        return matched

    def __repr__(self) -> str:
        return f"<EventLog {len(self)}/{self.maxlen} recorded={self.recorded}>"
