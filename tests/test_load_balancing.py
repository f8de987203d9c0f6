"""Choosing among equal servers: power of two choices on calls in flight and a peak EWMA of
latency (``trio_mcp._load`` and ``rank_candidates(load=..., draw=...)``), as tables, then a
fleet in virtual time whose calls spread over its servers and shun the slow one."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import trio

import trio_mcp
from trio_mcp import ServerStatus
from trio_mcp._load import LATENCY_DECAY, Load, LoadGauge, less_loaded, peak_ewma, two_choices
from trio_mcp._routing import rank_candidates
from trio_mcp._state import Catalog, ServerState
from trio_mcp.testing import ScriptedServer, memory_server

H, D, R = ServerStatus.HEALTHY, ServerStatus.DEGRADED, ServerStatus.RECOVERED


# -- the pure parts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "previous_at", "sample", "now", "expected"),
    [
        (None, 0.0, 0.2, 5.0, 0.2),  # the first sample is the average
        (0.1, 0.0, 0.5, 0.0, 0.5),  # a slower answer replaces the average at once (peak)
        (0.1, 0.0, 0.5, 100.0, 0.5),
        (0.5, 10.0, 0.1, 10.0, 0.5),  # no time passed: a faster answer does not count yet
        (0.5, 0.0, 0.1, LATENCY_DECAY, 0.5 / math.e + 0.1 * (1 - 1 / math.e)),
        (0.5, 0.0, 0.1, 1e9, 0.1),  # a very old average has faded away
        (0.5, 10.0, 0.1, 5.0, 0.5),  # a clock that went backwards is no time passed
    ],
)
def test_peak_ewma(
    previous: float | None, previous_at: float, sample: float, now: float, expected: float
) -> None:
    assert peak_ewma(previous, previous_at, sample, now) == pytest.approx(expected)


def test_the_gauge_keeps_the_average_and_its_time() -> None:
    gauge = LoadGauge()
    gauge.observe(0.3, 1.0)
    gauge.observe(0.1, 1.0 + LATENCY_DECAY)
    assert gauge.latency == pytest.approx(0.3 / math.e + 0.1 * (1 - 1 / math.e))
    assert gauge.updated_at == 1.0 + LATENCY_DECAY


def test_an_unanswered_attempt_only_ever_raises_the_average() -> None:
    gauge = LoadGauge()
    gauge.observe_unanswered(0.5, 1.0)  # nothing known: at least 0.5 s
    assert (gauge.latency, gauge.updated_at, list(gauge.recent or ())) == (0.5, 1.0, [0.5])
    gauge.observe_unanswered(0.2, 2.0)  # a lower bound under the average says nothing
    assert (gauge.latency, gauge.updated_at, list(gauge.recent or ())) == (0.5, 1.0, [0.5])
    gauge.observe_unanswered(0.8, 3.0)  # above it: a peak, taken at once
    assert (gauge.latency, gauge.updated_at, list(gauge.recent or ())) == (0.8, 3.0, [0.5, 0.8])


@pytest.mark.parametrize(
    ("a", "b", "a_first"),
    [
        (Load(0, 0.1), Load(0, 0.2), True),
        (Load(0, 0.2), Load(0, 0.1), False),
        (Load(3, 0.1), Load(0, 0.2), False),  # 4 * 0.1 > 1 * 0.2
        (Load(1, 0.1), Load(0, 0.3), True),  # 2 * 0.1 < 1 * 0.3
        (Load(2, 0.1), Load(2, 0.1), True),  # ties: the first
        (Load(0, None), Load(1, 0.001), True),  # a latency not known yet: calls in flight only,
        (Load(2, 0.001), Load(1, None), False),
        (Load(0, 0.1), Load(0, None), False),  # and when they are equal, the one not measured yet
        (Load(0, None), Load(0, 0.1), True),
        (Load(1, None), Load(1, None), True),
        (Load(5, 0.0), Load(0, 0.0), False),  # an instant answer still counts its calls in flight
    ],
)
def test_less_loaded(a: Load, b: Load, a_first: bool) -> None:
    assert less_loaded(a, b) is a_first


@pytest.mark.parametrize("count", [2, 3, 7])
def test_two_choices_are_distinct_ordered_and_cover_every_pair(count: int) -> None:
    steps = [i / 20 for i in range(20)] + [0.999999]
    pairs = {two_choices(count, x, y) for x in steps for y in steps}
    assert pairs == set(itertools.combinations(range(count), 2))


def healthy(catalog: Catalog | None = None) -> ServerState:
    return ServerState(status=H, catalog=catalog or Catalog())


def draws(*values: float) -> Callable[[], float]:
    numbers: Iterator[float] = iter(values)
    return lambda: next(numbers)


def order(
    states: dict[str, ServerState],
    loads: dict[str, Load],
    draw: Callable[[], float],
    preferred: tuple[str, ...] = (),
    arguments: dict[str, object] | None = None,
) -> list[str]:
    routes = rank_candidates(
        states, preferred, "tools/call", "echo", 0.0, arguments, load=loads.__getitem__, draw=draw
    )
    return [route.server for route in routes]


IDLE = Load(0, None)


def test_the_less_loaded_of_the_two_drawn_goes_first_the_rest_keep_their_order() -> None:
    fleet = {name: healthy() for name in "abcd"}
    loads = {"a": Load(5, 0.1), "b": IDLE, "c": Load(1, 0.1), "d": IDLE}
    # Draws 0.0 and 0.5 pick positions 0 and 2 (a, c): c is less loaded.
    assert order(fleet, loads, draws(0.0, 0.5)) == ["c", "a", "b", "d"]
    # Draws 0.3 and 0.9 pick positions 1 and 3 (b, d): equal, the first of them.
    assert order(fleet, loads, draws(0.3, 0.9)) == ["b", "a", "c", "d"]


def test_only_the_best_status_is_balanced_and_preferred_servers_still_come_first() -> None:
    fleet = {"deg": ServerState(status=D), "h1": healthy(), "rec": ServerState(status=R), "h2": healthy()}
    loads = {"deg": IDLE, "h1": Load(9, 1.0), "rec": IDLE, "h2": IDLE}
    assert order(fleet, loads, draws(0.0, 0.9)) == ["h2", "h1", "rec", "deg"]
    # A preferred server is tried first whatever its load; the balancing is among the others.
    assert order(fleet, loads, draws(0.0, 0.9), preferred=("h1",)) == ["h1", "h2", "rec", "deg"]


def test_a_server_that_refuses_the_arguments_is_never_the_one_chosen() -> None:
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    from mcp_types import Tool

    from trio_mcp._arguments import compile_check
    from trio_mcp._state import Listing

    strict = Tool(name="echo", input_schema=schema)
    loose = Tool(name="echo", input_schema={"type": "object"})
    listing = {
        name: Listing({"echo": tool}, {"echo": compile_check("tools", tool)})  # type: ignore[dict-item]
        for name, tool in (("strict", strict), ("loose1", loose), ("loose2", loose))
    }
    fleet = {name: healthy(Catalog(tools=items)) for name, items in listing.items()}
    loads = {"strict": IDLE, "loose1": Load(4, 1.0), "loose2": IDLE}
    routes = list(
        rank_candidates(
            fleet, (), "tools/call", "echo", 0.0, {"text": 1}, load=loads.__getitem__, draw=draws(0.0, 0.9)
        )
    )
    assert [(r.server, r.reject is not None) for r in routes] == [
        ("loose2", False),
        ("strict", True),
        ("loose1", False),
    ]


def _random_fleet(rng: random.Random) -> dict[str, ServerState]:
    """Servers of every status (some unreachable with their window open or shut), catalogs
    unknown, without the target, or with one of two schemas for it."""
    from mcp_types import Tool

    from trio_mcp._arguments import compile_check
    from trio_mcp._state import Listing

    strict = Tool(
        name="echo",
        input_schema={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    )
    loose = Tool(name="echo", input_schema={"type": "object"})
    other = Tool(name="other", input_schema={"type": "object"})
    catalogs = [
        Catalog(),
        Catalog(tools=Listing({"other": other})),
        Catalog(tools=Listing({"echo": strict}, {"echo": compile_check("tools", strict)})),  # type: ignore[dict-item]
        Catalog(tools=Listing({"echo": loose}, {"echo": compile_check("tools", loose)})),  # type: ignore[dict-item]
    ]
    fleet = {}
    for i in range(rng.randrange(1, 9)):
        status = rng.choice([H, H, H, R, D, ServerStatus.UNKNOWN, ServerStatus.UNREACHABLE])
        retry_at = rng.choice([None, 0.5, 2.0]) if status is ServerStatus.UNREACHABLE else None
        fleet[f"s{i}"] = ServerState(status=status, retry_at=retry_at, catalog=rng.choice(catalogs))
    return fleet


@pytest.mark.parametrize("seed", range(300))
def test_equals_known_ahead_give_the_same_routes_as_ranking_the_whole_fleet(seed: int) -> None:
    from trio_mcp._routing import equals_of, first_choice, routes_after

    rng = random.Random(seed)
    fleet = _random_fleet(rng)
    loads = {name: Load(rng.randrange(3), rng.choice([None, 0.1, 0.2])) for name in fleet}
    arguments = rng.choice([{"text": "hi"}, {"text": 1}, {}, None])
    values = [rng.random() for _ in range(2)]
    equals = equals_of(fleet, "tools", "echo")

    for balanced in (True, False):  # least-loaded among equals, and registration order
        load = loads.__getitem__ if balanced else None

        found = rank_candidates(
            fleet,
            (),
            "tools/call",
            "echo",
            1.0,
            arguments,
            load=load,
            draw=draws(*values) if balanced else None,
        )
        whole = [(r.server, r.reject) for r in found]
        # The invoker's own way: the first choice, then the rest only when asked for.
        first = None
        if equals is not None:
            first = first_choice(equals, arguments, load, draws(*values) if balanced else None)
        if first is not None:
            after = routes_after(first, fleet, "tools/call", "echo", 1.0, arguments)
            assert [(first, None)] + [(r.server, r.reject) for r in after] == whole


def test_equals_are_the_best_status_servers_that_offer_the_target() -> None:
    from trio_mcp._routing import Equals, equals_of

    fleet = {"deg": ServerState(status=D), "h1": healthy(), "rec": ServerState(status=R), "h2": healthy()}
    assert equals_of(fleet, "tools", "echo") == Equals(("h1", "h2"), None)
    # A fleet whose best servers are unreachable: whether one can be tried depends on the time.
    down = {
        "u1": ServerState(status=ServerStatus.UNREACHABLE),
        "u2": ServerState(status=ServerStatus.UNREACHABLE),
    }
    assert equals_of(down, "tools", "echo") is None
    # Two schemas of the target: which servers refuse depends on the arguments.
    mixed = {name: healthy(state.catalog) for name, state in _random_fleet(random.Random(0)).items()}
    mixed["strict"] = healthy(_catalog_of("strict"))
    mixed["loose"] = healthy(_catalog_of("loose"))
    assert equals_of(mixed, "tools", "echo") is None
    same = {"a": healthy(_catalog_of("loose")), "b": healthy(), "c": healthy(_catalog_of("loose"))}
    found = equals_of(same, "tools", "echo")
    assert found is not None and found.names == ("a", "b", "c") and found.check is not None
    assert found.check({"text": 1}) is None


def _catalog_of(schema: str) -> Catalog:
    from mcp_types import Tool

    from trio_mcp._arguments import compile_check
    from trio_mcp._state import Listing

    shapes = {
        "strict": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        "loose": {"type": "object"},
    }
    tool = Tool(name="echo", input_schema=shapes[schema])
    return Catalog(tools=Listing({"echo": tool}, {"echo": compile_check("tools", tool)}))  # type: ignore[dict-item]


def test_without_load_or_draw_the_order_is_registration_order() -> None:
    fleet = {name: healthy() for name in "abc"}
    assert [r.server for r in rank_candidates(fleet, (), "tools/call", "echo", 0.0)] == ["a", "b", "c"]


# -- a fleet in virtual time ----------------------------------------------------------------------


def fleet_of(*servers: ScriptedServer) -> list[trio_mcp.ServerConfig]:
    policy = trio_mcp.ServerPolicy(health_interval=3600, max_concurrency=100)
    return [memory_server(server, policy=policy) for server in servers]


async def test_concurrent_calls_spread_over_equal_servers(autojump_clock: trio.testing.MockClock) -> None:
    servers = [ScriptedServer(f"s{i}") for i in range(3)]
    async with trio_mcp.open_manager(fleet_of(*servers), rng=random.Random(1)) as manager:
        for server in servers:
            await manager.acquire(server.name)
        used: Counter[str] = Counter()

        async def call() -> None:
            outcome = await manager.invoke("tools/call", "sleep", {"seconds": 1})
            used[outcome.server] += 1

        async with trio.open_nursery() as nursery:
            for _ in range(60):
                nursery.start_soon(call)
                await trio.sleep(0.05)  # 20 in flight at a time
    # In registration order every call would go to s0; two choices on calls in flight spread them.
    assert sum(used.values()) == 60
    assert min(used[s.name] for s in servers) >= 10, used


async def test_a_slow_server_is_shunned_once_its_latency_is_known(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fast, slow = ScriptedServer("fast"), ScriptedServer("slow")
    slow.delay_tool("echo", 0.5)
    async with trio_mcp.open_manager(fleet_of(slow, fast), rng=random.Random(2)) as manager:
        await manager.acquire("slow")
        await manager.acquire("fast")
        used = Counter(
            [(await manager.invoke("tools/call", "echo", {"text": "x"})).server for _ in range(50)]
        )
    # The first call may go to the slow server (nothing is known yet); then its 0.5 s average
    # loses every comparison with the fast one's.
    assert used["slow"] <= 1, used
    assert used["fast"] >= 49


async def test_ordered_routing_keeps_registration_order(autojump_clock: trio.testing.MockClock) -> None:
    servers = [ScriptedServer(f"s{i}") for i in range(3)]
    async with trio_mcp.open_manager(fleet_of(*servers), routing="ordered") as manager:
        for server in servers:
            await manager.acquire(server.name)
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(manager.invoke, "tools/call", "sleep", {"seconds": 1})
    assert [server.executions("sleep") for server in servers] == [20, 0, 0]


async def test_an_unknown_routing_is_refused() -> None:
    with pytest.raises(trio_mcp.ConfigError, match="routing"):
        async with trio_mcp.open_manager([], routing="random"):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def test_the_choice_follows_a_server_that_leaves_and_rejoins_the_best_status(
    autojump_clock: trio.testing.MockClock,
) -> None:
    servers = [ScriptedServer(f"s{i}") for i in range(3)]
    async with trio_mcp.open_manager(fleet_of(*servers), rng=random.Random(3)) as manager:
        for server in servers:
            await manager.acquire(server.name)

        async def first_tried(calls: int) -> Counter[str]:
            outcomes = [await manager.invoke("tools/call", "echo", {"text": "x"}) for _ in range(calls)]
            return Counter(outcome.attempts[0].server for outcome in outcomes)

        assert set(await first_tried(30)) == {"s0", "s1", "s2"}
        servers[1].fail_tool("echo", "internal error")  # its next call degrades it
        while manager.server("s1").status is ServerStatus.HEALTHY:
            await manager.invoke("tools/call", "echo", {"text": "x"}, preferred=["s1"], failover="always")
        # Degraded: no longer among the equals, whatever was chosen among them before.
        assert "s1" not in await first_tried(30)
        servers[1].heal()
        await manager.health_check("s1")
        await manager.wait_for("s1", lambda snap: snap.status is ServerStatus.HEALTHY)
        assert "s1" in await first_tried(30)
        # A server added later is among them too, and one removed is not.
        await manager.remove_server("s0")
        late = ScriptedServer("late")
        await manager.add_server(fleet_of(late)[0])
        await manager.acquire("late")
        chosen = await first_tried(30)
        assert "s0" not in chosen and "late" in chosen, chosen
