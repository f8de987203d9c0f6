"""Prometheus metrics of one manager's fleet, for ``prometheus_client``.

Register a :class:`FleetCollector` on any ``CollectorRegistry`` and expose it as usual::

    from prometheus_client import CollectorRegistry, generate_latest
    from trio_mcp.metrics import FleetCollector

    async with trio_mcp.open_manager(configs) as manager:
        registry = CollectorRegistry()
        registry.register(FleetCollector(manager))
        ...
        body = generate_latest(registry)  # in a route handler of the same trio program

Where the figures come from:

- Gauges of state are read from the published snapshots when scraped, so they are never
  stale and cost nothing in between.
- Counters and histograms accumulate from the manager's event stream through one
  :class:`FleetMetrics` listener, called as each event is published: a few dict increments
  per event. The invocation path does no work for metrics while no collector is attached.
  They count what happened after the collector was created.

Metrics (every name starts with ``trio_mcp_``):

=============================================  =========  ====================================
name                                           type       labels
=============================================  =========  ====================================
``server_status``                              gauge      ``server``, ``status``
``server_connection_state``                    gauge      ``server``, ``state``
``server_consecutive_failures``                gauge      ``server``
``server_in_flight``                           gauge      ``server``
``server_waiting``                             gauge      ``server``
``server_max_concurrency``                     gauge      ``server``
``server_session_parked``                      gauge      ``server``
``server_status_changes_total``                counter    ``server``, ``status``
``server_reconnects_total``                    counter    ``server``
``server_handshakes_total``                    counter    ``server``, ``era``, ``result``
``invocations_total``                          counter    ``method``, ``server``, ``outcome``
``invocation_duration_seconds``                histogram  ``method``, ``outcome``
``attempts_total``                             counter    ``server``, ``method``, ``stage``,
                                                          ``category``, ``sent``
``failovers_total``                            counter    ``method``, ``from_server``,
                                                          ``to_server``
``event_log_dropped_total``                    counter    ``log``
=============================================  =========  ====================================

The collector reads the manager's state without locking: scrape it from the trio thread that
runs the manager (an ASGI route served in the same ``trio.run``), not from a thread of
``prometheus_client``'s own HTTP server.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import pairwise
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ._attempt import Stage
from ._events import InvocationFinished, StateChange, StreamEvent
from ._state import ConnectionState, ServerStatus

if TYPE_CHECKING:
    from ._manager import Manager

__all__ = ("DEFAULT_BUCKETS", "FleetCollector", "FleetMetrics")

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Upper bounds (seconds) of the invocation duration buckets; ``+Inf`` is always added."""

OK = "ok"
"""The ``category`` label of an attempt that succeeded."""
UNKNOWN_ERA = "unknown"
"""The ``era`` label of a connection attempt that failed before an era was agreed."""


K = TypeVar("K")


def _count(counts: dict[K, int], key: K) -> None:
    counts[key] = counts.get(key, 0) + 1


class _Histogram:
    """Bucket counts and sums per label tuple (buckets stored non-cumulative)."""

    __slots__ = ("bounds", "counts", "sums")

    def __init__(self, buckets: Iterable[float]) -> None:
        bounds = [float(b) for b in buckets]
        if any(math.isnan(b) for b in bounds) or any(a >= b for a, b in pairwise(bounds)):
            raise ValueError("buckets must be strictly increasing numbers")
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.bounds = tuple(bounds)
        self.counts: dict[tuple[str, ...], list[int]] = {}
        self.sums: dict[tuple[str, ...], float] = {}

    def observe(self, key: tuple[str, ...], value: float) -> None:
        counts = self.counts.get(key)
        if counts is None:
            counts = self.counts[key] = [0] * len(self.bounds)
            self.sums[key] = 0.0
        counts[bisect_left(self.bounds, value)] += 1
        self.sums[key] += value

    def fill(self, family: HistogramMetricFamily) -> None:
        les = ["+Inf" if b == math.inf else repr(b) for b in self.bounds]
        for key, counts in list(self.counts.items()):
            total = 0
            buckets: list[tuple[str, float]] = []
            for le, count in zip(les, counts, strict=True):
                total += count
                buckets.append((le, float(total)))
            family.add_metric(list(key), buckets, self.sums[key])


