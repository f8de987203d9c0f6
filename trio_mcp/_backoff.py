"""A pure jittered exponential backoff schedule (after gRPC's connection backoff)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class RandomSource(Protocol):
    """What the schedule needs from a random source (``random.Random`` fits)."""

    def uniform(self, a: float, b: float) -> float: ...


@dataclass(frozen=True, kw_only=True)
class BackoffPolicy:
    """How long to wait before the n-th retry.

    ``delay(n) = min(initial * multiplier**n, cap) * (1 + uniform(-jitter, +jitter))``.
    The defaults are gRPC's connection backoff: 1 s, x1.6, at most 120 s, +/-20 %.
    """

    initial: float = 1.0
    multiplier: float = 1.6
    cap: float = 120.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        from ._exceptions import ConfigError

        if self.initial < 0:
            raise ConfigError("must be >= 0", key="backoff.initial")
        if self.multiplier < 1:
            raise ConfigError("must be >= 1", key="backoff.multiplier")
        if self.cap < self.initial:
            raise ConfigError("must be >= initial", key="backoff.cap")
        if not 0 <= self.jitter < 1:
            raise ConfigError("must be in [0, 1)", key="backoff.jitter")

    def base_delay(self, attempt: int) -> float:
        """The un-jittered delay before retry number ``attempt`` (0-based)."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        delay = self.initial
        for _ in range(attempt):
            delay *= self.multiplier
            if delay >= self.cap:
                return self.cap
        return min(delay, self.cap)

    def delay(self, attempt: int, rng: RandomSource) -> float:
        """The jittered delay before retry number ``attempt`` (0-based)."""
        base = self.base_delay(attempt)
        if self.jitter == 0:
            return base
        return base * (1.0 + rng.uniform(-self.jitter, self.jitter))
