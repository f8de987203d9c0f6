"""How loaded a server is, as its callers see it, and the choice between two servers (pure).

Among servers that are equally good otherwise (same status, none preferred), an invocation goes
to the less loaded of two picked at random ("power of two choices"): the load of a server is its
calls in flight times a peak-sensitive, time-decayed moving average of their latency (the
"peak EWMA" of Finagle and Linkerd). Two random choices spread calls almost as well as looking
at every server, at the cost of looking at two, and never herd onto one server that a stale
reading made look idle.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass

LATENCY_DECAY = 10.0
"""Seconds over which an old latency sample fades to ``1/e`` of its weight."""
RECENT_SAMPLES = 64
"""How many recent latencies a server keeps for its percentiles."""
PERCENTILE_MIN_SAMPLES = 20
"""Fewer recent latencies than this give no percentile (too few to tell the tail)."""
LATENCY_FLOOR = 0.001
"""The least latency a cost is computed with (an instant answer still costs a call in flight)."""


def peak_ewma(previous: float | None, previous_at: float, sample: float, now: float) -> float:
    """The moving average after ``sample`` arrives at ``now``.

    A sample above the average replaces it at once (a server that slows down is avoided from
    its first slow answer); a lower one is blended in with a weight that grows with the time
    since the last sample (an idle server's old figure counts for less).
    """
    if previous is None or sample >= previous:
        return sample
    weight = math.exp(-max(now - previous_at, 0.0) / LATENCY_DECAY)
    return previous * weight + sample * (1.0 - weight)


@dataclass(slots=True)
class LoadGauge:
    """One server's latency average. Every caller updates it when an attempt ends, in one step
    without a checkpoint (as the server's bulkhead semaphore is updated); it only steers which
    of two equal servers is tried first, never a server's health."""

    latency: float | None = None
    """Seconds (``None``: no call has ended yet)."""
    updated_at: float = 0.0
    recent: deque[float] | None = None
    """The latest call latencies, for :meth:`percentile` (made at the first one)."""

    def observe(self, duration: float, now: float) -> None:
        self.latency = peak_ewma(self.latency, self.updated_at, duration, now)
        self.updated_at = now
        if self.recent is None:
            self.recent = deque(maxlen=RECENT_SAMPLES)
        self.recent.append(duration)

    def observe_unanswered(self, waited: float, now: float) -> None:
        """An attempt was given up after ``waited`` seconds without an answer (another server
        answered a hedged read first): its latency was at least that. It raises the average
        when above it (a server whose slow calls are always hedged away is still seen as slow),
        and never lowers it (a lower bound says nothing of a faster answer)."""
        if self.latency is None or waited > self.latency:
            self.observe(waited, now)

    def percentile(self, fraction: float) -> float | None:
        """The ``fraction`` quantile of the recent latencies (``None``: too few of them)."""
        return percentile(self.recent or (), fraction)


def percentile(samples: Collection[float], fraction: float) -> float | None:
    """The ``fraction`` quantile (nearest rank) of ``samples``; ``None`` when there are fewer
    than :data:`PERCENTILE_MIN_SAMPLES`."""
    if len(samples) < PERCENTILE_MIN_SAMPLES:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


@dataclass(frozen=True, slots=True)
class Load:
    """What :func:`less_loaded` compares: calls in flight and the latency average."""

    in_flight: int
    latency: float | None


def less_loaded(a: Load, b: Load) -> bool:
    """Whether ``a`` should be tried before ``b`` (ties: ``a``).

    The cost of a server is ``(in_flight + 1) * latency`` (a latency of at least
    :data:`LATENCY_FLOOR`). When a latency is not known yet, only the calls in flight are
    compared and, if they are equal, the server not measured yet goes first: it is measured by
    that call, so a new server is neither shunned nor flooded.
    """
    if a.latency is None or b.latency is None:
        if a.in_flight != b.in_flight:
            return a.in_flight < b.in_flight
        return a.latency is None or b.latency is not None
    return (a.in_flight + 1) * max(a.latency, LATENCY_FLOOR) <= (b.in_flight + 1) * max(
        b.latency, LATENCY_FLOOR
    )


def two_choices(count: int, draw: float, second_draw: float) -> tuple[int, int]:
    """Two distinct positions in ``range(count)`` (``count >= 2``) from two uniform draws in
    ``[0, 1)``, the first lower than the second."""
    first = min(int(draw * count), count - 1)
    second = min(int(second_draw * (count - 1)), count - 2)
    if second >= first:
        second += 1
    return (first, second) if first < second else (second, first)
