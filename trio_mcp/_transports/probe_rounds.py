"""The health probes of a manager's plain-HTTP servers, sent in rounds by one task.

A probe sent by its server's own task costs a wake-up of that task, a cancel scope and a wait
on its socket: about 0.2 ms of CPU, so probing 1,000 servers every second keeps a fifth of a
core busy. Here one task (:class:`ProbeRounds`) sends, in one round, every probe due before the
next round, each on a keep-alive socket of its own to its origin (:class:`RoundOrigin`), and
reads the answers in the next round without waiting on any socket: a probe costs one send and
one receive, and a round serves every origin at once. New sockets are connected by tasks of
their own, so an origin slow to accept holds up no other.

An answer byte for byte the same as the server's last healthy answer (but for the request id)
is a quiet success: the server's supervisor is told so by a plain call, and none of its tasks
wakes. Anything else (another answer, an error status, a timeout, a closed connection) is
handed to the server's probe task (:meth:`RoundEntry.escalated`), which checks it as its own
probe would have and reports it. A reused socket that the server closed before answering is
given up, and the probe sent again at once on another (the server never took it).

Answers are read only at round boundaries, so what a probe sees has the round's resolution
(:data:`ROUND_SECONDS`), and a probe is sent up to one round before it is due.

While many handshakes to an origin are under way (a fleet coming up, or coming back after the
origin restarted: :data:`ROUND_BUSY_HANDSHAKES`), its probes wait, for
:data:`ROUND_DEFER_SECONDS` at most: the origin's capacity goes to the servers that are not up
yet, and the ones that are were checked by their own handshake moments ago. At most
:data:`ROUND_PROBES_IN_FLIGHT` probes of an origin are under way; the others wait likewise.
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

from .http1 import RECEIVE, TooLarge, Unframed, parse_answer

ROUND_SECONDS = 0.03
"""How long a round lasts: a probe is sent up to this long before it is due, and its answer is
read this long after it was sent (or at a later round). Each round is a wake-up of the process,
and a wake-up from a timed wait is what a round costs most (about 0.2 ms of CPU on a virtual
machine, more than the ten to thirty probes it sends): at 1,000 probes a second, rounds 10 ms
apart took 0.10-0.11 of a core, 30 ms apart 0.07-0.08."""
ROUND_PROBES_IN_FLIGHT = 32
"""How many probes of one origin are under way at most (each on a socket of its own); the
others are sent in a later round."""
ROUND_SOCKETS_IDLE = 128
"""How many idle sockets one origin's rounds keep at most."""
ROUND_SOCKET_IDLE_SECONDS = 4.0
"""An idle socket older than this is closed, not used (servers close idle keep-alive
connections after their own timeout, 5 s often)."""
ROUND_BUSY_HANDSHAKES = 16
"""With this many handshake requests to the origin under way, its probes wait (and so do its new
list-change streams: :meth:`.http_probe.ProbeSockets.until_quiet`)."""
ROUND_DEFER_SECONDS = 10.0
"""How long at most the probes wait at a stretch for the origin's handshakes (a probe is then
late by this at most): after that they go out whatever the origin is doing."""


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
        if isinstance(self.error, TooLarge):
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

    Its owner (the server's probe task) makes it, enrols it (:meth:`RoundOrigin.enrol`), waits
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
        "origin",
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
        origin: RoundOrigin,
        interval: float,
        timeout: float,
        first_due: float,
        skip: Callable[[float], bool],
        healthy: Callable[[float], bool],
    ) -> None:
        self.probe = probe
        self.origin = origin
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


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    return next((v for k, v in headers if k == b"content-type"), b"").lower().startswith(b"application/json")


