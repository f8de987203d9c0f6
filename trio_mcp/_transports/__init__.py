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

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from .._config import HttpTransport, StdioTransport, TransportConfig
from .base import Link, SentMarker, _LinkedReadStream, _LinkedWriteStream, sent_marker
from .http import HttpPool, _open_http
from .memory import MemoryConnectionInfo, MemoryServerHooks, _open_memory, memory_connection
from .stdio import _open_stdio


@asynccontextmanager
async def open_transport(
    config: TransportConfig, link: Link, *, http_pool: HttpPool | None = None
) -> AsyncIterator[tuple[_LinkedReadStream, _LinkedWriteStream]]:
    """Open ``config``'s transport; yield the wrapped (read, write) SDK stream pair.

    ``http_pool``: the keep-alive pools a streamable HTTP connection shares with the other
    servers of its manager (without one, the connection gets a private pool).
    """
    opener: Any
    if isinstance(config, StdioTransport):
        opener = _open_stdio(config, link)
    elif isinstance(config, HttpTransport):
        opener = _open_http(config, link, http_pool)
    else:
        opener = _open_memory(config, link)
    async with opener as (read, write):
        yield _LinkedReadStream(read, link), _LinkedWriteStream(write, link)


__all__ = [
    "HttpPool",
    "Link",
    "MemoryConnectionInfo",
    "MemoryServerHooks",
    "SentMarker",
    "memory_connection",
    "open_transport",
    "sent_marker",
]
