"""Wire-level faults of a scripted server: what it writes back, per connection.

A :class:`ScriptedServer` serves every in-memory connection through a :class:`Wire`: the read
side notes which requests ask for a tool whose answer is to be mangled, and the write side
mangles that answer (writes it twice, or writes something that is not a valid answer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Self

import anyio
from mcp.shared.message import SessionMessage
from mcp_types import PARSE_ERROR, ErrorData, JSONRPCError, JSONRPCRequest, JSONRPCResponse

from .._transports.base import _StreamWrapper

if TYPE_CHECKING:
    from collections.abc import Callable

WireFault = Literal["duplicate", "frame", "parse_error", "result"]
"""How the answer to a tool call is mangled:

- ``duplicate``: written twice (two responses with one id);
- ``frame``: replaced by a frame that does not parse (what a transport reports for a line of
  invalid JSON): the request is never answered;
- ``parse_error``: replaced by a JSON-RPC parse error (what the SDK's streamable HTTP client
  reports for a response body it cannot parse);
- ``result``: replaced by a result that is no ``CallToolResult``.
"""

WIRE_FAULTS: tuple[WireFault, ...] = ("duplicate", "frame", "parse_error", "result")


class GarbledFrameError(ValueError):
    """What a transport hands the client for a frame it could not parse."""


class Wire:
    """One connection's streams with the scripted wire faults applied.

    Args:
        read: the server's read stream (requests from the client).
        write: the server's write stream (answers to the client).
        fault_of: the fault to apply to the answer of a call of a tool (``None``: none),
            looked up when the request arrives.
    """

    def __init__(self, read: Any, write: Any, fault_of: Callable[[str], WireFault | None]) -> None:
        self._pending: dict[Any, WireFault] = {}
        self.read = _WireRead(read, self._pending, fault_of)
        self.write = _WireWrite(write, self._pending)


class _WireRead(_StreamWrapper):
    def __init__(
        self, inner: Any, pending: dict[Any, WireFault], fault_of: Callable[[str], WireFault | None]
    ) -> None:
        self._inner = inner
        self._pending = pending
        self._fault_of = fault_of

    @property
    def last_context(self) -> Any:
        # The SDK runs each handler in the context its message was sent from.
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Any:
        item = await self._inner.receive()
        if isinstance(item, SessionMessage):
            message = item.message
            if isinstance(message, JSONRPCRequest) and message.method == "tools/call":
                tool = (message.params or {}).get("name")
                fault = self._fault_of(tool) if isinstance(tool, str) else None
                if fault is not None:
                    self._pending[message.id] = fault
        return item

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None


class _WireWrite(_StreamWrapper):
    def __init__(self, inner: Any, pending: dict[Any, WireFault]) -> None:
        self._inner = inner
        self._pending = pending

    async def send(self, item: Any, /) -> None:
        message = item.message if isinstance(item, SessionMessage) else None
        if not isinstance(message, JSONRPCResponse | JSONRPCError) or message.id not in self._pending:
            await self._inner.send(item)
            return
        request_id = message.id
        assert request_id is not None  # only requests' ids are pending
        fault = self._pending.pop(request_id)
        if fault == "duplicate":
            await self._inner.send(item)
            await self._inner.send(item)
        elif fault == "frame":
            await self._inner.send(
                GarbledFrameError(f"unparseable frame in place of the answer to {request_id}")
            )
        elif fault == "parse_error":
            error = ErrorData(code=PARSE_ERROR, message="Failed to parse JSON response")
            await self._inner.send(SessionMessage(JSONRPCError(jsonrpc="2.0", id=request_id, error=error)))
        else:
            bogus = JSONRPCResponse(jsonrpc="2.0", id=request_id, result={"content": "not a list"})
            await self._inner.send(SessionMessage(bogus))
