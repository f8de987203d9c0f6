"""``Published``: one writer assigns a value, any task reads it or waits for a condition on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import trio

T = TypeVar("T")


class _Waiter(Generic[T]):
    __slots__ = ("event", "predicate", "stamps", "value")

    def __init__(self, predicate: Callable[[T], bool], stamps: bool) -> None:
        self.predicate = predicate
        self.stamps = stamps
        self.event = trio.Event()
        self.value: T | None = None


class Published(Generic[T]):
    """A value with a single writer and any number of readers.

    Waiters' predicates are evaluated on *every* value assigned, at the moment it is assigned,
    so a waiter cannot miss a value that held only briefly (as trio-util's ``AsyncValue``).
    A predicate that raises is treated as not matching; it must be a plain function of the value.
    """

    __slots__ = ("_value", "_waiters")

    def __init__(self, value: T) -> None:
        self._value = value
        self._waiters: list[_Waiter[T]] = []

    @property
    def value(self) -> T:
        return self._value

    def set(self, value: T) -> None:
        """Assign a new value (the writer only) and wake the waiters it satisfies."""
        self._value = value
        if self._waiters:
            self._wake(value, stamps_only=False)

    def recheck(self) -> None:
        """Evaluate again, on the value as it is, the predicates that also read what the value
        does not hold (a usage stamp: ``wait_value(..., stamps=True)``); any task may."""
        if self._waiters:
            self._wake(self._value, stamps_only=True)

    def _wake(self, value: T, *, stamps_only: bool) -> None:
        still: list[_Waiter[T]] = []
        for waiter in self._waiters:
            if (waiter.stamps or not stamps_only) and _matches(waiter.predicate, value):
                waiter.value = value
                waiter.event.set()
            else:
                still.append(waiter)
        self._waiters = still

    async def wait_value(self, predicate: Callable[[T], bool], *, stamps: bool = False) -> T:
        """Return the first value (the current one included) for which ``predicate`` holds.
        ``stamps``: it also reads what the value does not hold, so it is evaluated again on
        :meth:`recheck` too."""
        value = self._value
        if _matches(predicate, value):
            await trio.lowlevel.checkpoint()
            return value
        waiter = _Waiter(predicate, stamps)
        self._waiters.append(waiter)
        try:
            await waiter.event.wait()
        finally:
            if not waiter.event.is_set():
                self._waiters.remove(waiter)
        assert waiter.value is not None
        return waiter.value

    async def wait_transition(self, current: T) -> T:
        """Wait until the value is no longer ``current`` (by identity); return the new one."""
        return await self.wait_value(lambda value: value is not current)


def _matches(predicate: Callable[[T], bool], value: T) -> bool:
    try:
        return bool(predicate(value))
    except Exception:
        return False
