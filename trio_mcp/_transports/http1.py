"""HTTP/1.1 as the plain POSTs of this package use it: a request written out, and an answer
framed by ``Content-Length`` read, without a parser's state machine.

A JSON-RPC request on the 2026-07-28 wire is one POST, and most answers are one JSON body
framed by ``Content-Length``. Written and read through h11, such an exchange costs about
0.1 ms of CPU (building and checking the request event, the state machine on both sides);
written out here and read with :func:`parse_answer`, about a tenth of that. Any other answer
(an event stream, chunked, informational or close-delimited) is read by h11, from a connection
put in the state of one that sent a request (:func:`h11_after_request`).

Header names and values are checked as h11 checks them, and a bad one raises what h11 raises
(``h11.LocalProtocolError``): what is written can never be more than the one request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import h11
import httpx2

MAX_HEAD = 64 * 1024
"""The longest head of an answer read."""
RECEIVE = 65536
"""How much is read from a socket at once."""

# RFC 9110 as h11 has it (h11/_abnf.py): a token, and a field value (no NUL, no CR or LF, no
# whitespace at either end).
_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")


def header_lines(headers: Iterable[tuple[str, str]]) -> bytes:
    """``headers`` written out, a line each; raises ``h11.LocalProtocolError`` for a name or a
    value that h11 would refuse (``UnicodeEncodeError`` for one that is not ASCII)."""
    lines = []
    for name, value in headers:
        raw_name, raw_value = name.encode("ascii"), value.encode("ascii")
        if _NAME.fullmatch(raw_name) is None:
            raise h11.LocalProtocolError(f"Illegal header name {raw_name!r}")
        if _VALUE.fullmatch(raw_value) is None:
            raise h11.LocalProtocolError(f"Illegal header value {raw_value!r}")
        lines.append(b"%s: %s\r\n" % (raw_name, raw_value))
    return b"".join(lines)


def request_line(method: str, target: bytes) -> bytes:
    return b"%s %s HTTP/1.1\r\n" % (method.encode("ascii"), target)


def h11_after_request() -> h11.Connection:
    """A client h11 connection in the state of one that has just sent a whole POST: what reads
    an answer that :func:`parse_answer` leaves to h11. (How an answer is framed depends on the
    request only through its method, and on whether it asked to close the connection: a POST
    that did not.)"""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/", headers=[("host", "-"), ("content-length", "0")]))
    conn.send(h11.EndOfMessage())
    return conn


class Unframed(Exception):
    """An answer not framed by ``Content-Length`` (an event stream, chunked, informational,
    or ended by closing the connection): for h11 to read."""


class TooLarge(Exception):
    """An answer whose ``Content-Length`` is over the bound."""


def parse_head(data: bytes, max_bytes: int) -> tuple[int, list[tuple[bytes, bytes]], int, int, bool] | None:
    """The head of one HTTP/1.1 answer framed by ``Content-Length`` at the start of ``data``:
    its status, headers (names in lower case), where its body starts, how long that is, and
    whether the connection closes after it; ``None`` while the head is not all there. Raises
    ``httpx2.RemoteProtocolError`` for what is not HTTP, :class:`Unframed` for an answer framed
    otherwise, :class:`TooLarge` over ``max_bytes``."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HEAD:
            raise httpx2.RemoteProtocolError("the answer's head is too long")
        return None
    lines = data[:end].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise httpx2.RemoteProtocolError("the server did not answer with HTTP/1.1")
    status = int(code)
    headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    framed = True
    close = version == b"HTTP/1.0"
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise httpx2.RemoteProtocolError("a malformed header in the answer")
        name, value = name.strip().lower(), value.strip()
        headers.append((name, value))
        if name == b"content-length":
            if not value.isdigit() or (length is not None and int(value) != length):
                raise httpx2.RemoteProtocolError("a malformed Content-Length in the answer")
            length = int(value)
        elif name == b"transfer-encoding":
            framed = False
        elif name == b"connection" and b"close" in value.lower():
            close = True
    if status < 200 or not framed or (length is None and status not in (204, 304)):
        raise Unframed
    length = length or 0
    if length > max_bytes:
        raise TooLarge
    return status, headers, end + 4, length, close


def parse_answer(data: bytes, max_bytes: int) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool] | None:
    """One HTTP/1.1 answer framed by ``Content-Length`` at the start of ``data``: its status,
    headers (names in lower case), body, and whether the socket can be used again; ``None``
    while it is not all there. Raises as :func:`parse_head`."""
    head = parse_head(data, max_bytes)
    if head is None:
        return None
    status, headers, start, length, close = head
    if len(data) < start + length:
        return None
    return status, headers, data[start : start + length], not close and len(data) == start + length