class RoundOrigin:
    """One origin's share of the rounds: its idle keep-alive sockets, how many of its probes are
    under way, the probes held back while it is busy, and how it is handshaking. Its state is
    written by the rounds' task only."""

    __slots__ = (
        "_deferred_since",
        "handshaking",
        "host",
        "idle",
        "in_flight",
        "port",
        "rounds",
        "sent",
        "waiting",
    )

    def __init__(self, rounds: ProbeRounds, host: str, port: int, handshaking: Callable[[], int]) -> None:
        self.rounds = rounds
        self.host = host
        self.port = port
        self.handshaking = handshaking
        """How many handshake requests to the origin are under way now."""
        self.idle: list[tuple[float, socket.socket]] = []
        """Oldest first: (when it became idle, socket)."""
        self.in_flight = 0
        self.waiting: list[RoundEntry] = []
        """Probes due, held back while the origin is busy."""
        self._deferred_since: float | None = None
        self.sent = 0
        """Probes sent to it so far."""

    def enrol(self, entry: RoundEntry) -> None:
        """Hand ``entry`` (a server at this origin) to the rounds (any task): its next probe
        goes out when due."""
        self.rounds._enrol_send.send_nowait(entry)

    def busy(self, now: float) -> bool:
        """Whether its probes are held back now: :data:`ROUND_PROBES_IN_FLIGHT` of them are
        under way, or it is handshaking (see :data:`ROUND_BUSY_HANDSHAKES`)."""
        if self.in_flight >= ROUND_PROBES_IN_FLIGHT:
            return True
        if self.handshaking() < ROUND_BUSY_HANDSHAKES:
            self._deferred_since = None
            return False
        if self._deferred_since is None:
            self._deferred_since = now
        return now - self._deferred_since < ROUND_DEFER_SECONDS

    def take_idle(self, now: float) -> socket.socket | None:
        self.expire(now)
        return self.idle.pop()[1] if self.idle else None

    def expire(self, now: float) -> None:
        """Close the idle sockets kept too long, or beyond :data:`ROUND_SOCKETS_IDLE`."""
        idle = self.idle
        while idle and (now - idle[0][0] >= ROUND_SOCKET_IDLE_SECONDS or len(idle) > ROUND_SOCKETS_IDLE):
            idle.pop(0)[1].close()

    async def connect(self, timeout: float) -> socket.socket:
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

    def close(self) -> None:
        idle, self.idle = self.idle, []
        for _, sock in idle:
            sock.close()


