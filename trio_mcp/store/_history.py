"""The event history: connection and invocation events, written to the store in batches.

One :class:`EventWriter` task per process takes the events the manager's event stream appends
to its connection and invocation logs, through a bounded buffer, and writes them in batches,
one transaction each. Nothing on the invocation path waits for it: taking an event is a
list append (no task is woken per event). When the store is slow the buffer fills and
further events are dropped (counted); when it is down, batches are dropped (counted) and a
write is tried again after a backoff. Both are logged (logger ``trio_mcp.store``) and
exported as metrics.

:class:`History` answers the API's event queries from the store, after asking the writer to
write what it holds, so an answer includes the events that happened before the request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from .._events import ConnectionEvent, EventStream, InvocationEvent
from .._exceptions import UnknownServerError
from ._base import Store
from ._errors import StoreUnavailableError
from ._location import Retention

if TYPE_CHECKING:
    from .._manager import Manager

logger = logging.getLogger("trio_mcp.store")

DEFAULT_BUFFER = 10_000
"""Events the writer holds for the store; more are dropped while it is full."""
DEFAULT_BATCH_SIZE = 1000
"""At most this many events per transaction."""
DEFAULT_BATCH_INTERVAL = 0.2
"""Seconds an event may wait for others to share its transaction."""
DEFAULT_PRUNE_INTERVAL = 60.0
"""Seconds between two deletions of the events that the retention no longer keeps."""
RETRY_INITIAL = 0.5
RETRY_MAX = 15.0
"""Seconds (doubling) before a write is tried again after the store failed one."""
DROP_LOG_INTERVAL = 10.0
"""At most one log line about dropped events per this many seconds."""
FLUSH_TIMEOUT = 2.0
"""Seconds a read of the history waits for the writer to write what it holds."""

HistoryEvent = ConnectionEvent | InvocationEvent


@dataclass(frozen=True, kw_only=True)
class HistoryStatistics:
    """What the writer did since it started.

    Attributes:
        written: events stored.
        dropped_buffer_full: events never taken: the buffer was full (a slow store).
        dropped_unavailable: events not stored: the store was unavailable.
        buffered: events waiting in the buffer now.
        available: whether the last write succeeded.
        last_error: why the last failed write failed.
    """

    written: int
    dropped_buffer_full: int
    dropped_unavailable: int
    buffered: int
    available: bool
    last_error: str | None

    @property
    def dropped(self) -> int:
        return self.dropped_buffer_full + self.dropped_unavailable


def history_rows(batch: Sequence[HistoryEvent]) -> tuple[list[ConnectionEvent], list[InvocationEvent]]:
    """``batch`` split into its connection and its invocation events."""
    connection = [e for e in batch if isinstance(e, ConnectionEvent)]
    invocation = [e for e in batch if isinstance(e, InvocationEvent)]
    return connection, invocation


class EventWriter:
    """Writes the events of ``stream``'s logs to ``store`` in batches; the one writer of the
    history.

    It takes each event as the stream appends it to its connection or invocation log (a
    listener of the log: a bounded list append, no task switch), and wakes up once per batch.

    Args:
        store: where the events go.
        stream: the manager's event stream.
        replica: this process's id, stored with every event.
        retention: what to keep (``None``: everything).
        buffer: events held while the store is busy; more are dropped.
        batch_size: at most this many events per transaction.
        batch_interval: seconds an event may wait for others to share its transaction.
        prune_interval: seconds between two deletions of what ``retention`` does not keep.
        unix_time: the wall clock, for the retention's age.
    """

    def __init__(
        self,
        store: Store,
        stream: EventStream,
        *,
        replica: str,
        retention: Retention | None,
        buffer: int = DEFAULT_BUFFER,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_interval: float = DEFAULT_BATCH_INTERVAL,
        prune_interval: float = DEFAULT_PRUNE_INTERVAL,
        unix_time: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._stream = stream
        self.replica = replica
        self._retention = retention if retention is not None and retention != Retention() else None
        self._buffer = buffer
        self._batch_size = batch_size
        self._batch_interval = batch_interval
        self._prune_interval = prune_interval
        self._unix_time = unix_time
        self._pending: list[HistoryEvent] = []
        self._arrived = trio.Event()
        """Set when an event arrives in an empty buffer."""
        self._running = False
        self._received = 0
        self._handled = 0
        self._progress = trio.Event()
        self._hurry = 0
        self._collecting: trio.CancelScope | None = None
        self._written = 0
        self._dropped_buffer_full = 0
        self._dropped_unavailable = 0
        self._available = True
        self._last_error: str | None = None
        self._retry_at = -float("inf")
        self._backoff = RETRY_INITIAL
        self._dropped_at_outage = 0
        self._logged_drops = 0
        self._next_drop_log_at = -float("inf")

    def statistics(self) -> HistoryStatistics:
        return HistoryStatistics(
            written=self._written,
            dropped_buffer_full=self._dropped_buffer_full,
            dropped_unavailable=self._dropped_unavailable,
            buffered=len(self._pending),
            available=self._available,
            last_error=self._last_error,
        )

    def _take(self, event: HistoryEvent) -> None:
        """The logs' listener: runs on the path that published ``event``, so it only appends."""
        if len(self._pending) >= self._buffer:
            self._dropped_buffer_full += 1
            return
        self._pending.append(event)
        self._received += 1
        if len(self._pending) == 1:
            self._arrived.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write until cancelled. Events already in the stream's logs are written first."""
        stream = self._stream
        # The backlog and the listeners are taken together (no checkpoint between): nothing is
        # missed or written twice.
        self._pending = sorted([*stream.connection_log, *stream.invocation_log], key=lambda e: e.seq)
        self._received = len(self._pending)
        detach = [
            stream.connection_log.add_listener(self._take),
            stream.invocation_log.add_listener(self._take),
        ]
        self._running = True
        try:
            prune_at = trio.current_time()
            if self._retention is not None:
                # Before started(): what the retention drops is never read.
                await self._prune(self._retention)
                prune_at += self._prune_interval
            task_status.started()
            while True:
                if self._retention is not None and trio.current_time() >= prune_at:
                    await self._prune(self._retention)
                    prune_at = trio.current_time() + self._prune_interval
                batch = await self._collect(wake_at=prune_at if self._retention is not None else float("inf"))
                await self._write(batch)
                self._log_buffer_drops()
        finally:
            self._running = False
            for remove in detach:
                remove()

    async def _collect(self, *, wake_at: float) -> list[HistoryEvent]:
        if not self._pending:
            with trio.move_on_at(wake_at):
                await self._arrived.wait()
            if not self._pending:
                return []
        if not self._hurry and len(self._pending) < self._batch_size:
            # Let the batch fill: the events are taken without this task, which sleeps.
            with trio.move_on_after(self._batch_interval) as self._collecting:
                await trio.sleep_forever()
            self._collecting = None
        batch = self._pending[: self._batch_size]
        self._pending = self._pending[self._batch_size :]
        self._arrived = trio.Event()
        if self._pending:
            self._arrived.set()
        return batch

    async def _write(self, batch: Sequence[HistoryEvent]) -> None:
        connection, invocation = history_rows(batch)
        count = len(batch)
        try:
            if not count:
                return
            if not self._available and trio.current_time() < self._retry_at:
                self._dropped_unavailable += count
                return
            try:
                await self._store.write_events(self.replica, connection, invocation)
            except StoreUnavailableError as exc:
                self._failed(exc, count)
            else:
                self._written += count
                if not self._available:
                    self._available = True
                    self._backoff = RETRY_INITIAL
                    logger.warning(
                        "event history: the store is back; %d events were dropped while it was unavailable",
                        self._dropped_unavailable - self._dropped_at_outage,
                    )
        finally:
            self._handled += count
            self._progress.set()
            self._progress = trio.Event()

    def _failed(self, exc: StoreUnavailableError, count: int) -> None:
        self._last_error = exc.reason
        if self._available:
            self._available = False
            self._dropped_at_outage = self._dropped_unavailable
            self._backoff = RETRY_INITIAL
            logger.warning(
                "event history: the store is unavailable (%s): events are dropped until it is back",
                exc.reason,
            )
        else:
            self._backoff = min(self._backoff * 2, RETRY_MAX)
        self._dropped_unavailable += count
        self._retry_at = trio.current_time() + self._backoff

    def _log_buffer_drops(self) -> None:
        dropped = self._dropped_buffer_full
        if dropped > self._logged_drops and trio.current_time() >= self._next_drop_log_at:
            logger.warning(
                "event history: %d events dropped: the buffer of %d was full (the store is slower than "
                "the events)",
                dropped - self._logged_drops,
                self._buffer,
            )
            self._logged_drops = dropped
            self._next_drop_log_at = trio.current_time() + DROP_LOG_INTERVAL

    async def _prune(self, retention: Retention) -> None:
        try:
            deleted = await self._store.prune_events(retention, now=self._unix_time())
        except StoreUnavailableError as exc:
            logger.debug("event history: pruning failed: %s", exc)
            return
        if deleted:
            logger.debug("event history: %d events past the retention (%s) deleted", deleted, retention)

    async def flush(self) -> None:
        """Return once every event taken before this call is written (or dropped).

        Waits as long as the store takes: bound it with a cancel scope.
        """
        target = self._received
        if not self._running or self._handled >= target:
            return
        self._hurry += 1
        try:
            if self._collecting is not None:
                self._collecting.cancel()
            while self._handled < target:
                await self._progress.wait()
        finally:
            self._hurry -= 1

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<EventWriter replica={self.replica} written={s.written} dropped={s.dropped} "
            f"buffered={s.buffered} available={s.available}>"
        )


