"""The health probes of one plain-HTTP origin's servers, sent in rounds by one task.

A probe sent by its server's own task costs a wake-up of that task, a cancel scope and a wait
on its socket: about 0.2 ms of CPU, so probing 1,000 servers every second keeps a fifth of a
core busy. Here one task per origin (:class:`ProbeRounds`) sends, in one round, every probe due
before the next round, each on a keep-alive socket of its own, and reads the answers in the
next round without waiting on any socket: a probe costs one send and one receive.

An answer byte for byte the same as the server's last healthy answer (but for the request id)
is a quiet success: the server's supervisor is told so by a plain call, and none of its tasks
wakes. Anything else (another answer, an error status, a timeout, a closed connection) is
handed to the server's probe task (:meth:`RoundEntry.escalated`), which checks it as its own
probe would have and reports it. A reused socket that the server closed before answering is
given up, and the probe sent again at once on another (the server never took it).

Answers are read only at round boundaries, so what a probe sees has the round's resolution
(:data:`ROUND_SECONDS`), and a probe is sent up to one round before it is due.

While many handshakes to the origin are under way (a fleet coming up, or coming back after the
origin restarted: :data:`ROUND_BUSY_HANDSHAKES`), its probes wait, for
:data:`ROUND_DEFER_SECONDS` at most: the origin's capacity goes to the servers that are not up
yet, and the ones that are were checked by their own handshake moments ago.
"""

from __future__ import annotations

import heapq
import math
import socket
from collections.abc import Callable
from itertools import count
from typing import Protocol

import httpx2
import trio

ROUND_SECONDS = 0.01
"""How long a round lasts: a probe is sent up to this long before it is due, and its answer is
read this long after it was sent (or at a later round)."""
ROUND_PROBES_IN_FLIGHT = 32
"""How many probes of one origin are under way at most (each on a socket of its own); the
others are sent in a later round."""
ROUND_SOCKETS_IDLE = 128
"""How many idle sockets one origin's rounds keep at most."""
ROUND_SOCKET_IDLE_SECONDS = 4.0
"""An idle socket older than this is closed, not used (servers close idle keep-alive
connections after their own timeout, 5 s often)."""
ROUND_BUSY_HANDSHAKES = 16
"""With this many handshake requests to the origin under way, its probes wait."""
ROUND_DEFER_SECONDS = 10.0
"""How long at most the probes wait at a stretch for the origin's handshakes (a probe is then
late by this at most): after that they go out whatever the origin is doing."""
_MAX_HEAD = 64 * 1024
_RECEIVE = 65536


class RoundProbe(Protocol):
    """What rounds need of a server's probe (``http_probe.PlainDiscoverProbe``)."""

    @property
    def max_bytes(self) -> int: ...

    def request_bytes(self, version: str) -> tuple[bytes, str]: ...

    async def check(
        self, status: int, headers: list[tuple[bytes, bytes]], content: bytes, request_id: str
    ) -> None: ...

    def mark_failed(self, exc: Exception) -> None: ...

    def refused(self) -> Exception: ...

    async def __call__(self, version: str) -> None: ...


class Escalation:
    """What a round found that is not a quiet success: :meth:`check` raises what the server's
    own probe would have raised, or returns (a healthy answer all the same)."""

    __slots__ = ("_entry", "answer", "error", "unframed")

    def __init__(
        self,
        entry: RoundEntry,
        *,
        answer: tuple[int, list[tuple[bytes, bytes]], bytes, str] | None = None,
        error: Exception | None = None,
        unframed: bool = False,
    ) -> None:
        self._entry = entry
        self.answer = answer
        """The whole answer: status, headers (names in lower case), body and request id."""
        self.error = error
        """Why there is no answer (an ``httpx2`` transport error or ``trio.TooSlowError``)."""
        self.unframed = unframed
        """The answer had no ``Content-Length`` (chunked, an event stream, ...): rounds cannot
        read it, and the server is probed its own way from now on (:meth:`check` sends it
        such a probe)."""

    async def check(self) -> None:
        entry = self._entry
        probe = entry.probe
        if self.unframed:
            await probe(entry.version())
            return
        if isinstance(self.error, _TooLarge):
            raise probe.refused()
        if self.error is not None:
            if not isinstance(self.error, trio.TooSlowError):
                probe.mark_failed(self.error)
            raise self.error
        assert self.answer is not None
        status, headers, body, request_id = self.answer
        await probe.check(status, headers, body, request_id)
        if status == 200 and _is_json(headers):
            entry.learn(body, request_id)


