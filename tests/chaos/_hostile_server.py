"""A hostile MCP server: it answers the handshake like any other, and then misbehaves on purpose.

    python tests/chaos/_hostile_server.py stdio --behaviour huge_line [--size BYTES]
    python tests/chaos/_hostile_server.py http --behaviour huge_json [--size BYTES] [--port PORT]

It speaks the handshake era (``initialize``, ``ping``, ``tools/list``, ``tools/call``) in plain
JSON-RPC, without the SDK: what it must get wrong, no SDK would let it write. In HTTP mode it is
its own HTTP/1.1 server (one request per connection, ``Connection: close``) and prints the port
it listens on as the first line of its stdout.

Tools: ``echo(text)``; ``hold()``, answered only when ``trigger`` is called, and before the
server misbehaves (so the client can tell that the messages before the bad one arrived); and
``trigger()``, which waits for a ``hold`` to be pending, answers it, and then does what
``--behaviour`` says (``--size`` bytes of it, 100 MiB by default):

stdio
    ``long_line``: an answer whose text is ``size`` bytes long, on one line (not hostile: what
    a server with large answers writes).
    ``huge_line``: the start of the answer and then ``size`` bytes with no newline, ever.
    ``not_utf8``: an answer line holding bytes that are not UTF-8.
    ``stderr_flood``: ``size`` bytes on stderr with no newline, then a proper answer.
    ``wrong_id``: an answer for another request's id, then the proper answer.
    ``wrong_id_only``: only the answer for another request's id.
http
    ``huge_json``: a chunked JSON answer whose text is ``size`` bytes long.
    ``gzip_bomb``: the same body, gzip-compressed (about 0.1 % of its size on the wire).
    ``endless_sse``: an event stream whose one event never ends: ``data:`` lines of 64 KiB,
    ``size`` bytes of them, no empty line; then the stream stays open.
    ``sse_not_utf8``: an event holding bytes that are not UTF-8.
    ``wrong_id``: a JSON answer for another request's id.
``none``: no misbehaviour (``trigger`` answers ``triggered``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zlib
from collections.abc import AsyncIterator
from typing import Any

import trio

PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
MIB = 1024 * 1024
STDIO_BEHAVIOURS = ("none", "long_line", "huge_line", "not_utf8", "stderr_flood", "wrong_id", "wrong_id_only")
HTTP_BEHAVIOURS = ("none", "huge_json", "gzip_bomb", "endless_sse", "sse_not_utf8", "wrong_id")
WRONG_ID_OFFSET = 1000
"""The id of the stray answer: the trigger's id plus this (no request of the client's has it)."""

TOOLS = [
    {"name": name, "description": description, "inputSchema": {"type": "object"}}
    for name, description in (
        ("echo", "Answer the text given."),
        ("hold", "Answer when trigger is called."),
        ("trigger", "Answer the holds, then misbehave."),
    )
]


def text_result(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": False}


def frame(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def answer(request_id: Any, result: dict[str, Any]) -> bytes:
    return frame({"jsonrpc": "2.0", "id": request_id, "result": result})


def refusal(request_id: Any, code: int, message: str) -> bytes:
    return frame({"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}})


def answer_prefix(request_id: Any) -> bytes:
    """The start of an answer whose text is still to come (and never ends, or ends late)."""
    return (
        b'{"jsonrpc": "2.0", "id": '
        + json.dumps(request_id).encode()
        + b', "result": {"content": [{"type": "text", "text": "'
    )


ANSWER_SUFFIX = b'"}], "isError": false}}'
NOT_UTF8 = b"caf\xe9 \xff\xfe"
"""Latin-1 and stray bytes: not UTF-8."""


def filler(size: int, piece: int = MIB) -> list[int]:
    """``size`` cut in pieces of at most ``piece`` bytes."""
    return [min(piece, size - start) for start in range(0, size, piece)]


class Protocol:
    """The handshake-era dialect both modes speak; the transport does the writing."""

    def __init__(self, behaviour: str, size: int) -> None:
        self.behaviour = behaviour
        self.size = size
        self.holds: list[Any] = []
        self.hold_added = trio.Event()

    def answer_to(self, message: dict[str, Any]) -> bytes | None:
        """The answer to a request that the server answers at once (``None``: a tool call)."""
        method = message.get("method")
        request_id = message.get("id")
        params = message.get("params") or {}
        if method == "initialize":
            wanted = params.get("protocolVersion")
            version = wanted if wanted in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
            info = {"name": "hostile", "version": "1"}
            return answer(
                request_id, {"protocolVersion": version, "capabilities": {"tools": {}}, "serverInfo": info}
            )
        if method == "ping":
            return answer(request_id, {})
        if method == "tools/list":
            return answer(request_id, {"tools": TOOLS})
        if method == "tools/call":
            tool = params.get("name")
            if tool == "echo":
                return answer(request_id, text_result(str((params.get("arguments") or {}).get("text", ""))))
            if tool in ("hold", "trigger"):
                return None
            return refusal(request_id, INVALID_PARAMS, f"unknown tool {tool!r}")
        return refusal(request_id, METHOD_NOT_FOUND, "Method not found")

    async def wait_for_hold(self) -> list[Any]:
        """The holds pending now (waiting a little for the first): they are answered first."""
        with trio.move_on_after(10):
            while not self.holds:
                await self.hold_added.wait()
                self.hold_added = trio.Event()
        holds, self.holds = self.holds, []
        return holds

    def add_hold(self, request_id: Any) -> None:
        self.holds.append(request_id)
        self.hold_added.set()


# ---------------------------------------------------------------------------------------------
# stdio
# ---------------------------------------------------------------------------------------------


class StdioServer:
    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        self.out = trio.lowlevel.FdStream(os.dup(1))
        self.err = trio.lowlevel.FdStream(os.dup(2))
        self.lock = trio.Lock()
        self.released: dict[Any, trio.Event] = {}

    async def write(self, *parts: bytes) -> None:
        async with self.lock:
            await self.out.send_all(b"".join(parts))

    async def handle(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        if request_id is None:
            return  # a notification
        reply = self.protocol.answer_to(message)
        if reply is not None:
            await self.write(reply, b"\n")
            return
        if message["params"]["name"] == "hold":
            self.protocol.add_hold(request_id)
            return  # answered by the trigger, in the same write as what comes next
        await self.trigger(request_id)

    async def trigger(self, request_id: Any) -> None:
        behaviour, size = self.protocol.behaviour, self.protocol.size
        held = b"".join(answer(h, text_result("held")) + b"\n" for h in await self.protocol.wait_for_hold())
        if behaviour == "long_line":
            await self.write(held, answer(request_id, text_result("x" * size)), b"\n")
        elif behaviour == "huge_line":
            async with self.lock:
                await self.out.send_all(held + answer_prefix(request_id))
                for piece in filler(size):
                    await self.out.send_all(b"x" * piece)
            await trio.sleep_forever()
        elif behaviour == "not_utf8":
            line = answer_prefix(request_id) + NOT_UTF8 + ANSWER_SUFFIX
            await self.write(held, line, b"\n")
        elif behaviour == "stderr_flood":
            await self.write(held)
            for piece in filler(size):
                await self.err.send_all(b"e" * piece)
            await self.write(answer(request_id, text_result("flooded")), b"\n")
        elif behaviour in ("wrong_id", "wrong_id_only"):
            stray = answer(request_id + WRONG_ID_OFFSET, text_result("not yours"))
            own = answer(request_id, text_result("yours")) + b"\n" if behaviour == "wrong_id" else b""
            await self.write(held, stray, b"\n", own)
        else:
            await self.write(held, answer(request_id, text_result("triggered")), b"\n")

    async def serve(self) -> None:
        stdin = trio.lowlevel.FdStream(os.dup(0))
        buffer = b""
        async with trio.open_nursery() as nursery:
            while chunk := await stdin.receive_some(65536):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        nursery.start_soon(self.handle, json.loads(line))
            nursery.cancel_scope.cancel()  # stdin closed: the client is gone


# ---------------------------------------------------------------------------------------------
# http
# ---------------------------------------------------------------------------------------------


async def read_request(stream: trio.SocketStream) -> tuple[str, bytes]:
    """The method and body of one HTTP/1.1 request (bodies come with a Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise EOFError
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method = lines[0].split(" ", 1)[0]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise EOFError
        body += chunk
    return method, body


def head(
    status: str, content_type: str | None, *, chunked: bool = False, length: int | None = None, **extra: str
) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Connection: close"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines.extend(f"{k.replace('_', '-')}: {v}" for k, v in extra.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk_of(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def json_body(request_id: Any, size: int) -> AsyncIterator[bytes]:
    yield answer_prefix(request_id)
    for piece in filler(size):
        yield b"x" * piece
        await trio.lowlevel.checkpoint()
    yield ANSWER_SUFFIX


class HttpServer:
    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol

    async def reply_json(self, stream: trio.SocketStream, body: bytes, status: str = "200 OK") -> None:
        await stream.send_all(head(status, "application/json", length=len(body)) + body)

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            method, body = await read_request(stream)
            if method != "POST":
                await stream.send_all(head("405 Method Not Allowed", None, length=0))
                return
            message = json.loads(body)
            if message.get("id") is None:
                await stream.send_all(head("202 Accepted", None, length=0))
                return
            reply = self.protocol.answer_to(message)
            if reply is not None:
                await self.reply_json(stream, reply)
            elif message["params"]["name"] == "hold":
                done = trio.Event()
                self.protocol.add_hold((message["id"], stream, done))
                await done.wait()
            else:
                await self.trigger(stream, message["id"])
        except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await stream.aclose()

    async def trigger(self, stream: trio.SocketStream, request_id: Any) -> None:
        for hold_id, hold_stream, done in await self.protocol.wait_for_hold():
            try:
                await self.reply_json(hold_stream, answer(hold_id, text_result("held")))
                # Each request has its own connection: misbehave only once the client has read
                # the answer (and closed that connection), so that it came first for the client
                # too.
                with trio.move_on_after(10):
                    while await hold_stream.receive_some(65536):
                        pass
            finally:
                done.set()
        behaviour, size = self.protocol.behaviour, self.protocol.size
        if behaviour == "huge_json":
            await stream.send_all(head("200 OK", "application/json", chunked=True))
            async for part in json_body(request_id, size):
                await stream.send_all(chunk_of(part))
            await stream.send_all(b"0\r\n\r\n")
        elif behaviour == "gzip_bomb":
            await stream.send_all(head("200 OK", "application/json", chunked=True, content_encoding="gzip"))
            packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            async for part in json_body(request_id, size):
                packed = packer.compress(part)
                if packed:
                    await stream.send_all(chunk_of(packed))
            await stream.send_all(chunk_of(packer.flush()) + b"0\r\n\r\n")
        elif behaviour == "endless_sse":
            await stream.send_all(head("200 OK", "text/event-stream"))
            line = b"data: " + b"x" * (64 * 1024 - 7) + b"\n"
            for _ in range(size // len(line) + 1):
                await stream.send_all(line)
            await trio.sleep_forever()
        elif behaviour == "sse_not_utf8":
            event = b"event: message\ndata: " + answer_prefix(request_id) + NOT_UTF8 + ANSWER_SUFFIX + b"\n\n"
            await stream.send_all(head("200 OK", "text/event-stream") + event)
            await trio.sleep_forever()
        elif behaviour == "wrong_id":
            await self.reply_json(stream, answer(request_id + WRONG_ID_OFFSET, text_result("not yours")))
        else:
            await self.reply_json(stream, answer(request_id, text_result("triggered")))

    async def serve(self, port: int) -> None:
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        bound = listeners[0].socket.getsockname()[1]
        sys.stdout.write(f"{bound}\n")
        sys.stdout.flush()
        await trio.serve_listeners(self.handle, listeners)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("stdio", "http"))
    parser.add_argument("--behaviour", default="none")
    parser.add_argument("--size", type=int, default=100 * MIB)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    known = STDIO_BEHAVIOURS if args.mode == "stdio" else HTTP_BEHAVIOURS
    if args.behaviour not in known:
        parser.error(f"--behaviour must be one of {', '.join(known)} in {args.mode} mode")
    protocol = Protocol(args.behaviour, args.size)
    try:
        if args.mode == "stdio":
            trio.run(StdioServer(protocol).serve)
        else:
            trio.run(HttpServer(protocol).serve, args.port)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