class FleetMetrics:
    """The counters of a fleet, kept by a listener on its manager's event stream.

    Call it with every stream event (``manager.stream.add_listener(metrics)``);
    :class:`FleetCollector` does that for you. Each event costs a few dict increments.

    Attributes:
        invocations: ended invocations by ``(method, server, outcome)``; ``server`` is the
            one that answered or refused, otherwise the last one tried (``""``: none was).
        attempts: attempts by ``(server, method, stage, category, sent)``; ``category`` is
            ``"ok"`` for an attempt that succeeded, ``sent`` is ``"true"`` or ``"false"``.
        failovers: moves of one invocation to another server after a failed or passed-over
            attempt, by ``(method, from_server, to_server)``; ``to_server`` is tried (a
            handshake or the request), not itself passed over.
        status_changes: entries into a status, by ``(server, status)``.
        reconnects: connection attempts after a server's first, by ``server``.
        handshakes: connection attempts (connect and handshake) and re-handshakes of a live
            session, by ``(server, era, result)``; ``result`` is ``"success"`` or
            ``"failure"``, ``era`` is ``"unknown"`` when connecting failed before one was
            agreed.
    """

    def __init__(self, *, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        # Plain dicts: reading a key that was never counted must not create a series.
        self.invocations: dict[tuple[str, str, str], int] = {}
        self.attempts: dict[tuple[str, str, str, str, str], int] = {}
        self.failovers: dict[tuple[str, str, str], int] = {}
        self.status_changes: dict[tuple[str, str], int] = {}
        self.reconnects: dict[str, int] = {}
        self.handshakes: dict[tuple[str, str, str], int] = {}
        self.durations = _Histogram(buckets)
        """Invocation durations by ``(method, outcome)``."""

    def __call__(self, event: StreamEvent) -> None:
        if type(event) is InvocationFinished:
            self._finished(event)
        elif type(event) is StateChange:
            self._changed(event)

    def _finished(self, event: InvocationFinished) -> None:
        method, outcome = event.method, event.outcome
        _count(self.invocations, (method, event.server or "", outcome))
        self.durations.observe((method, outcome), event.at - event.started_at)
        attempts = self.attempts
        previous: str | None = None
        for attempt in event.attempts:
            server, stage = attempt.server, attempt.stage
            key = (server, method, stage, attempt.category or OK, "true" if attempt.sent else "false")
            attempts[key] = attempts.get(key, 0) + 1
            # A failover lands on a server that is tried, not one passed over.
            if previous is not None and server != previous and stage is not Stage.SELECT:
                _count(self.failovers, (method, previous, server))
            previous = server

    def _changed(self, change: StateChange) -> None:
        before, after, server = change.previous, change.current, change.server
        if after.status is not before.status:
            _count(self.status_changes, (server, after.status))
        if after.connection is before.connection:
            if after.connection is ConnectionState.READY:
                if after.capabilities is not before.capabilities and after.capabilities is not None:
                    _count(self.handshakes, (server, after.capabilities.era, "success"))
                # A failed re-handshake and a failed probe change the same fields; only the
                # supervisor's reason tells them apart.
                elif change.reason.startswith("re-handshake failed"):
                    era = before.capabilities.era if before.capabilities is not None else UNKNOWN_ERA
                    _count(self.handshakes, (server, era, "failure"))
            return
        if after.connection is ConnectionState.CONNECTING:
            if before.sessions_opened:
                _count(self.reconnects, server)
        elif before.connection is ConnectionState.CONNECTING:
            if after.connection is ConnectionState.READY:
                era = after.capabilities.era if after.capabilities is not None else UNKNOWN_ERA
                _count(self.handshakes, (server, era, "success"))
            elif after.connection is ConnectionState.BACKOFF:
                _count(self.handshakes, (server, UNKNOWN_ERA, "failure"))


_P = "trio_mcp_"


class _Families(NamedTuple):
    """One scrape's metric families, in exposition order."""

    status: GaugeMetricFamily
    connection: GaugeMetricFamily
    failures: GaugeMetricFamily
    in_flight: GaugeMetricFamily
    waiting: GaugeMetricFamily
    max_concurrency: GaugeMetricFamily
    parked: GaugeMetricFamily
    status_changes: CounterMetricFamily
    reconnects: CounterMetricFamily
    handshakes: CounterMetricFamily
    invocations: CounterMetricFamily
    durations: HistogramMetricFamily
    attempts: CounterMetricFamily
    failovers: CounterMetricFamily
    dropped: CounterMetricFamily


def _families() -> _Families:
    """Fresh, empty metric families."""
    gauge, counter = GaugeMetricFamily, CounterMetricFamily
    server = ["server"]
    return _Families(
        status=gauge(
            f"{_P}server_status",
            "1 for the server's current status, 0 for the others.",
            labels=["server", "status"],
        ),
        connection=gauge(
            f"{_P}server_connection_state",
            "1 for what the server's supervisor is doing with its session now, 0 for the rest.",
            labels=["server", "state"],
        ),
        failures=gauge(
            f"{_P}server_consecutive_failures",
            "Checks and calls that failed in a row since the server's last success.",
            labels=server,
        ),
        in_flight=gauge(
            f"{_P}server_in_flight", "Invocations holding one of the server's slots.", labels=server
        ),
        waiting=gauge(
            f"{_P}server_waiting", "Invocations waiting for one of the server's slots.", labels=server
        ),
        max_concurrency=gauge(
            f"{_P}server_max_concurrency",
            "How many invocations may use the server at once (its bulkhead).",
            labels=server,
        ),
        parked=gauge(
            f"{_P}server_session_parked",
            "1 while the server's connection is parked (idle, its MCP session closed), else 0.",
            labels=server,
        ),
        status_changes=counter(
            f"{_P}server_status_changes_total",
            "Entries into each server status.",
            labels=["server", "status"],
        ),
        reconnects=counter(
            f"{_P}server_reconnects_total", "Connection attempts after the server's first.", labels=server
        ),
        handshakes=counter(
            f"{_P}server_handshakes_total",
            "Connection attempts and re-handshakes, by protocol era and result.",
            labels=["server", "era", "result"],
        ),
        invocations=counter(
            f"{_P}invocations_total",
            "Ended invocations by outcome; server: the one that answered or refused, else the last tried.",
            labels=["method", "server", "outcome"],
        ),
        durations=HistogramMetricFamily(
            f"{_P}invocation_duration_seconds",
            "How long invocations took, failover included.",
            labels=["method", "outcome"],
        ),
        attempts=counter(
            f"{_P}attempts_total",
            "Attempts of invocations on one server; sent: whether the request was written to it.",
            labels=["server", "method", "stage", "category", "sent"],
        ),
        failovers=counter(
            f"{_P}failovers_total",
            "Moves of an invocation to another server, tried after a failed or passed-over attempt.",
            labels=["method", "from_server", "to_server"],
        ),
        dropped=counter(
            f"{_P}event_log_dropped_total",
            "Events pushed out of the manager's bounded event logs.",
            labels=["log"],
        ),
    )


def _fill(family: CounterMetricFamily, counts: Iterable[tuple[tuple[str, ...] | str, int]]) -> None:
    for key, value in list(counts):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], float(value))