class RoundEntry:
    """One server's probes in its origin's rounds.

    Its owner (the server's probe task) makes it, enrols it (:meth:`ProbeRounds.enrol`), waits
    for what a round escalates (:meth:`escalated`), enrols it again once that is handled, and
    sets :attr:`withdrawn` when it stops. ``skip(since)``: whether the probe due now can be
    skipped (something else proved the server healthy after ``since``); ``healthy(now)``:
    told of a quiet success, whether it took it as one (``False``: escalate it, to be
    reported).
    """

    __slots__ = (
        "_escalated",
        "_escalation",
        "checked_at",
        "due",
        "healthy",
        "interval",
        "probe",
        "skip",
        "template",
        "timeout",
        "version",
        "withdrawn",
    )

    def __init__(
        self,
        probe: RoundProbe,
        version: Callable[[], str],
        *,
        interval: float,
        timeout: float,
        first_due: float,
        skip: Callable[[float], bool],
        healthy: Callable[[float], bool],
    ) -> None:
        self.probe = probe
        self.version = version
        self.interval = interval
        self.timeout = timeout
        self.skip = skip
        self.healthy = healthy
        # Written by the rounds' task:
        self.due = first_due
        self.checked_at = trio.current_time()
        # Written by the owner:
        self.template: tuple[bytes, bytes] | None = None
        """The last healthy answer's body, before and after its request id."""
        self.withdrawn = False
        self._escalated = trio.Event()
        self._escalation: Escalation | None = None

    def learn(self, body: bytes, request_id: str) -> None:
        """``body`` answered ``request_id`` and was found healthy: the answer to expect."""
        before, found, after = body.partition(request_id.encode())
        self.template = (before, after) if found and request_id.encode() not in after else None

    def _matches(self, body: bytes, request_id: bytes) -> bool:
        template = self.template
        if template is None:
            return False
        before, after = template
        return (
            len(body) == len(before) + len(request_id) + len(after)
            and body.startswith(before)
            and body.endswith(after)
            and body[len(before) : len(before) + len(request_id)] == request_id
        )

    def _escalate(self, escalation: Escalation) -> None:
        self._escalation = escalation
        self._escalated.set()

    async def escalated(self) -> Escalation:
        """Wait for what a round escalates to the owner."""
        await self._escalated.wait()
        escalation, self._escalation = self._escalation, None
        self._escalated = trio.Event()
        assert escalation is not None
        return escalation


class _InFlight:
    __slots__ = ("data", "deadline", "entry", "received", "request_id", "reused", "sock")

    def __init__(
        self, sock: socket.socket, entry: RoundEntry, request_id: str, *, deadline: float, reused: bool
    ) -> None:
        self.sock = sock
        self.entry = entry
        self.request_id = request_id
        self.deadline = deadline
        self.reused = reused
        self.data = b""
        self.received = False


class _Unframed(Exception):
    pass


class _TooLarge(Exception):
    pass


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    return next((v for k, v in headers if k == b"content-type"), b"").lower().startswith(b"application/json")