class History:
    """The API's event queries, answered from the store (the whole fleet's history, this
    process's previous runs and other replicas included)."""

    def __init__(self, store: Store, writer: EventWriter) -> None:
        self._store = store
        self._writer = writer

    async def _flushed(self) -> None:
        with trio.move_on_after(FLUSH_TIMEOUT):
            await self._writer.flush()

    async def _check_known(self, manager: Manager, server: str | None, found: bool) -> None:
        if server is not None and not found and server not in manager.names:
            if not await self._store.has_events(server):
                raise UnknownServerError(server)

    async def connection_events(
        self,
        manager: Manager,
        *,
        server: str | None = None,
        correlation_id: str | None = None,
        limit: int | None = None,
    ) -> list[ConnectionEvent]:
        """Like :meth:`Manager.connection_events`, from the store; without ``limit``, the
        newest as many as the manager's connection log holds. When the store cannot answer,
        the manager's log answers."""
        await self._flushed()
        try:
            events = await self._store.connection_events(
                server=server,
                correlation_id=correlation_id,
                limit=limit if limit is not None else manager.connection_log.maxlen,
            )
            await self._check_known(manager, server, bool(events))
        except StoreUnavailableError as exc:
            logger.warning("event history: %s; answering from this process's log", exc)
            return manager.connection_events(server=server, correlation_id=correlation_id, limit=limit)
        return events

    async def invocation_events(
        self,
        manager: Manager,
        *,
        server: str | None = None,
        method: str | None = None,
        request_id: str | None = None,
        correlation_id: str | None = None,
        limit: int | None = None,
    ) -> list[InvocationEvent]:
        """Like :meth:`Manager.invocation_events`, from the store (see :meth:`connection_events`)."""
        if correlation_id is not None:
            if request_id is not None and request_id != correlation_id:
                await self._check_known_or_fallback(manager, server)
                return []
            request_id = correlation_id
        await self._flushed()
        try:
            events = await self._store.invocation_events(
                server=server,
                method=method,
                request_id=request_id,
                limit=limit if limit is not None else manager.invocation_log.maxlen,
            )
            await self._check_known(manager, server, bool(events))
        except StoreUnavailableError as exc:
            logger.warning("event history: %s; answering from this process's log", exc)
            return manager.invocation_events(server=server, method=method, request_id=request_id, limit=limit)
        return events

    async def _check_known_or_fallback(self, manager: Manager, server: str | None) -> None:
        try:
            await self._check_known(manager, server, False)
        except StoreUnavailableError:
            manager.invocation_events(server=server, limit=0)
