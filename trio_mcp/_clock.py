"""Timestamps for users, derived from trio's clock and one wall-clock anchor."""

from __future__ import annotations

import time

import trio


class TimeAnchor:
    """Maps trio-clock instants to Unix timestamps.

    The wall clock is read once (or given); every later timestamp is that reading plus the
    trio-clock time elapsed since, so under ``MockClock`` all timestamps are deterministic.
    """

    def __init__(self, wall: float | None = None) -> None:
        self.trio_at = trio.current_time()
        self.wall = time.time() if wall is None else wall

    def at(self, instant: float) -> float:
        """The Unix timestamp of trio-clock ``instant``."""
        return self.wall + (instant - self.trio_at)

    def timestamp(self, at: float | None) -> float | None:
        """Like :meth:`at`, passing ``None`` through."""
        return None if at is None else self.at(at)