class ProbeRounds:
    """The probes of the enrolled plain-HTTP servers of one manager, whatever their origin, sent
    by one task (:meth:`run`, started by the manager's :class:`~.http.HttpPool` in the manager's
    nursery): a fleet spread over many origins is probed in as few rounds as one at a single
    origin."""

    __slots__ = (
        "_connect_receive",
        "_connect_send",
        "_connecting",
        "_enrol_receive",
        "_enrol_send",
        "_flights",
        "_heap",
        "_held",
        "_last_round",
        "_nursery",
        "_order",
        "_origins",
        "_swept_at",
    )

    def __init__(self) -> None:
        self._enrol_send, self._enrol_receive = trio.open_memory_channel[RoundEntry](math.inf)
        self._connect_send, self._connect_receive = trio.open_memory_channel[_Connected](math.inf)
        """What each connect task made: a socket, or why there is none."""
        self._nursery: trio.Nursery | None = None
        self._connecting = 0
        self._origins: dict[tuple[str, int], RoundOrigin] = {}
        # The rounds' own (written by its task only):
        self._heap: list[tuple[float, int, RoundEntry]] = []
        self._order = count()
        self._last_round = -math.inf
        self._swept_at = -math.inf
        self._flights: list[_InFlight] = []
        self._held: list[RoundOrigin] = []
        """Origins with probes held back."""

    def origin(self, host: str, port: int, handshaking: Callable[[], int] = lambda: 0) -> RoundOrigin:
        """The share of the origin ``host:port`` (``handshaking``: how many handshake requests to
        it are under way)."""
        origin = self._origins.get((host, port))
        if origin is None:
            origin = self._origins[host, port] = RoundOrigin(self, host, port, handshaking)
        return origin

    @property
    def sent(self) -> int:
        """Probes sent so far."""
        return sum(origin.sent for origin in self._origins.values())

    async def run(self) -> None:
        try:
            # New sockets are connected by tasks of their own: an origin that is slow to
            # accept holds up none of the others' probes.
            async with trio.open_nursery() as self._nursery:
                await self._rounds()
        finally:
            self._nursery = None
            for flight in self._flights:
                flight.sock.close()
            for origin in self._origins.values():
                origin.close()
            self._flights = []
            while True:
                try:
                    made = self._connect_receive.receive_nowait()
                except trio.WouldBlock:
                    break
                if isinstance(made.result, socket.socket):
                    made.result.close()

    async def _rounds(self) -> None:
        while True:
            now = trio.current_time()
            # Rounds are ROUND_SECONDS apart at least: then while probes are under way (to read
            # their answers), held back or connecting, else when the next one is due.
            wake = self._last_round + ROUND_SECONDS
            if not (self._flights or self._held or self._connecting):
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
            self._send_on_connected(now)
            self._send_due(now)
            if now - self._swept_at >= ROUND_SOCKET_IDLE_SECONDS:
                self._swept_at = now
                for origin in self._origins.values():
                    origin.expire(now)

    async def _connect(self, entry: RoundEntry, started: float) -> None:
        try:
            result: socket.socket | Exception = await entry.origin.connect(entry.timeout)
        except Exception as exc:
            result = exc
        self._connect_send.send_nowait(_Connected(entry, result, started))

    def _send_on_connected(self, now: float) -> None:
        while True:
            try:
                made = self._connect_receive.receive_nowait()
            except trio.WouldBlock:
                return
            self._connecting -= 1
            entry, result = made.entry, made.result
            origin = entry.origin
            origin.in_flight -= 1
            if isinstance(result, Exception):
                self._hand_over(entry, now, Escalation(entry, error=result))
            elif entry.withdrawn:
                origin.idle.append((now, result))
            else:
                self._send_on(entry, result, now, reused=False, deadline=made.started + entry.timeout)

    def _schedule(self, entry: RoundEntry) -> None:
        heapq.heappush(self._heap, (entry.due, next(self._order), entry))

    def _reschedule(self, entry: RoundEntry, now: float) -> None:
        entry.due = max(entry.due + entry.interval, now)
        heapq.heappush(self._heap, (entry.due, next(self._order), entry))

    def _send_again(self, entry: RoundEntry, now: float) -> None:
        """A reused socket was closed under ``entry``'s probe before it was taken: sent again
        at once (in this round), on another socket."""
        entry.due = now
        heapq.heappush(self._heap, (now, next(self._order), entry))

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
            entry = flight.entry
            try:
                done = self._read(flight, now)
            except Unframed:
                self._hand_over(entry, now, Escalation(entry, unframed=True))
            except TooLarge:
                self._hand_over(entry, now, Escalation(entry, error=TooLarge()))
            except _StaleSocket:
                self._send_again(entry, now)
            except Exception as exc:
                self._hand_over(entry, now, Escalation(entry, error=exc))
            else:
                if done:
                    entry.origin.in_flight -= 1
                    continue
                if now < flight.deadline:
                    self._flights.append(flight)
                    continue
                self._hand_over(entry, now, Escalation(entry, error=trio.TooSlowError()))
            flight.sock.close()
            entry.origin.in_flight -= 1

    def _read(self, flight: _InFlight, now: float) -> bool:
        """Read what arrived for ``flight``; whether it is over (its outcome handled, its socket
        given back or closed)."""
        entry = flight.entry
        while True:
            try:
                chunk = flight.sock.recv(RECEIVE)
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
            entry.origin.idle.append((now, flight.sock))
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

    def _send_due(self, now: float) -> None:
        """Send every probe due before the next round (the ones held back first), but for the
        ones of a busy origin, which are held back."""
        skipped: list[RoundEntry] = []
        held, self._held = self._held, []
        for origin in held:
            if origin.busy(now):
                self._held.append(origin)
                continue
            waiting, origin.waiting = origin.waiting, []
            for entry in waiting:
                self._send(entry, now, skipped)
        heap = self._heap
        until = now + ROUND_SECONDS
        while heap and heap[0][0] <= until:
            self._send(heapq.heappop(heap)[2], now, skipped)
        for entry in skipped:  # scheduled after this round (whatever their interval)
            self._reschedule(entry, now)

    def _send(self, entry: RoundEntry, now: float, skipped: list[RoundEntry]) -> None:
        """Send ``entry``'s probe, or hold it back (a busy origin), or add it to ``skipped``
        (something else proved the server healthy)."""
        if entry.withdrawn:
            return
        origin = entry.origin
        if origin.busy(now):
            if not origin.waiting:
                self._held.append(origin)
            origin.waiting.append(entry)
            return
        if entry.skip(entry.checked_at):
            entry.checked_at = now
            skipped.append(entry)
            return
        sock = origin.take_idle(now)
        if sock is None:
            assert self._nursery is not None
            origin.in_flight += 1  # a connect counts as under way
            self._connecting += 1
            self._nursery.start_soon(self._connect, entry, now)
            return
        self._send_on(entry, sock, now, reused=True, deadline=now + entry.timeout)

    def _send_on(
        self, entry: RoundEntry, sock: socket.socket, now: float, *, reused: bool, deadline: float
    ) -> None:
        data, request_id = entry.probe.request_bytes(entry.version())
        try:
            written = sock.send(data)
        except OSError as exc:
            sock.close()
            if reused:
                self._send_again(entry, now)
                return
            error = httpx2.WriteError(str(exc) or type(exc).__name__)
            self._hand_over(entry, now, Escalation(entry, error=error))
            return
        if written < len(data):  # never so for a request this small on an idle socket
            sock.close()
            self._hand_over(entry, now, Escalation(entry, unframed=True))
            return
        entry.origin.sent += 1
        entry.origin.in_flight += 1
        self._flights.append(_InFlight(sock, entry, request_id, deadline=deadline, reused=reused))


class _Connected:
    __slots__ = ("entry", "result", "started")

    def __init__(self, entry: RoundEntry, result: socket.socket | Exception, started: float) -> None:
        self.entry = entry
        self.result = result
        self.started = started


class _StaleSocket(Exception):
    """A reused socket was closed before one byte of the answer: the server never took it."""