class FleetCollector:
    """A ``prometheus_client`` collector of one manager's fleet.

    Creating it attaches a :class:`FleetMetrics` listener to ``manager.stream``; register it
    on a ``CollectorRegistry`` to export. One collector per registry: a second one (for a
    second manager) would clash on the metric names, so give each manager its own registry.

    Args:
        manager: the open manager to observe.
        buckets: upper bounds (seconds) of the invocation duration histogram.

    Raises:
        ValueError: ``buckets`` are not strictly increasing.
    """

    def __init__(self, manager: Manager, *, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        self._manager = manager
        self.metrics = FleetMetrics(buckets=buckets)
        """The counters, as plain mappings."""
        self._detach: Callable[[], None] | None = manager.stream.add_listener(self.metrics)

    def close(self) -> None:
        """Stop counting (the gauges still read the manager's state when scraped)."""
        if self._detach is not None:
            self._detach()
            self._detach = None

    def describe(self) -> list[Metric]:
        """The metric families without samples, for the registry's name checks."""
        return list(_families())

    def collect(self) -> Iterator[Metric]:
        """Every metric now: state read from the manager, counters from the listener."""
        out = _families()
        manager = self._manager
        for snapshot in manager.servers():
            name = snapshot.name
            for status in ServerStatus:
                out.status.add_metric([name, status.value], float(status is snapshot.status))
            for state in ConnectionState:
                out.connection.add_metric([name, state.value], float(state is snapshot.connection))
            out.failures.add_metric([name], float(snapshot.consecutive_failures))
            supervisor = manager.supervisor(name)
            limit = supervisor.policy.max_concurrency
            limiter = supervisor.limiter
            out.in_flight.add_metric([name], float(limit - limiter.value))
            out.waiting.add_metric([name], float(limiter.statistics().tasks_waiting))
            out.max_concurrency.add_metric([name], float(limit))
            out.parked.add_metric([name], float(snapshot.session.parked))
        metrics = self.metrics
        _fill(out.status_changes, metrics.status_changes.items())
        _fill(out.reconnects, metrics.reconnects.items())
        _fill(out.handshakes, metrics.handshakes.items())
        _fill(out.invocations, metrics.invocations.items())
        metrics.durations.fill(out.durations)
        _fill(out.attempts, metrics.attempts.items())
        _fill(out.failovers, metrics.failovers.items())
        for log_name, log in (("connection", manager.connection_log), ("invocation", manager.invocation_log)):
            out.dropped.add_metric([log_name], float(log.dropped))
        yield from out

    def __repr__(self) -> str:
        state = "attached" if self._detach is not None else "closed"
        return f"<FleetCollector {state} servers={self._manager.names}>"
