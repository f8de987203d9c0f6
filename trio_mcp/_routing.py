"""Which servers an invocation tries, in which order: a pure function of published states.

No clock, no I/O: ``now`` is an argument, and the input is the servers' published
:class:`~trio_mcp._state.ServerState` values in registration order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from ._state import ServerState, ServerStatus

STATUS_RANK: Mapping[ServerStatus, int] = {
    ServerStatus.HEALTHY: 0,
    ServerStatus.RECOVERED: 1,
    ServerStatus.UNKNOWN: 2,
    ServerStatus.DEGRADED: 3,
    ServerStatus.UNREACHABLE: 4,
}
"""The order in which servers that were not preferred are tried (ties: registration order)."""

KIND_OF_METHOD: Mapping[str, str] = {
    "tools/call": "tools",
    "resources/read": "resources",
    "prompts/get": "prompts",
}


@dataclass(frozen=True, slots=True)
class Route:
    """One candidate: a server to try, or (``skip`` set) a preferred server passed over, and why."""

    server: str
    skip: str | None = None


def skip_reason(state: ServerState, kind: str | None, target: str | None, now: float) -> str | None:
    """Why a server cannot take the request now (``None``: it can)."""
    if state.status is ServerStatus.UNREACHABLE and not state.window_open(now):
        return "retry window closed"
    if kind is not None and target is not None:
        known = state.catalog.of(kind)
        if known is not None and target not in known:
            return f"does not offer {kind[:-1]} {target!r}"
    return None


def rank_candidates(
    states: Mapping[str, ServerState],
    preferred: Sequence[str],
    method: str,
    target: str | None,
    now: float,
) -> Iterator[Route]:
    """The routes of an invocation, in order (lazily: the rest of the fleet is only ranked
    once the preferred servers are exhausted).

    Preferred servers come first, in the order given; one that cannot take the request is
    yielded with its ``skip`` reason. Then the others by status (healthy, recovered, unknown,
    degraded, unreachable with an open retry window), leaving out those that cannot take it.
    Unknown names in ``preferred`` are ignored (the caller checks them).
    """
    kind = KIND_OF_METHOD.get(method) if target is not None else None
    seen: set[str] = set()
    for name in preferred:
        if name in seen:
            continue
        seen.add(name)
        state = states.get(name)
        if state is not None:
            yield Route(name, skip_reason(state, kind, target, now))
    # Read each state once: the fleet may change while the preferred servers are tried.
    rest = [(name, state) for name in list(states) if name not in seen and (state := states.get(name))]
    rest.sort(key=lambda pair: STATUS_RANK[pair[1].status])
    for name, state in rest:
        if skip_reason(state, kind, target, now) is None:
            yield Route(name)
