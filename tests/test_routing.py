"""Table tests of candidate ranking (``trio_mcp._routing``): a pure function of published states."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import mcp_types
import pytest

from trio_mcp import ServerStatus
from trio_mcp._routing import (
    KIND_OF_METHOD,
    STATUS_RANK,
    Route,
    rank_candidates,
    reject_reason,
    skip_reason,
)
from trio_mcp._state import Catalog, ServerState

H, D, U, R, K = (
    ServerStatus.HEALTHY,
    ServerStatus.DEGRADED,
    ServerStatus.UNREACHABLE,
    ServerStatus.RECOVERED,
    ServerStatus.UNKNOWN,
)
NOW = 100.0
CLOSED_WINDOW = 150.0  # retry_at after NOW
OPEN_WINDOW = 100.0  # retry_at == NOW: open


def tool(name: str, **properties: str) -> mcp_types.Tool:
    """A tool whose arguments are all required and of the given JSON types."""
    return mcp_types.Tool(
        name=name,
        input_schema={
            "type": "object",
            "properties": {key: {"type": typ} for key, typ in properties.items()},
            "required": list(properties),
        },
    )


ECHO = tool("echo", text="string")
CHARGE = tool("charge", amount="integer")
REVIEW = mcp_types.Prompt(name="review", arguments=[mcp_types.PromptArgument(name="code", required=True)])
README = mcp_types.Resource(name="readme", uri="docs://readme")
TOOLS = Catalog(
    tools={"echo": ECHO, "charge": CHARGE},
    resources={"docs://readme": README},
    prompts={"review": REVIEW},
)

NOTHING_KNOWN = Catalog()


def state(
    status: ServerStatus = H, *, retry_at: float | None = None, catalog: Catalog = NOTHING_KNOWN
) -> ServerState:
    return ServerState(status=status, retry_at=retry_at, catalog=catalog)


def ranked(
    states: Mapping[str, ServerState],
    preferred: tuple[str, ...] = (),
    method: str = "tools/call",
    target: str | None = "echo",
    arguments: dict[str, Any] | None = None,
) -> list[tuple[str, str | None]]:
    """``(server, skip)`` of every route, checking that only the preferred are marked so and
    that nothing is rejected (see the reject tests for that)."""
    routes = list(rank_candidates(states, preferred, method, target, NOW, arguments))
    assert [r.reject for r in routes] == [None] * len(routes)
    assert [r.preferred for r in routes] == [r.server in preferred for r in routes]
    return [(r.server, r.skip) for r in routes]


# -- skip_reason ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "server, kind, target, reason",
    [
        (state(H), "tools", "echo", None),
        (state(H), None, None, None),
        # only an unreachable server with a closed window is passed over for its health
        (state(U, retry_at=CLOSED_WINDOW), None, None, "retry window closed"),
        (state(U, retry_at=CLOSED_WINDOW), "tools", "echo", "retry window closed"),
        (state(U, retry_at=CLOSED_WINDOW, catalog=TOOLS), "tools", "nope", "retry window closed"),
        (state(U, retry_at=OPEN_WINDOW), "tools", "echo", None),
        (state(U, retry_at=None), "tools", "echo", None),
        (state(U, retry_at=99.9), "tools", "echo", None),
        (state(D, retry_at=CLOSED_WINDOW), "tools", "echo", None),
        (state(K, retry_at=CLOSED_WINDOW), "tools", "echo", None),
        (state(R, retry_at=CLOSED_WINDOW), "tools", "echo", None),
        # catalog filtering: only by a known catalog of that kind
        (state(H, catalog=TOOLS), "tools", "echo", None),
        (state(H, catalog=TOOLS), "tools", "sleep", "does not offer tool 'sleep'"),
        (state(H, catalog=TOOLS), "resources", "docs://readme", None),
        (state(H, catalog=TOOLS), "resources", "docs://nope", "does not offer resource 'docs://nope'"),
        (state(H, catalog=TOOLS), "prompts", "review", None),
        (state(H, catalog=TOOLS), "prompts", "summarize", "does not offer prompt 'summarize'"),
        (state(H, catalog=Catalog(tools={})), "tools", "echo", "does not offer tool 'echo'"),
        (state(H, catalog=Catalog(tools=TOOLS.tools)), "resources", "docs://nope", None),
        (state(H, catalog=Catalog(tools=TOOLS.tools)), "prompts", "summarize", None),
        (state(H), "tools", "sleep", None),
        (state(H, catalog=TOOLS), None, "sleep", None),
        (state(H, catalog=TOOLS), "tools", None, None),
    ],
)
def test_skip_reason(server: ServerState, kind: str | None, target: str | None, reason: str | None) -> None:
    assert skip_reason(server, kind, target, NOW) == reason


def test_tables() -> None:
    assert list(STATUS_RANK) == [H, R, K, D, U]
    assert sorted(STATUS_RANK.values()) == [0, 1, 2, 3, 4]
    assert dict(KIND_OF_METHOD) == {
        "tools/call": "tools",
        "resources/read": "resources",
        "prompts/get": "prompts",
    }
    assert Route("a") == Route("a", None, None, preferred=False)


# -- rank_candidates -----------------------------------------------------------------------------

FLEET = {
    "u_open": state(U, retry_at=OPEN_WINDOW),
    "d1": state(D),
    "k1": state(K),
    "r1": state(R),
    "h1": state(H),
    "u_closed": state(U, retry_at=CLOSED_WINDOW),
    "d2": state(D),
    "h2": state(H),
    "r2": state(R),
    "k2": state(K),
}
"""Registration order is the dict order."""


@pytest.mark.parametrize(
    "preferred, expected",
    [
        # by status, ties in registration order; unreachable only with an open window
        (
            (),
            [
                ("h1", None),
                ("h2", None),
                ("r1", None),
                ("r2", None),
                ("k1", None),
                ("k2", None),
                ("d1", None),
                ("d2", None),
                ("u_open", None),
            ],
        ),
        # preferred first, in the order given, whatever their status
        (
            ("d2", "u_open", "k1"),
            [
                ("d2", None),
                ("u_open", None),
                ("k1", None),
                ("h1", None),
                ("h2", None),
                ("r1", None),
                ("r2", None),
                ("k2", None),
                ("d1", None),
            ],
        ),
        # a preferred server that cannot take it is yielded with its reason, then left out
        (
            ("u_closed", "h2"),
            [
                ("u_closed", "retry window closed"),
                ("h2", None),
                ("h1", None),
                ("r1", None),
                ("r2", None),
                ("k1", None),
                ("k2", None),
                ("d1", None),
                ("d2", None),
                ("u_open", None),
            ],
        ),
        # duplicates once, at their first place; unknown names ignored
        (
            ("r2", "ghost", "r2", "d1", "h2", "d1", "ghost"),
            [
                ("r2", None),
                ("d1", None),
                ("h2", None),
                ("h1", None),
                ("r1", None),
                ("k1", None),
                ("k2", None),
                ("d2", None),
                ("u_open", None),
            ],
        ),
        # every server preferred: exactly the preferred order
        (
            tuple(reversed(FLEET)),
            [(name, "retry window closed" if name == "u_closed" else None) for name in reversed(FLEET)],
        ),
    ],
)
def test_rank_candidates_order(preferred: tuple[str, ...], expected: list[tuple[str, str | None]]) -> None:
    assert ranked(FLEET, preferred) == expected


def test_rank_candidates_catalog_filtering() -> None:
    fleet = {
        "knows_nothing": state(K),
        "offers": state(R, catalog=TOOLS),
        "lacks": state(H, catalog=Catalog(tools={"charge": CHARGE}, resources={}, prompts={})),
        "lacks_closed": state(U, retry_at=CLOSED_WINDOW, catalog=Catalog(tools={})),
        "other_kinds_only": state(H, catalog=Catalog(resources={"docs://readme": README})),
    }
    assert ranked(fleet, (), "tools/call", "echo", {"text": "x"}) == [
        ("other_kinds_only", None),
        ("offers", None),
        ("knows_nothing", None),
    ]
    assert ranked(fleet, ("lacks", "lacks_closed", "offers"), "tools/call", "echo", {"text": "x"}) == [
        ("lacks", "does not offer tool 'echo'"),
        ("lacks_closed", "retry window closed"),
        ("offers", None),
        ("other_kinds_only", None),
        ("knows_nothing", None),
    ]
    assert ranked(fleet, ("lacks",), "resources/read", "docs://readme") == [
        ("lacks", "does not offer resource 'docs://readme'"),
        ("other_kinds_only", None),
        ("offers", None),
        ("knows_nothing", None),
    ]
    assert ranked(fleet, ("other_kinds_only",), "prompts/get", "review", {"code": "x = 1"}) == [
        ("other_kinds_only", None),
        ("offers", None),
        ("knows_nothing", None),
    ]
    assert ranked(fleet, (), "prompts/get", "summarize") == [
        ("other_kinds_only", None),
        ("knows_nothing", None),
    ]
    # Methods without a catalog kind (and calls without a target) are not filtered.
    everyone = [("lacks", None), ("other_kinds_only", None), ("offers", None), ("knows_nothing", None)]
    assert ranked(fleet, (), "tools/list", None) == everyone
    assert ranked(fleet, (), "tools/list", "echo") == everyone
    assert ranked(fleet, (), "tools/call", None) == everyone


def test_rank_candidates_empty_fleet() -> None:
    assert ranked({}, ()) == []
    assert ranked({}, ("ghost",)) == []


class RecordingStates(Mapping[str, ServerState]):
    """A states mapping that records every lookup (``None`` values: a server removed between
    listing the names and reading its state)."""

    def __init__(self, states: dict[str, ServerState | None]) -> None:
        self.states = states
        self.log: list[str] = []

    def __getitem__(self, name: str) -> ServerState:
        self.log.append(f"[{name}]")
        value = self.states[name]
        if value is None:
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        self.log.append(f"get {name}")
        value = self.states.get(name)
        return default if value is None else value

    def __iter__(self) -> Iterator[str]:
        self.log.append("iter")
        return iter(self.states)

    def __len__(self) -> int:  # not logged: list() may ask for a length hint
        return len(self.states)


def test_rank_candidates_is_lazy() -> None:
    states = RecordingStates({"a": state(D), "b": state(H), "c": state(K), "d": state(R)})
    routes = rank_candidates(states, ["c", "ghost", "a"], "tools/call", "echo", NOW)
    assert states.log == []  # nothing is read before the first route is asked for
    assert next(routes) == Route("c", preferred=True)
    assert states.log == ["get c"]
    assert next(routes) == Route("a", preferred=True)
    assert states.log == ["get c", "get ghost", "get a"]
    # The rest is ranked only now, from the states as they are now: d went down meanwhile.
    states.states["d"] = state(U, retry_at=CLOSED_WINDOW)
    states.states["b"] = state(D)
    assert next(routes) == Route("b")
    assert states.log[3:] == ["iter", "get b", "get d"]  # each state read once
    assert list(routes) == []
    assert states.log[3:] == ["iter", "get b", "get d"]


def test_rank_candidates_reads_the_rest_once_and_tolerates_removals() -> None:
    states = RecordingStates({"a": state(H), "gone": None, "b": state(R), "c": state(H)})
    assert [r.server for r in rank_candidates(states, [], "tools/call", "echo", NOW)] == ["a", "c", "b"]
    assert states.log == ["iter", "get a", "get gone", "get b", "get c"]
    states.log.clear()
    assert list(rank_candidates(states, ["gone", "b"], "tools/call", "echo", NOW)) == [
        Route("b", preferred=True),
        Route("a"),
        Route("c"),
    ]
    assert states.log == ["get gone", "get b", "iter", "get a", "get c"]


def test_rank_candidates_never_reads_the_rest_when_the_preferred_are_enough() -> None:
    states = RecordingStates({name: state(H) for name in "abcdef"})
    routes = rank_candidates(states, ["e", "b"], "tools/call", "echo", NOW)
    assert [next(routes), next(routes)] == [Route("e", preferred=True), Route("b", preferred=True)]
    routes.close()
    assert states.log == ["get e", "get b"]


def test_rank_candidates_sees_the_time_given() -> None:
    fleet = {"u": state(U, retry_at=CLOSED_WINDOW), "h": state(H)}
    assert [(r.server, r.skip) for r in rank_candidates(fleet, ["u"], "tools/call", None, 149.9)] == [
        ("u", "retry window closed"),
        ("h", None),
    ]
    assert [(r.server, r.skip) for r in rank_candidates(fleet, [], "tools/call", None, 150.0)] == [
        ("h", None),
        ("u", None),
    ]


def test_rank_candidates_ignores_fields_other_than_status_window_and_catalog() -> None:
    busy = replace(
        state(H),
        consecutive_failures=2,
        retry_count=5,
        retry_at=CLOSED_WINDOW,  # healthy with a closed window (after a caller's failure): still tried
        session_id=None,
        auto=False,
        version=99,
    )
    assert ranked({"x": state(K), "busy": busy}) == [("busy", None), ("x", None)]


# -- schema rejections -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "server, kind, target, arguments, reason",
    [
        (state(H, catalog=TOOLS), "tools", "echo", {"text": "x"}, None),
        (state(H, catalog=TOOLS), "tools", "echo", {"text": 1}, "argument 'text': 1 is not of type 'string'"),
        (state(H, catalog=TOOLS), "tools", "echo", {}, "'text' is a required property"),
        (state(H, catalog=TOOLS), "tools", "echo", None, "'text' is a required property"),
        (state(H, catalog=TOOLS), "tools", "charge", {"amount": 5}, None),
        (
            state(H, catalog=TOOLS),
            "tools",
            "charge",
            {"amount": "5"},
            "argument 'amount': '5' is not of type 'integer'",
        ),
        # not known: not refused (the server decides)
        (state(H, catalog=TOOLS), "tools", "sleep", {"seconds": "x"}, None),
        (state(H), "tools", "echo", {"text": 1}, None),
        (state(H, catalog=TOOLS), "tools", None, {"text": 1}, None),
        # prompts: required arguments present, every value a string
        (state(H, catalog=TOOLS), "prompts", "review", {"code": "x = 1"}, None),
        (state(H, catalog=TOOLS), "prompts", "review", {}, "missing required argument 'code'"),
        (state(H, catalog=TOOLS), "prompts", "review", {"code": 1}, "argument 'code' must be a string"),
        # resources and kind-less methods are never refused
        (state(H, catalog=TOOLS), "resources", "docs://readme", {"x": 1}, None),
        (state(H, catalog=TOOLS), None, "echo", {"text": 1}, None),
    ],
)
def test_reject_reason(
    server: ServerState,
    kind: str | None,
    target: str | None,
    arguments: dict[str, Any] | None,
    reason: str | None,
) -> None:
    assert reject_reason(server, kind, target, arguments) == reason


def test_rank_candidates_yields_rejections_in_place() -> None:
    fleet = {
        "u_closed": state(U, retry_at=CLOSED_WINDOW, catalog=TOOLS),
        "knows": state(D, catalog=TOOLS),
        "blind": state(H),
        "knows_too": state(H, catalog=TOOLS),
    }
    reason = "argument 'text': 1 is not of type 'string'"
    routes = list(rank_candidates(fleet, ["u_closed", "knows"], "tools/call", "echo", NOW, {"text": 1}))
    assert routes == [
        # a skipped server is not checked against its schema
        Route("u_closed", "retry window closed", None, preferred=True),
        Route("knows", None, reason, preferred=True),
        Route("blind"),
        Route("knows_too", None, reason),
    ]
    routes = list(rank_candidates(fleet, [], "tools/call", "echo", NOW, {"text": "fine"}))
    assert routes == [Route("blind"), Route("knows_too"), Route("knows")]
