"""A stdio MCP server that records every execution in a ledger file, keyed by invocation id.

    python tests/chaos/ledger_server.py --name s1 --ledger /tmp/ledger.txt

It speaks the handshake era (``initialize``, ``ping``, ``tools/list``, ``tools/call``; the SDK
1.x dialect most servers speak) directly on its pipes, without the SDK: a server that is killed
a thousand times must restart in milliseconds, not in the second its imports would take.

Each line of the ledger (appended with one ``write``, so a kill never leaves half a line):
``<server> <pid> <event> <tool> <invocation id>``, events ``up`` (the process started; tool and
id are ``-``), ``start`` (an execution started), ``done`` (it finished) and ``half`` (half of its
answer was written).

Tools: ``charge(invocation_id, amount)`` (a side effect) and ``lookup(invocation_id)``
(idempotent). Both take ``delay`` (seconds to take; with ``--gate FILE``, counted from when that
file appears), ``hold`` and ``hold_on``: when ``hold_on`` names this server,
``hold="after_start"`` keeps the execution running after its ``start`` line, and
``hold="mid_response"`` writes half of the answer's line, records ``half``, and then writes
nothing more. Either way the process stays up until it is killed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import trio

PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602

_ARGUMENTS = {
    "invocation_id": {"type": "string"},
    "delay": {"type": "number"},
    "hold": {"type": "string"},
    "hold_on": {"type": "string"},
}
TOOLS = [
    {
        "name": "charge",
        "description": "Charge an amount: a side effect, never run it twice.",
        "inputSchema": {
            "type": "object",
            "properties": {**_ARGUMENTS, "amount": {"type": "integer"}},
            "required": ["invocation_id"],
        },
    },
    {
        "name": "lookup",
        "description": "Look something up (idempotent).",
        "inputSchema": {"type": "object", "properties": _ARGUMENTS, "required": ["invocation_id"]},
        "annotations": {"readOnlyHint": True, "idempotentHint": True},
    },
]


class Server:
    def __init__(self, name: str, ledger: str, gate: str | None = None) -> None:
        self.name = name
        self._gate = gate
        self._gate_open = trio.Event()
        self._ledger = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._out = trio.lowlevel.FdStream(os.dup(1))
        self._write_lock = trio.Lock()
        self._calls: dict[Any, trio.CancelScope] = {}

    def record(self, event: str, tool: str = "-", invocation_id: str = "-") -> None:
        # One short line, one write, to a file opened O_APPEND: whole, whatever kills us.
        os.write(self._ledger, f"{self.name} {os.getpid()} {event} {tool} {invocation_id}\n".encode())

    async def send(self, message: dict[str, Any], *, cut: str | None = None) -> None:
        data = (json.dumps(message) + "\n").encode()
        async with self._write_lock:
            if cut is not None:
                await self._out.send_all(data[: len(data) // 2])
                self.record("half", "-", cut)
                await trio.sleep_forever()
            await self._out.send_all(data)

    async def answer(self, request_id: Any, result: dict[str, Any]) -> None:
        await self.send({"jsonrpc": "2.0", "id": request_id, "result": result})

    async def refuse(self, request_id: Any, code: int, message: str) -> None:
        await self.send({"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}})

    async def handle(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        request_id = message.get("id")
        params = message.get("params") or {}
        if request_id is None:  # a notification
            if method == "notifications/cancelled":
                scope = self._calls.get(params.get("requestId"))
                if scope is not None:
                    scope.cancel()
            return
        if method == "initialize":
            wanted = params.get("protocolVersion")
            version = wanted if wanted in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
            info = {"name": self.name, "version": "1"}
            await self.answer(
                request_id, {"protocolVersion": version, "capabilities": {"tools": {}}, "serverInfo": info}
            )
        elif method == "ping":
            await self.answer(request_id, {})
        elif method == "tools/list":
            await self.answer(request_id, {"tools": TOOLS})
        elif method == "tools/call":
            scope = trio.CancelScope()
            self._calls[request_id] = scope
            try:
                with scope:
                    await self.call(request_id, params.get("name"), params.get("arguments") or {})
            finally:
                del self._calls[request_id]
        else:
            await self.refuse(request_id, METHOD_NOT_FOUND, "Method not found")

    async def call(self, request_id: Any, tool: Any, arguments: dict[str, Any]) -> None:
        invocation_id = arguments.get("invocation_id")
        if tool not in ("charge", "lookup") or not isinstance(invocation_id, str):
            await self.refuse(request_id, INVALID_PARAMS, f"unknown tool {tool!r} or no invocation_id")
            return
        held = arguments.get("hold_on") == self.name
        hold = arguments.get("hold") if held else None
        self.record("start", tool, invocation_id)
        if hold == "after_start":
            await trio.sleep_forever()
        delay = arguments.get("delay") or 0
        if delay:
            await self._gate_open.wait()
            await trio.sleep(float(delay))
        self.record("done", tool, invocation_id)
        text = f"{self.name} {tool} {invocation_id}"
        result = {"content": [{"type": "text", "text": text}], "isError": False}
        cut = invocation_id if hold == "mid_response" else None
        await self.send({"jsonrpc": "2.0", "id": request_id, "result": result}, cut=cut)

    async def watch_gate(self) -> None:
        if self._gate is not None:
            gate = trio.Path(self._gate)
            while True:
                if await gate.exists():
                    break
                await trio.sleep(0.01)  # a file has no creation event to wait on
        self._gate_open.set()

    async def serve(self) -> None:
        self.record("up")
        stdin = trio.lowlevel.FdStream(os.dup(0))
        buffer = b""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.watch_gate)
            while chunk := await stdin.receive_some(65536):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        nursery.start_soon(self.handle, json.loads(line))
            nursery.cancel_scope.cancel()  # stdin closed: the client is gone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--gate", help="delays count from when this file appears")
    args = parser.parse_args()
    try:
        trio.run(Server(args.name, args.ledger, args.gate).serve)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
