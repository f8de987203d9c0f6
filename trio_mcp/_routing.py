"""Which servers an invocation tries, in which order: a pure function of published states.

No clock, no I/O: ``now`` is an argument, and the input is the servers' published
:class:`~trio_mcp._state.ServerState` values in registration order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from ._arguments import argument_problem
from ._load import Load, less_loaded, two_choices
from ._state import Listing, ServerState, ServerStatus

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


class Route(NamedTuple):
    """One candidate: a server to try, or one passed over and why.

    ``skip``: a preferred server that cannot take the request now (retry window closed, does
    not offer the target). ``reject``: a server that offers the target but whose schema
    refuses the arguments (yielded for every such server, so the caller can tell the user).
    """

    server: str
    skip: str | None = None
    reject: str | None = None
    preferred: bool = False


def skip_reason(state: ServerState, kind: str | None, target: str | None, now: float) -> str | None:
    """Why a server cannot take the request now (``None``: it can)."""
    if state.status is ServerStatus.UNREACHABLE and not state.window_open(now):
        return "retry window closed"
    if kind is not None and target is not None:
        known = state.catalog.of(kind)
        if known is not None and target not in known:
            return f"does not offer {kind[:-1]} {target!r}"
    return None


def reject_reason(
    state: ServerState, kind: str | None, target: str | None, arguments: Mapping[str, Any] | None
) -> str | None:
    """Why the server's own description of ``target`` refuses ``arguments`` (``None``: it does
    not, or it is not known)."""
    if kind not in ("tools", "prompts") or target is None:
        return None
    known = state.catalog.of(kind)
    if known is None:
        return None
    if isinstance(known, Listing):  # compiled when it was listed
        check = known.checks.get(target)
        return check(arguments) if check is not None else None
    item = known.get(target)
    return argument_problem(kind, item, arguments) if item is not None else None


def rank_candidates(
    states: Mapping[str, ServerState],
    preferred: Sequence[str],
    method: str,
    target: str | None,
    now: float,
    arguments: Mapping[str, Any] | None = None,
    *,
    load: Callable[[str], Load] | None = None,
    draw: Callable[[], float] | None = None,
) -> Iterator[Route]:
    """The routes of an invocation, in order (lazily: the rest of the fleet is only ranked
    once the preferred servers are exhausted).

    Preferred servers come first, in the order given; one that cannot take the request is
    yielded with its ``skip`` reason. Then the others by status (healthy, recovered, unknown,
    degraded, unreachable with an open retry window), leaving out those that cannot take it.
    A server whose known schema of the target refuses ``arguments`` is yielded with its
    ``reject`` reason instead. Unknown names in ``preferred`` are ignored (the caller checks
    them).

    With ``load`` (a server's :class:`~trio_mcp._load.Load`) and ``draw`` (uniform numbers in
    ``[0, 1)``), the servers of the best status that can take the request are not taken in
    registration order: the less loaded of two of them drawn at random goes first, the others
    follow in registration order.

    Without preferred servers, :func:`first_choice` over :func:`equals_of` followed by
    :func:`routes_after` gives the same routes without ranking the whole fleet first.
    """
    kind = KIND_OF_METHOD.get(method) if target is not None else None
    refusal = _rejecter(kind, target, arguments)
    seen: set[str] = set()
    for name in preferred:
        if name in seen:
            continue
        seen.add(name)
        state = states.get(name)
        if state is not None:
            skip = skip_reason(state, kind, target, now)
            reject = refusal(state) if skip is None else None
            yield Route(name, skip, reject, preferred=True)
    if load is not None and draw is not None and len(states) > 1:
        yield from _balanced(states, seen, kind, target, now, refusal, load, draw)
        return
    # One pass in registration order, each state read once: a healthy server is yielded as soon
    # as it is read (the usual call goes no further), the others are kept for after, by status.
    later: list[tuple[int, str, ServerState]] = []
    for name in list(states):  # the fleet may change while a server is tried
        if name in seen or (state := states.get(name)) is None:
            continue
        rank = STATUS_RANK[state.status]
        if rank:
            later.append((rank, name, state))
        elif skip_reason(state, kind, target, now) is None:
            yield Route(name, None, refusal(state))
    later.sort(key=_rank_of)  # stable: registration order within a status
    for _, name, state in later:
        if skip_reason(state, kind, target, now) is None:
            yield Route(name, None, refusal(state))


def _accepted(state: ServerState) -> str | None:
    return None


def _rejecter(
    kind: str | None, target: str | None, arguments: Mapping[str, Any] | None
) -> Callable[[ServerState], str | None]:
    """:func:`reject_reason` for one request, asked of many servers: servers that describe the
    target with the same schema share its compiled check, which is asked once."""
    if kind not in ("tools", "prompts") or target is None:
        return _accepted
    verdicts: dict[Callable[[Mapping[str, Any] | None], str | None], str | None] = {}

    def reject(state: ServerState) -> str | None:
        known = state.catalog.of(kind)
        if not isinstance(known, Listing):
            return reject_reason(state, kind, target, arguments)
        check = known.checks.get(target)
        if check is None:
            return None
        try:
            return verdicts[check]
        except KeyError:
            verdict = verdicts[check] = check(arguments)
            return verdict

    return reject


def _rank_of(entry: tuple[int, str, ServerState]) -> int:
    return entry[0]


def _balanced(
    states: Mapping[str, ServerState],
    seen: set[str],
    kind: str | None,
    target: str | None,
    now: float,
    refusal: Callable[[ServerState], str | None],
    load: Callable[[str], Load],
    draw: Callable[[], float],
) -> Iterator[Route]:
    routes, equals = _ranked(states, seen, kind, target, now, refusal)
    if len(equals) >= 2:
        chosen = equals[_pick([routes[position].server for position in equals], load, draw)]
        routes.insert(0, routes.pop(chosen))
    yield from routes


def _pick(names: Sequence[str], load: Callable[[str], Load], draw: Callable[[], float]) -> int:
    """The position in ``names`` (two or more) of the less loaded of two drawn at random."""
    i, j = two_choices(len(names), draw(), draw())
    return i if less_loaded(load(names[i]), load(names[j])) else j


def first_choice(
    equals: Equals,
    arguments: Mapping[str, Any] | None,
    load: Callable[[str], Load] | None = None,
    draw: Callable[[], float] | None = None,
) -> str | None:
    """The first route of an invocation without preferred servers, when ``equals`` decide it:
    none of them refuses ``arguments``, so it is the first of them (with ``load`` and ``draw``:
    the less loaded of two drawn at random, as the balanced pass draws them). ``None`` when
    they do not decide it (there are none, or they refuse the arguments): the fleet is ranked.
    """
    names = equals.names
    if not names or (equals.check is not None and equals.check(arguments) is not None):
        return None
    if load is None or draw is None or len(names) < 2:
        return names[0]
    return names[_pick(names, load, draw)]


def routes_after(
    chosen: str,
    states: Mapping[str, ServerState],
    method: str,
    target: str | None,
    now: float,
    arguments: Mapping[str, Any] | None = None,
) -> Iterator[Route]:
    """The routes that follow ``chosen`` (the :func:`first_choice`) when no server is
    preferred: the fleet by status, in registration order within one, without ``chosen``."""
    kind = KIND_OF_METHOD.get(method) if target is not None else None
    routes, _ = _ranked(states, {chosen}, kind, target, now, _rejecter(kind, target, arguments))
    yield from routes


def _ranked(
    states: Mapping[str, ServerState],
    seen: set[str],
    kind: str | None,
    target: str | None,
    now: float,
    refusal: Callable[[ServerState], str | None],
) -> tuple[list[Route], list[int]]:
    """The routes by status (registration order within one), and the positions among them of
    the best status's servers that can take the request and do not refuse its arguments."""
    ranked = [
        (STATUS_RANK[state.status], name, state)
        for name in list(states)
        if name not in seen and (state := states.get(name)) is not None
    ]
    ranked.sort(key=_rank_of)
    routes: list[Route] = []
    equals: list[int] = []  # positions in routes of the best status's servers that can take it
    best: int | None = None
    for rank, name, state in ranked:
        if skip_reason(state, kind, target, now) is not None:
            continue
        route = Route(name, None, refusal(state))
        if route.reject is None and (best is None or rank == best):
            best = rank
            equals.append(len(routes))
        routes.append(route)
    return routes, equals