def parse_answer(data: bytes, max_bytes: int) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool] | None:
    """One HTTP/1.1 answer framed by ``Content-Length`` at the start of ``data``: its status,
    headers (names in lower case), body, and whether the socket can be used again; ``None``
    while it is not all there. Raises ``httpx2.RemoteProtocolError`` for what is not HTTP,
    :class:`_Unframed` for an answer framed otherwise, :class:`_TooLarge` over ``max_bytes``."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > _MAX_HEAD:
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
        raise _Unframed
    length = length or 0
    if length > max_bytes:
        raise _TooLarge
    start = end + 4
    if len(data) < start + length:
        return None
    return status, headers, data[start : start + length], not close and len(data) == start + length


class ProbeRounds:
    """The probes of one plain-HTTP origin's enrolled servers, sent by one task (:meth:`run`,
    started by the manager's :class:`~.http.HttpPool` in the manager's nursery)."""

    __slots__ = (
        "_deferred_since",
        "_enrol_receive",
        "_enrol_send",
        "_flights",
        "_heap",
        "_idle",
        "_last_round",
        "_order",
        "handshaking",
        "host",
        "port",
        "sent",
    )

    def __init__(self, host: str, port: int, handshaking: Callable[[], int] = lambda: 0) -> None:
        self.host = host
        self.port = port
        self.handshaking = handshaking
        """How many handshake requests to the origin are under way now."""
        self._enrol_send, self._enrol_receive = trio.open_memory_channel[RoundEntry](math.inf)
        # The rounds' own (written by its task only):
        self._heap: list[tuple[float, int, RoundEntry]] = []
        self._order = count()
        self._last_round = -math.inf
        self._deferred_since: float | None = None
        self._flights: list[_InFlight] = []
        self._idle: list[tuple[float, socket.socket]] = []
        """Oldest first: (when it became idle, socket)."""
        self.sent = 0
        """Probes sent so far."""

    def enrol(self, entry: RoundEntry) -> None:
        """Hand ``entry`` to the rounds (any task): its next probe goes out when due."""
        self._enrol_send.send_nowait(entry)

    async def run(self) -> None:
        try:
            while True:
                now = trio.current_time()
                # Rounds are ROUND_SECONDS apart at least: then while probes are under way
                # (to read their answers), else when the next one is due.
                wake = self._last_round + ROUND_SECONDS
                if not self._flights:
                    wake = max(wake, self._heap[0][0] if self._heap else math.inf)
                if wake > now:
                    with trio.move_on_at(wake):
                        self._schedule(await self._enrol_receive.receive())
                    while True:
                        try:
                            self._schedule(self._enrol_receive.receive_nowait())
                        except trio.WouldBlock:
                            break
                    continue
                self._last_round = now
                self._read_answers(now)
                await self._send_due(now)
        finally:
            for flight in self._flights:
                flight.sock.close()
            for _, sock in self._idle:
                sock.close()
            self._flights, self._idle = [], []

    def _schedule(self, entry: RoundEntry) -> None:
        heapq.heappush(self._heap, (entry.due, next(self._order), entry))

    def _reschedule(self, entry: RoundEntry, now: float) -> None:
        entry.due = max(entry.due + entry.interval, now)
        heapq.heappush(self._heap, (entry.due, next(self._order), entry))

    def _hand_over(self, entry: RoundEntry, now: float, escalation: Escalation) -> None:
        """Escalate to ``entry``'s owner, which enrols it again (for its next probe, due then)
        once it has handled it."""
        entry.due = max(entry.due + entry.interval, now)
        entry._escalate(escalation)

    def _read_answers(self, now: float) -> None:
        flights, self._flights = self._flights, []
        for flight in flights:
            # A withdrawn entry's probe is read to its end all the same (its answer is left
            # unreported), so that its socket can be used again.
            try:
                done = self._read(flight, now)
            except _Unframed:
                flight.sock.close()
                self._hand_over(flight.entry, now, Escalation(flight.entry, unframed=True))
                continue
            except _TooLarge:
                flight.sock.close()
                self._hand_over(flight.entry, now, Escalation(flight.entry, error=_TooLarge()))
                continue
            except _StaleSocket:
                flight.sock.close()
                flight.entry.due = now  # sent again at once, on another socket
                heapq.heappush(self._heap, (now, next(self._order), flight.entry))
                continue
            except Exception as exc:
                flight.sock.close()
                self._hand_over(flight.entry, now, Escalation(flight.entry, error=exc))
                continue
            if not done:
                if now >= flight.deadline:
                    flight.sock.close()
                    self._hand_over(flight.entry, now, Escalation(flight.entry, error=trio.TooSlowError()))
                else:
                    self._flights.append(flight)

    def _read(self, flight: _InFlight, now: float) -> bool:
        """Read what arrived for ``flight``; whether it is over (its outcome handled)."""
        entry = flight.entry
        while True:
            try:
                chunk = flight.sock.recv(_RECEIVE)
            except BlockingIOError:
                return False
            except OSError as exc:
                if flight.reused and not flight.received:
                    raise _StaleSocket from exc
                raise httpx2.ReadError(str(exc) or type(exc).__name__) from exc
            if not chunk:
                if flight.reused and not flight.received:
                    raise _StaleSocket
                raise httpx2.RemoteProtocolError("the server closed the connection without an answer")
            flight.received = True
            flight.data += chunk
            parsed = parse_answer(flight.data, entry.probe.max_bytes)
            if parsed is not None:
                break
        status, headers, body, reusable = parsed
        if reusable:
            self._idle.append((now, flight.sock))
        else:
            flight.sock.close()
        if entry.withdrawn:
            return True
        entry.checked_at = now
        if (
            status == 200
            and entry._matches(body, flight.request_id.encode())
            and _is_json(headers)
            and entry.healthy(now)
        ):
            self._reschedule(entry, now)
            return True
        self._hand_over(entry, now, Escalation(entry, answer=(status, headers, body, flight.request_id)))
        return True

    def _take_idle(self, now: float) -> socket.socket | None:
        idle = self._idle
        while idle and now - idle[0][0] >= ROUND_SOCKET_IDLE_SECONDS:
            idle.pop(0)[1].close()
        while len(idle) > ROUND_SOCKETS_IDLE:
            idle.pop(0)[1].close()
        return idle.pop()[1] if idle else None

    async def _connect(self, timeout: float) -> socket.socket:
        try:
            with trio.fail_after(timeout):
                stream = await trio.open_tcp_stream(self.host, self.port)
        except OSError as exc:
            raise httpx2.ConnectError(str(exc)) from exc
        except trio.TooSlowError as exc:
            raise httpx2.ConnectTimeout("connecting timed out") from exc
        fd = stream.socket.detach()
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        return sock

    def _deferred(self, now: float) -> bool:
        """Whether the probes due wait for the origin's handshakes (see :data:`ROUND_BUSY_HANDSHAKES`)."""
        if self.handshaking() < ROUND_BUSY_HANDSHAKES:
            self._deferred_since = None
            return False
        if self._deferred_since is None:
            self._deferred_since = now
        return now - self._deferred_since < ROUND_DEFER_SECONDS

    async def _send_due(self, now: float) -> None:
        if self._deferred(now):
            return
        heap = self._heap
        until = now + ROUND_SECONDS
        connect_failed: Exception | None = None
        skipped: list[RoundEntry] = []
        while heap and heap[0][0] <= until and len(self._flights) < ROUND_PROBES_IN_FLIGHT:
            _, _, entry = heapq.heappop(heap)
            if entry.withdrawn:
                continue
            if entry.skip(entry.checked_at):
                entry.checked_at = now
                skipped.append(entry)  # scheduled after this round (whatever its interval)
                continue
            data, request_id = entry.probe.request_bytes(entry.version())
            sock = self._take_idle(now)
            reused = sock is not None
            if sock is None:
                if connect_failed is None:
                    try:
                        sock = await self._connect(entry.timeout)
                    except Exception as exc:
                        connect_failed = exc
                if sock is None:
                    assert connect_failed is not None
                    # Each server raises an error of its own (not one object in many tasks).
                    error = type(connect_failed)(str(connect_failed))
                    self._hand_over(entry, now, Escalation(entry, error=error))
                    continue
                if entry.withdrawn:
                    self._idle.append((now, sock))
                    continue
            try:
                written = sock.send(data)
            except OSError as exc:
                sock.close()
                if reused:  # closed under it: the next socket, at once
                    heapq.heappush(heap, (now, next(self._order), entry))
                    continue
                self._hand_over(
                    entry, now, Escalation(entry, error=httpx2.WriteError(str(exc) or type(exc).__name__))
                )
                continue
            self.sent += 1
            sent_at = trio.current_time() if not reused else now  # a connect took time
            flight = _InFlight(sock, entry, request_id, deadline=sent_at + entry.timeout, reused=reused)
            if written < len(data):  # never so for a request this small on an idle socket
                sock.close()
                self._hand_over(entry, now, Escalation(entry, unframed=True))
                continue
            self._flights.append(flight)
        for entry in skipped:
            self._reschedule(entry, now)


class _StaleSocket(Exception):
    """A reused socket was closed before one byte of the answer: the server never took it."""
