"""``Published``: a single writer's value that any task can read or wait on."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from trio_mcp._publish import Published


async def test_a_matching_current_value_is_returned_at_once() -> None:
    value = Published(3)
    assert await value.wait_value(lambda v: v > 2) == 3
    assert value.value == 3


async def test_a_waiter_sees_a_value_that_held_only_briefly() -> None:
    value = Published(0)
    seen: list[int] = []

    async def wait_for_one() -> None:
        seen.append(await value.wait_value(lambda v: v == 1))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_one)
        await trio.testing.wait_all_tasks_blocked()
        # 1 holds for no schedule point at all: the waiter still gets it.
        value.set(1)
        value.set(2)
    assert seen == [1]
    assert value.value == 2


async def test_each_waiter_gets_the_first_value_its_predicate_accepts() -> None:
    value = Published("a")
    got: dict[str, str] = {}

    async def wait(name: str, wanted: str) -> None:
        got[name] = await value.wait_value(lambda v: v == wanted)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, "first", "b")
        nursery.start_soon(wait, "second", "c")
        await trio.testing.wait_all_tasks_blocked()
        value.set("b")
        await trio.testing.wait_all_tasks_blocked()
        assert got == {"first": "b"}
        value.set("c")
    assert got == {"first": "b", "second": "c"}


async def test_a_predicate_that_raises_does_not_match_and_does_not_break_the_writer() -> None:
    value = Published(0)
    calls: list[int] = []

    def more_than_two_tenths(v: int) -> bool:
        calls.append(v)
        return 10 // v > 2  # ZeroDivisionError on 0

    result: list[int] = []

    async def wait() -> None:
        result.append(await value.wait_value(more_than_two_tenths))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)  # the current value (0) raises: not a match
        await trio.testing.wait_all_tasks_blocked()
        value.set(0)  # raises again: the writer is not interrupted
        value.set(5)  # 10 // 5 == 2: no match
        await trio.testing.wait_all_tasks_blocked()
        assert result == []
        value.set(3)  # 10 // 3 == 3: a match
    assert result == [3]
    assert calls == [0, 0, 5, 3]


async def test_a_cancelled_waiter_is_forgotten(autojump_clock: trio.testing.MockClock) -> None:
    value = Published(0)
    calls: list[int] = []

    def never(v: int) -> bool:
        calls.append(v)
        return False

    with trio.move_on_after(1) as scope:
        await value.wait_value(never)
    assert scope.cancelled_caught
    assert calls == [0]
    value.set(1)
    # The abandoned waiter's predicate is not evaluated any more.
    assert calls == [0]


async def test_wait_transition_is_by_identity() -> None:
    first: list[int] = [1]
    value = Published(first)
    got: list[list[int]] = []

    async def wait() -> None:
        got.append(await value.wait_transition(first))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        value.set(first)  # the same object: no transition
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        equal = [1]
        value.set(equal)  # equal, but a new object: a transition
    assert got == [equal]
    assert got[0] is equal


async def test_recheck_evaluates_again_only_the_predicates_that_read_stamps() -> None:
    """A predicate that also reads a stamp outside the value is evaluated again on ``recheck``;
    one of the value alone is not (nothing it reads changed)."""
    value = Published(0)
    stamp = {"checked_at": 0.0}
    calls: list[str] = []

    def plain(v: int) -> bool:
        calls.append("plain")
        return v == 1

    def stamped(v: int) -> bool:
        calls.append("stamped")
        return stamp["checked_at"] > 0

    got: list[str] = []

    async def wait(name: str, predicate: Any, stamps: bool) -> None:
        await value.wait_value(predicate, stamps=stamps)
        got.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, "plain", plain, False)
        nursery.start_soon(wait, "stamped", stamped, True)
        await trio.testing.wait_all_tasks_blocked()
        calls.clear()
        value.recheck()  # nothing changed yet
        assert calls == ["stamped"]
        stamp["checked_at"] = 5.0
        value.recheck()
        await trio.testing.wait_all_tasks_blocked()
        assert got == ["stamped"]
        assert calls == ["stamped", "stamped"]
        value.set(1)  # a new value: every waiter left is evaluated
    assert got == ["stamped", "plain"]