Check = Callable[[Mapping[str, Any] | None], str | None]


class Equals(NamedTuple):
    """The servers a balanced choice is made among, for one kind and target, while the fleet's
    statuses and catalogs stay as they were (see :func:`equals_of`)."""

    names: tuple[str, ...]
    """The best status's servers that can take the target, in registration order."""
    check: Check | None
    """The one argument check of those that describe the target (``None``: none does); the
    others refuse nothing."""


def equals_of(states: Mapping[str, ServerState], kind: str | None, target: str | None) -> Equals | None:
    """The servers of the best status that offer ``target`` (or whose catalog is not known),
    when the choice among them does not depend on the time nor on the arguments beyond one
    shared check; ``None`` when it does (the balanced pass then ranks the whole fleet): their
    best status is unreachable (a retry window opens with time), or they describe the target
    with different schemas.

    Depends only on each state's status and catalog.
    """
    best: int | None = None
    names: list[str] = []
    checks: set[Check] = set()
    checked_kind = kind in ("tools", "prompts")
    for name in list(states):
        state = states.get(name)
        if state is None:
            continue
        rank = STATUS_RANK[state.status]
        if best is not None and rank > best:
            continue
        known = state.catalog.of(kind) if kind is not None and target is not None else None
        if known is not None and target not in known:
            continue
        if best is None or rank < best:
            best, names, checks = rank, [], set()
        names.append(name)
        if not checked_kind or target is None or known is None:
            continue  # nothing known refuses any arguments
        if not isinstance(known, Listing):
            return None
        check = known.checks.get(target)
        if check is not None:
            checks.add(check)
    if best is None or best == STATUS_RANK[ServerStatus.UNREACHABLE]:
        return None
    if len(checks) > 1:
        return None
    return Equals(tuple(names), next(iter(checks), None))
