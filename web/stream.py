"""``GET /api/v1/mcp/events/stream``: the manager's event stream as server-sent events.

Three kinds of event, each with the stream's ``seq`` as its SSE ``id``:

- ``connection``: a server's status changed (the same object as in ``GET /events``);
- ``invocation``: a step of an invocation (the same object as in ``GET /invocation-events``);
- ``server``: any change of a server's state, with the server's full payload as in
  ``GET /servers/{name}`` (what a live view needs; not replayed on resume).

A client that reconnects with ``Last-Event-ID`` first gets the ``connection`` and
``invocation`` events it missed that the bounded logs still hold, then the live stream. A
``dropped`` event says how many events this client lost because it read too slowly (it should
then re-read the state). Events are captured from the ``: connected`` comment on, which is the
first line of the stream. A comment line every few seconds keeps proxies from closing an idle
stream. The stream ends when the manager starts shutting down.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import trio

from trio_mcp import InvocationEvent, Manager, StateChange

from . import schemas

KEEPALIVE_SECONDS = 10.0
SUBSCRIBER_BUFFER = 2048
_POLL_SECONDS = 1.0
"""How often an idle stream looks whether the manager is shutting down."""


def frame(kind: str, seq: int | None, data: Any) -> bytes:
    """One server-sent event."""
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _connection(change: StateChange, replica: str | None) -> dict[str, Any]:
    return {
        "seq": change.seq,
        "server": change.server,
        "from": change.previous.status.value,
        "to": change.current.status.value,
        "reason": change.reason,
        "category": change.category,
        "correlation_id": change.correlation_id,
        "at": change.at,
        "timestamp": change.timestamp,
        "replica": replica,
    }


def _missed(manager: Manager, server: str | None, after: int, replica: str | None) -> list[tuple[int, bytes]]:
    """The logged events after ``after``, oldest first."""
    out: list[tuple[int, bytes]] = []
    for c in manager.connection_log.query(server=server):
        if c.seq > after:
            out.append((c.seq, frame("connection", c.seq, schemas.event_dict(c, replica))))
    for i in manager.invocation_log.query(server=server):
        if i.seq > after:
            out.append((i.seq, frame("invocation", i.seq, schemas.event_dict(i, replica))))
    out.sort(key=lambda pair: pair[0])
    return out


def _live(manager: Manager, server: str | None, event: object, replica: str | None) -> list[bytes]:
    if isinstance(event, StateChange):
        if server is not None and event.server != server:
            return []
        out = []
        if event.current.status is not event.previous.status:
            out.append(frame("connection", event.seq, _connection(event, replica)))
        try:
            snapshot = manager.server(event.server)
        except LookupError:  # removed since
            return out
        out.append(frame("server", event.seq, schemas.server_dict(manager, snapshot)))
        return out
    if isinstance(event, InvocationEvent):
        if server is not None and event.server != server:
            return []
        return [frame("invocation", event.seq, schemas.event_dict(event, replica))]
    return []


async def events(
    manager: Manager, *, server: str | None, last_event_id: int | None, replica: str | None = None
) -> AsyncIterator[bytes]:
    """The SSE body: missed events (after ``last_event_id``), then live ones until shutdown."""
    with manager.stream.subscribe(SUBSCRIBER_BUFFER) as subscription:
        # Subscribed before reading the logs: nothing falls between the replay and the live
        # stream, and what is in both is sent once (by seq).
        yield b": connected\n\n"
        seen = 0
        if last_event_id is not None:
            for seq, data in _missed(manager, server, last_event_id, replica):
                seen = seq
                yield data
        dropped = 0
        idle = 0.0
        while manager.accepting:
            event = None
            with trio.move_on_after(_POLL_SECONDS):
                event = await subscription.receive.receive()
            if event is None:
                idle += _POLL_SECONDS
                if idle >= KEEPALIVE_SECONDS:
                    idle = 0.0
                    yield b": keep-alive\n\n"
                continue
            idle = 0.0
            if subscription.dropped != dropped:
                dropped = subscription.dropped
                yield frame("dropped", None, {"dropped": dropped})
            if event.seq <= seen:
                continue
            for data in _live(manager, server, event, replica):
                yield data
