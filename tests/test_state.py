"""Table tests of the pure state machine in ``trio_mcp._state`` (no trio, no clock).

Every transition is checked against a whole expected ``ServerState`` built with
``dataclasses.replace``: the fields it changes, and that nothing else changes.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from trio_mcp import ConnectionState, Freshness, ServerStatus
from trio_mcp._failure import Failure
from trio_mcp._state import (
    CATALOG_KINDS,
    CapabilitySnapshot,
    Catalog,
    ServerState,
    freshness_of,
    next_status,
    on_catalog,
    on_closed,
    on_connect_demanded,
    on_connected,
    on_connecting,
    on_dropping,
    on_failure,
    on_invalidated,
    on_parked,
    on_rehandshake_demanded,
    on_rehandshaken,
    on_resume_demanded,
    on_resumed,
    on_stopped,
    on_success,
    probe_can_wait,
    snapshot_of,
    valid_step,
)

H, D, U, R, K = (
    ServerStatus.HEALTHY,
    ServerStatus.DEGRADED,
    ServerStatus.UNREACHABLE,
    ServerStatus.RECOVERED,
    ServerStatus.UNKNOWN,
)
IDLE, CONNECTING, READY, CLOSING, BACKOFF, CLOSED = (
    ConnectionState.IDLE,
    ConnectionState.CONNECTING,
    ConnectionState.READY,
    ConnectionState.CLOSING,
    ConnectionState.BACKOFF,
    ConnectionState.CLOSED,
)


@pytest.mark.parametrize(
    "current, success, failures, expected",
    [
        (K, True, 0, H),
        (H, True, 0, H),
        (H, False, 1, D),
        (D, False, 2, D),
        (D, False, 3, U),
        (U, False, 9, U),
        (D, True, 0, R),
        (U, True, 0, R),
        (R, True, 0, H),
        (R, False, 1, D),
        (R, False, 3, U),
        (K, False, 1, D),
        (K, False, 3, U),
    ],
)
def test_status_transitions(
    current: ServerStatus, success: bool, failures: int, expected: ServerStatus
) -> None:
    assert (
        next_status(current, success=success, consecutive_failures=failures, unreachable_threshold=3)
        is expected
    )


def test_auth_required_never_unreachable() -> None:
    status = next_status(
        D, success=False, consecutive_failures=50, unreachable_threshold=3, category="auth_required"
    )
    assert status is D


@pytest.mark.parametrize(
    "current, success, failures, threshold, category, expected",
    [
        # auth_required: degraded whatever the count (also from unreachable, and at threshold 1).
        (H, False, 1, 1, "auth_required", D),
        (U, False, 7, 3, "auth_required", D),
        (K, False, 3, 3, "auth_required", D),
        (R, False, 3, 3, "auth_required", D),
        # other categories count towards unreachable.
        (H, False, 1, 1, "timeout", U),
        (H, False, 1, 2, "connect_error", D),
        (H, False, 2, 2, "connect_error", U),
        # a success ignores the category.
        (D, True, 0, 3, "auth_required", R),
        (H, True, 0, 3, "timeout", H),
    ],
)
def test_status_transitions_with_category(
    current: ServerStatus,
    success: bool,
    failures: int,
    threshold: int,
    category: str,
    expected: ServerStatus,
) -> None:
    status = next_status(
        current,
        success=success,
        consecutive_failures=failures,
        unreachable_threshold=threshold,
        category=category,
    )
    assert status is expected


def test_freshness() -> None:
    assert freshness_of(None, 100, 10) is Freshness.UNKNOWN
    assert freshness_of(95, 100, 10) is Freshness.ACTIVE_RECENT
    assert freshness_of(90, 100, 10) is Freshness.ACTIVE_RECENT
    assert freshness_of(89.9, 100, 10) is Freshness.STALE


# -- fixtures of the transition tables ---------------------------------------------------------

CAPS = CapabilitySnapshot(
    protocol_version="2025-11-25",
    era="legacy",
    server_name="old",
    server_version="1.0",
    capabilities={"tools": {}},
    instructions=None,
    captured_at=2.0,
    captured_timestamp=1002.0,
)
NEW_CAPS = CapabilitySnapshot(
    protocol_version="2026-07-28",
    era="modern",
    server_name="new",
    server_version="2.0",
    capabilities={"tools": {"listChanged": True}},
    instructions="be nice",
    captured_at=50.0,
    captured_timestamp=1050.0,
)
TOOLS = {"echo": "echo-tool"}
NEW_CATALOG = Catalog(tools={"charge": "charge-tool"}, prompts={"review": "review-prompt"})

FRESH = ServerState()
"""The state a supervisor starts from."""

BUSY = ServerState(
    status=D,
    connection=READY,
    consecutive_failures=2,
    retry_count=3,
    last_error="probe failed",
    last_error_category="rpc_error",
    last_checked_at=40.0,
    retry_at=44.0,
    handshaken_at=2.0,
    capabilities=CAPS,
    session_id=4,
    session_opened_at=2.0,
    sessions_opened=4,
    last_activity_at=30.0,
    catalog=Catalog(tools=TOOLS),
    auto=True,
    connect_requests=6,
    rehandshake_requests=1,
    parked=True,
    resume_requests=3,
    version=17,
)
"""A state with every field set to something other than its default."""


def test_busy_differs_from_fresh_in_every_field() -> None:
    # Otherwise "nothing else changes" below would not be checked for that field.
    same = [f.name for f in fields(ServerState) if getattr(BUSY, f.name) == getattr(FRESH, f.name)]
    assert same == ["auto"]
    assert replace(BUSY, auto=False).auto is False


def expect(state: ServerState, **changes: Any) -> ServerState:
    """``state`` after one transition that changes exactly ``changes``."""
    return replace(state, version=state.version + 1, **changes)


TIMEOUT = Failure("timeout", "probe timed out after 2s", False)
REFUSED = Failure("connect_error", "connection refused", True)
AUTH = Failure("auth_required", "HTTP 401", True)

Transition = Callable[[ServerState], ServerState]

TRANSITIONS: list[tuple[str, Transition, ServerState, ServerState]] = [
    # on_connecting
    (
        "connecting from fresh",
        on_connecting,
        FRESH,
        expect(FRESH, connection=CONNECTING, sessions_opened=1),
    ),
    (
        "connecting from backoff",
        on_connecting,
        replace(BUSY, connection=BACKOFF),
        expect(replace(BUSY, connection=BACKOFF), connection=CONNECTING, sessions_opened=5),
    ),
    # on_connected
    (
        "connected, first time",
        lambda s: on_connected(s, now=3.0, capabilities=CAPS),
        replace(FRESH, connection=CONNECTING, sessions_opened=1, version=1),
        replace(
            FRESH,
            status=H,
            connection=READY,
            last_checked_at=3.0,
            last_activity_at=3.0,
            handshaken_at=3.0,
            capabilities=CAPS,
            session_id=1,
            session_opened_at=3.0,
            sessions_opened=1,
            version=2,
        ),
    ),
    (
        "connected after failures: recovered, backoff starts over, catalog kept",
        lambda s: on_connected(s, now=50.0, capabilities=NEW_CAPS),
        replace(BUSY, connection=CONNECTING, session_id=None, session_opened_at=None),
        expect(
            replace(BUSY, connection=CONNECTING, session_id=None, session_opened_at=None),
            status=R,
            connection=READY,
            consecutive_failures=0,
            retry_count=0,
            retry_at=None,
            last_checked_at=50.0,
            last_activity_at=50.0,
            handshaken_at=50.0,
            capabilities=NEW_CAPS,
            session_id=4,
            session_opened_at=50.0,
            parked=False,
        ),
    ),
    (
        "connected with a catalog: it replaces the known one",
        lambda s: on_connected(s, now=50.0, capabilities=NEW_CAPS, catalog=NEW_CATALOG),
        replace(BUSY, status=U, connection=CONNECTING),
        expect(
            replace(BUSY, status=U, connection=CONNECTING),
            status=R,
            connection=READY,
            consecutive_failures=0,
            retry_count=0,
            retry_at=None,
            last_checked_at=50.0,
            last_activity_at=50.0,
            handshaken_at=50.0,
            capabilities=NEW_CAPS,
            session_id=4,
            session_opened_at=50.0,
            catalog=NEW_CATALOG,
            parked=False,
        ),
    ),
    (
        "connected without a session: it starts parked",
        lambda s: on_connected(s, now=50.0, capabilities=NEW_CAPS, parked=True),
        replace(BUSY, connection=CONNECTING, session_id=None, session_opened_at=None, parked=False),
        expect(
            replace(BUSY, connection=CONNECTING, session_id=None, session_opened_at=None, parked=False),
            status=R,
            connection=READY,
            consecutive_failures=0,
            retry_count=0,
            retry_at=None,
            last_checked_at=50.0,
            last_activity_at=50.0,
            handshaken_at=50.0,
            capabilities=NEW_CAPS,
            session_id=4,
            session_opened_at=50.0,
            parked=True,
        ),
    ),
    (
        "connected while recovered: healthy",
        lambda s: on_connected(s, now=50.0, capabilities=CAPS),
        replace(BUSY, status=R, connection=CONNECTING, consecutive_failures=0),
        expect(
            replace(BUSY, status=R, connection=CONNECTING, consecutive_failures=0),
            status=H,
            connection=READY,
            retry_count=0,
            retry_at=None,
            last_checked_at=50.0,
            last_activity_at=50.0,
            handshaken_at=50.0,
            session_id=4,
            session_opened_at=50.0,
            parked=False,
        ),
    ),
    # on_rehandshaken: the session, its number and the connection stay
    (
        "re-handshaken while degraded",
        lambda s: on_rehandshaken(s, now=50.0, capabilities=NEW_CAPS),
        BUSY,
        expect(
            BUSY,
            status=R,
            consecutive_failures=0,
            retry_count=0,
            retry_at=None,
            last_checked_at=50.0,
            last_activity_at=50.0,
            handshaken_at=50.0,
            capabilities=NEW_CAPS,
        ),
    ),
    (
        "re-handshaken while healthy",
        lambda s: on_rehandshaken(s, now=50.0, capabilities=CAPS),
        replace(BUSY, status=H, consecutive_failures=0, retry_count=0, retry_at=None),
        expect(
            replace(BUSY, status=H, consecutive_failures=0, retry_count=0, retry_at=None),
            last_checked_at=50.0,
            last_activity_at=50.0,
            handshaken_at=50.0,
        ),
    ),
    # on_success: the backoff exponent (retry_count) is kept
    (
        "call succeeded while degraded",
        lambda s: on_success(s, now=50.0, activity=True),
        BUSY,
        expect(
            BUSY,
            status=R,
            consecutive_failures=0,
            retry_at=None,
            last_checked_at=50.0,
            last_activity_at=50.0,
        ),
    ),
    (
        "probe succeeded while degraded: no activity",
        lambda s: on_success(s, now=50.0, activity=False),
        BUSY,
        expect(BUSY, status=R, consecutive_failures=0, retry_at=None, last_checked_at=50.0),
    ),
    (
        "probe succeeded while unreachable",
        lambda s: on_success(s, now=50.0, activity=False),
        replace(BUSY, status=U),
        expect(
            replace(BUSY, status=U), status=R, consecutive_failures=0, retry_at=None, last_checked_at=50.0
        ),
    ),
    (
        "probe succeeded while recovered",
        lambda s: on_success(s, now=50.0, activity=False),
        replace(BUSY, status=R, consecutive_failures=0, retry_at=None),
        expect(
            replace(BUSY, status=R, consecutive_failures=0, retry_at=None), status=H, last_checked_at=50.0
        ),
    ),
    (
        "first probe of an unknown server",
        lambda s: on_success(s, now=5.0, activity=False),
        FRESH,
        expect(FRESH, status=H, last_checked_at=5.0),
    ),
    # on_failure
    (
        "probe failed, below the threshold",
        lambda s: on_failure(s, TIMEOUT, now=50.0, retry_delay=1.5, unreachable_threshold=5),
        BUSY,
        expect(
            BUSY,
            consecutive_failures=3,
            retry_count=4,
            last_error="probe timed out after 2s",
            last_error_category="timeout",
            last_checked_at=50.0,
            retry_at=51.5,
        ),
    ),
    (
        "probe failed, reaching the threshold",
        lambda s: on_failure(s, TIMEOUT, now=50.0, retry_delay=1.5, unreachable_threshold=3),
        BUSY,
        expect(
            BUSY,
            status=U,
            consecutive_failures=3,
            retry_count=4,
            last_error="probe timed out after 2s",
            last_error_category="timeout",
            last_checked_at=50.0,
            retry_at=51.5,
        ),
    ),
    (
        "auth required past the threshold: still degraded",
        lambda s: on_failure(s, AUTH, now=50.0, retry_delay=2.0, unreachable_threshold=1),
        BUSY,
        expect(
            BUSY,
            consecutive_failures=3,
            retry_count=4,
            last_error="HTTP 401",
            last_error_category="auth_required",
            last_checked_at=50.0,
            retry_at=52.0,
        ),
    ),
    (
        "first failure of a healthy server",
        lambda s: on_failure(s, TIMEOUT, now=9.0, retry_delay=1.0, unreachable_threshold=3),
        replace(FRESH, status=H, connection=READY, session_id=1, sessions_opened=1, version=2),
        expect(
            replace(FRESH, status=H, connection=READY, session_id=1, sessions_opened=1, version=2),
            status=D,
            consecutive_failures=1,
            retry_count=1,
            last_error="probe timed out after 2s",
            last_error_category="timeout",
            last_checked_at=9.0,
            retry_at=10.0,
        ),
    ),
    (
        "failure of a recovered server",
        lambda s: on_failure(s, TIMEOUT, now=50.0, retry_delay=0.0, unreachable_threshold=3),
        replace(BUSY, status=R, consecutive_failures=0, retry_at=None),
        expect(
            replace(BUSY, status=R, consecutive_failures=0, retry_at=None),
            status=D,
            consecutive_failures=1,
            retry_count=4,
            last_error="probe timed out after 2s",
            last_error_category="timeout",
            last_checked_at=50.0,
            retry_at=50.0,
        ),
    ),
    (
        "connect failed: backoff, and reconnect by itself",
        lambda s: on_failure(
            s, REFUSED, now=50.0, retry_delay=4.0, unreachable_threshold=3, connect_failed=True
        ),
        replace(BUSY, connection=CONNECTING, auto=False, session_id=None, session_opened_at=None),
        expect(
            replace(BUSY, connection=CONNECTING, auto=False, session_id=None, session_opened_at=None),
            status=U,
            connection=BACKOFF,
            auto=True,
            consecutive_failures=3,
            retry_count=4,
            last_error="connection refused",
            last_error_category="connect_error",
            last_checked_at=50.0,
            retry_at=54.0,
        ),
    ),
    (
        "first connect of a fresh server failed",
        lambda s: on_failure(
            s, REFUSED, now=0.0, retry_delay=1.0, unreachable_threshold=3, connect_failed=True
        ),
        replace(FRESH, connection=CONNECTING, sessions_opened=1, version=1),
        expect(
            replace(FRESH, connection=CONNECTING, sessions_opened=1, version=1),
            status=D,
            connection=BACKOFF,
            consecutive_failures=1,
            retry_count=1,
            last_error="connection refused",
            last_error_category="connect_error",
            last_checked_at=0.0,
            retry_at=1.0,
        ),
    ),
    # on_dropping / on_closed
    (
        "dropping",
        on_dropping,
        BUSY,
        expect(BUSY, connection=CLOSING, session_id=None, session_opened_at=None),
    ),
    (
        "closed, then idle (until used)",
        lambda s: on_closed(s, "idle"),
        replace(BUSY, connection=CLOSING),
        expect(replace(BUSY, connection=CLOSING), connection=IDLE, auto=False, session_id=None, parked=False),
    ),
    (
        "closed, then reconnect at once",
        lambda s: on_closed(s, "reconnect"),
        replace(BUSY, connection=CLOSING, auto=False),
        expect(
            replace(BUSY, connection=CLOSING, auto=False),
            connection=IDLE,
            session_id=None,
            connect_requests=7,
            parked=False,
        ),
    ),
    (
        "closed, then backoff",
        lambda s: on_closed(s, "backoff"),
        replace(BUSY, connection=CLOSING, auto=False),
        expect(
            replace(BUSY, connection=CLOSING, auto=False),
            connection=BACKOFF,
            auto=True,
            session_id=None,
            parked=False,
        ),
    ),
    (
        "closed after dropping: only the connection changes",
        lambda s: on_closed(s, "backoff"),
        on_dropping(BUSY),
        expect(on_dropping(BUSY), connection=BACKOFF, parked=False),
    ),
    # demands and other bookkeeping
    ("connect demanded", on_connect_demanded, BUSY, expect(BUSY, connect_requests=7)),
    (
        "invalidated while idle",
        on_invalidated,
        replace(BUSY, connection=IDLE),
        expect(replace(BUSY, connection=IDLE), auto=False),
    ),
    ("re-handshake demanded", on_rehandshake_demanded, BUSY, expect(BUSY, rehandshake_requests=2)),
    ("parked", on_parked, replace(BUSY, parked=False), expect(replace(BUSY, parked=False), parked=True)),
    ("resume demanded", on_resume_demanded, BUSY, expect(BUSY, resume_requests=4)),
    ("resumed", on_resumed, BUSY, expect(BUSY, parked=False)),
    (
        "tools listed",
        lambda s: on_catalog(s, "tools", {"lookup": "lookup-tool"}),
        BUSY,
        expect(BUSY, catalog=Catalog(tools={"lookup": "lookup-tool"})),
    ),
    (
        "resources listed",
        lambda s: on_catalog(s, "resources", {"docs://readme": "readme"}),
        BUSY,
        expect(BUSY, catalog=Catalog(tools=TOOLS, resources={"docs://readme": "readme"})),
    ),
    (
        "prompts listed (empty)",
        lambda s: on_catalog(s, "prompts", {}),
        BUSY,
        expect(BUSY, catalog=Catalog(tools=TOOLS, prompts={})),
    ),
    (
        "tools changed: forgotten",
        lambda s: on_catalog(s, "tools", None),
        BUSY,
        expect(BUSY, catalog=Catalog()),
    ),
    (
        "stopped while ready",
        on_stopped,
        BUSY,
        expect(BUSY, connection=CLOSED, session_id=None, session_opened_at=None, parked=False),
    ),
    ("stopped while idle", on_stopped, FRESH, expect(FRESH, connection=CLOSED)),
]


@pytest.mark.parametrize(
    "transition, before, after", [case[1:] for case in TRANSITIONS], ids=[case[0] for case in TRANSITIONS]
)
def test_transition(transition: Transition, before: ServerState, after: ServerState) -> None:
    snapshot = replace(before)
    result = transition(before)
    assert result == after
    assert type(result) is ServerState
    assert before == snapshot  # the input is untouched
    assert result.version == before.version + 1


REALISTIC = {
    "connecting from fresh",
    "connected, first time",
    "connected after failures: recovered, backoff starts over, catalog kept",
    "connected while recovered: healthy",
    "re-handshaken while degraded",
    "re-handshaken while healthy",
    "call succeeded while degraded",
    "probe succeeded while degraded: no activity",
    "probe succeeded while unreachable",
    "probe succeeded while recovered",
    "first probe of an unknown server",
    "probe failed, below the threshold",
    "probe failed, reaching the threshold",
    "auth required past the threshold: still degraded",
    "first failure of a healthy server",
    "failure of a recovered server",
    "connect failed: backoff, and reconnect by itself",
    "first connect of a fresh server failed",
    "dropping",
    "closed after dropping: only the connection changes",
    "connect demanded",
    "invalidated while idle",
    "re-handshake demanded",
    "parked",
    "resume demanded",
    "resumed",
    "tools listed",
    "tools changed: forgotten",
    "stopped while ready",
    "stopped while idle",
}


@pytest.mark.parametrize(
    "transition, before",
    [case[1:3] for case in TRANSITIONS if case[0] in REALISTIC],
    ids=[case[0] for case in TRANSITIONS if case[0] in REALISTIC],
)
def test_transitions_are_valid_steps(transition: Transition, before: ServerState) -> None:
    assert valid_step(before, transition(before)) is None


def test_a_whole_lifecycle_is_a_valid_path() -> None:
    steps: list[Transition] = [
        on_connect_demanded,
        on_connecting,
        lambda s: on_failure(
            s, REFUSED, now=0.0, retry_delay=1.0, unreachable_threshold=2, connect_failed=True
        ),
        on_invalidated,
        on_connect_demanded,
        on_connecting,
        lambda s: on_failure(
            s, REFUSED, now=1.0, retry_delay=2.0, unreachable_threshold=2, connect_failed=True
        ),
        on_connecting,
        lambda s: on_connected(s, now=3.0, capabilities=CAPS),
        lambda s: on_catalog(s, "tools", TOOLS),
        lambda s: on_success(s, now=4.0, activity=True),
        lambda s: on_failure(s, TIMEOUT, now=5.0, retry_delay=1.0, unreachable_threshold=2),
        on_rehandshake_demanded,
        lambda s: on_rehandshaken(s, now=6.0, capabilities=NEW_CAPS),
        on_dropping,
        lambda s: on_closed(s, "reconnect"),
        on_connecting,
        lambda s: on_connected(s, now=7.0, capabilities=CAPS),
        on_dropping,
        lambda s: on_closed(s, "idle"),
        on_connect_demanded,
        on_stopped,
    ]
    state = FRESH
    path = [(state.status, state.connection, state.auto)]
    for step in steps:
        new = step(state)
        assert valid_step(state, new) is None, (path, new)
        state = new
        path.append((state.status, state.connection, state.auto))
    assert path == [
        (K, IDLE, True),
        (K, IDLE, True),
        (K, CONNECTING, True),
        (D, BACKOFF, True),
        (D, BACKOFF, False),
        (D, BACKOFF, False),
        (D, CONNECTING, False),
        (U, BACKOFF, True),
        (U, CONNECTING, True),
        (R, READY, True),
        (R, READY, True),
        (H, READY, True),
        (D, READY, True),
        (D, READY, True),
        (R, READY, True),
        (R, CLOSING, True),
        (R, IDLE, True),
        (R, CONNECTING, True),
        (H, READY, True),
        (H, CLOSING, True),
        (H, IDLE, False),
        (H, IDLE, False),
        (H, CLOSED, False),
    ]
    assert (state.version, state.sessions_opened, state.session_id, state.connect_requests) == (
        22,
        4,
        None,
        4,
    )
    assert (state.rehandshake_requests, state.capabilities, state.catalog) == (1, CAPS, Catalog(tools=TOOLS))


def test_unknown_catalog_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown catalog kind 'gadgets'"):
        on_catalog(BUSY, "gadgets", {})


def test_catalog_of_and_with_kind() -> None:
    catalog = Catalog(tools=TOOLS)
    assert CATALOG_KINDS == ("tools", "resources", "prompts")
    assert [catalog.of(kind) for kind in CATALOG_KINDS] == [TOOLS, None, None]
    assert catalog.with_kind("prompts", {"p": 1}) == Catalog(tools=TOOLS, prompts={"p": 1})
    assert catalog.with_kind("tools", None) == Catalog()
    assert catalog == Catalog(tools=TOOLS)  # unchanged


@pytest.mark.parametrize(
    "retry_at, now, expected",
    [(None, 0.0, True), (5.0, 4.9, False), (5.0, 5.0, True), (5.0, 6.0, True)],
)
def test_window_open(retry_at: float | None, now: float, expected: bool) -> None:
    assert ServerState(retry_at=retry_at).window_open(now) is expected


# -- valid_step --------------------------------------------------------------------------------

CONNECTION_EDGES = {
    IDLE: {CONNECTING, CLOSED},
    BACKOFF: {CONNECTING, CLOSED},
    CONNECTING: {READY, BACKOFF, CLOSED},
    READY: {CLOSING, CLOSED},
    CLOSING: {IDLE, BACKOFF, CLOSED},
    CLOSED: set(),
}
STATUS_EDGES = {
    K: {H, D, U},
    H: {D, U},
    D: {U, R},
    U: {R, D},
    R: {H, D, U},
}


def connection_cases() -> Iterator[tuple[ConnectionState, ConnectionState, str | None]]:
    for before in ConnectionState:
        for after in ConnectionState:
            if before is after:
                continue
            legal = after in CONNECTION_EDGES[before]
            yield before, after, None if legal else f"connection {before} -> {after}"


@pytest.mark.parametrize("before, after, reason", list(connection_cases()))
def test_valid_step_connection_edges(
    before: ConnectionState, after: ConnectionState, reason: str | None
) -> None:
    previous = replace(BUSY, connection=before)
    assert valid_step(previous, replace(previous, connection=after, version=18)) == reason


def status_cases() -> Iterator[tuple[ServerStatus, ServerStatus, str | None]]:
    for before in ServerStatus:
        for after in ServerStatus:
            if before is after:
                continue
            legal = after in STATUS_EDGES[before]
            yield before, after, None if legal else f"status {before} -> {after}"


@pytest.mark.parametrize("before, after, reason", list(status_cases()))
def test_valid_step_status_edges(before: ServerStatus, after: ServerStatus, reason: str | None) -> None:
    previous = replace(BUSY, status=before)
    assert valid_step(previous, replace(previous, status=after, version=18)) == reason


@pytest.mark.parametrize(
    "previous, current, reason",
    [
        # legal: one changed field and the next version
        (BUSY, replace(BUSY, auto=False, version=18), None),
        (BUSY, replace(BUSY, consecutive_failures=0, version=18), None),
        (BUSY, replace(BUSY, consecutive_failures=3, version=18), None),
        (BUSY, replace(BUSY, consecutive_failures=2, retry_count=9, version=18), None),
        (BUSY, replace(BUSY, status=U, connection=CLOSING, consecutive_failures=3, version=18), None),
        # the version must go up by exactly one
        (BUSY, replace(BUSY, auto=False), "version 17 -> 17"),
        (BUSY, replace(BUSY, auto=False, version=19), "version 17 -> 19"),
        (BUSY, replace(BUSY, auto=False, version=16), "version 17 -> 16"),
        (BUSY, replace(BUSY, version=20), "version 17 -> 20"),
        # a step changes something
        (BUSY, replace(BUSY, version=18), "nothing changed"),
        (FRESH, replace(FRESH, version=1), "nothing changed"),
        # consecutive failures: reset, kept, or one more
        (BUSY, replace(BUSY, consecutive_failures=4, version=18), "consecutive_failures 2 -> 4"),
        (BUSY, replace(BUSY, consecutive_failures=1, version=18), "consecutive_failures 2 -> 1"),
        # the first violation is the one reported: version, nothing, connection, status, failures
        (
            BUSY,
            replace(BUSY, connection=CONNECTING, status=K, consecutive_failures=9, version=19),
            "version 17 -> 19",
        ),
        (
            BUSY,
            replace(BUSY, connection=CONNECTING, status=K, consecutive_failures=9, version=18),
            "connection ready -> connecting",
        ),
        (
            BUSY,
            replace(BUSY, connection=CLOSING, status=K, consecutive_failures=9, version=18),
            "status degraded -> unknown",
        ),
        (
            BUSY,
            replace(BUSY, connection=CLOSING, status=U, consecutive_failures=9, version=18),
            "consecutive_failures 2 -> 9",
        ),
        # once closed, nothing moves the connection
        (
            replace(BUSY, connection=CLOSED),
            replace(BUSY, connection=READY, version=18),
            "connection closed -> ready",
        ),
        (replace(BUSY, connection=CLOSED), replace(BUSY, connection=CLOSED, auto=False, version=18), None),
    ],
)
def test_valid_step(previous: ServerState, current: ServerState, reason: str | None) -> None:
    assert valid_step(previous, current) == reason


# -- snapshot_of --------------------------------------------------------------------------------


def test_snapshot_of_a_live_session() -> None:
    snap = snapshot_of(
        "s", BUSY, now=100.0, handshake_max_age=60.0, freshness_window=300.0, protocol_version="2025-11-25"
    )
    assert (snap.name, snap.status, snap.connection) == ("s", D, READY)
    assert (snap.consecutive_failures, snap.retry_count, snap.retry_at) == (2, 3, 44.0)
    assert (snap.last_error, snap.last_error_category, snap.last_checked_at) == (
        "probe failed",
        "rpc_error",
        40.0,
    )
    assert (snap.handshaken_at, snap.handshake_expires_at, snap.capabilities) == (2.0, 62.0, CAPS)
    assert snap.protocol_version == "2025-11-25"
    assert snap.handshake_stale(61.9) is False
    assert snap.handshake_stale(62.0) is True
    session = snap.session
    assert (session.server, session.active, session.session_id, session.handshaken) == ("s", True, 4, True)
    assert (session.protocol_version, session.opened_at, session.last_activity_at) == (
        "2025-11-25",
        2.0,
        30.0,
    )
    assert session.freshness is Freshness.ACTIVE_RECENT
    assert session.controls_available is True


def test_snapshot_of_no_session() -> None:
    state = on_stopped(BUSY)
    snap = snapshot_of(
        "s", state, now=1000.0, handshake_max_age=None, freshness_window=10.0, protocol_version="2025-11-25"
    )
    assert snap.connection is CLOSED
    assert snap.handshake_expires_at is None and snap.handshake_stale(10**9) is False
    session = snap.session
    assert (session.active, session.session_id, session.handshaken, session.protocol_version) == (
        False,
        None,
        False,
        None,
    )
    assert (session.opened_at, session.last_activity_at, session.freshness) == (None, 30.0, Freshness.STALE)
    fresh = snapshot_of(
        "f", FRESH, now=0.0, handshake_max_age=60.0, freshness_window=10.0, protocol_version=None
    )
    assert (fresh.status, fresh.connection, fresh.handshake_expires_at, fresh.capabilities) == (
        K,
        IDLE,
        None,
        None,
    )
    assert fresh.protocol_version is None
    assert fresh.session.freshness is Freshness.UNKNOWN


# -- purity: the state machine, routing and failover decisions do no I/O ------------------------

PACKAGE = Path(__file__).resolve().parent.parent / "trio_mcp"
PURE_MODULES = ("trio_mcp._routing", "trio_mcp._failover", "trio_mcp._state", "trio_mcp._failure")
IO_MODULES = ("trio", "anyio", "httpx", "httpx2", "socket", "subprocess", "mcp")
"""``mcp`` as a whole: importing any of it runs ``mcp/__init__``, which imports the SDK's
client, server and shared (transport) packages. ``mcp_types`` (plain data types) is fine."""


def is_io(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in IO_MODULES)


def module_path(module: str) -> Path | None:
    """The file of a ``trio_mcp`` module (``None``: not a module of the package)."""
    parts = module.split(".")[1:]
    if not parts:
        return None  # the package __init__: not followed (it imports everything)
    base = PACKAGE.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, *, at_import_time: bool) -> list[tuple[str, int]]:
    """The modules ``module`` imports, with line numbers.

    ``at_import_time``: only the imports that run when the module is imported (module and
    class level, ``try`` / ``if`` included, ``if TYPE_CHECKING:`` excluded); else every import
    statement in the file, in functions and ``TYPE_CHECKING`` blocks too.
    """
    path = module_path(module)
    assert path is not None, module
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []

    def record(node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
            return
        if node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            assert node.module is not None
            origin = node.module
        found.append((origin, node.lineno))
        for alias in node.names:  # `from pkg import submodule`
            if origin.startswith("trio_mcp") and module_path(f"{origin}.{alias.name}") is not None:
                found.append((f"{origin}.{alias.name}", node.lineno))

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                record(node)
            elif at_import_time and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            elif at_import_time and isinstance(node, ast.If) and is_type_checking(node.test):
                visit(node.orelse)
            else:
                children = [child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)]
                for field_name in ("handlers", "cases"):  # try/except and match bodies
                    for holder in getattr(node, field_name, []):
                        children.extend(holder.body)
                visit(children)

    visit(tree.body)
    return found


def import_closure(roots: tuple[str, ...]) -> dict[str, list[tuple[str, str, int]]]:
    """Every ``trio_mcp`` module the roots import at import time (transitively), mapped to the
    imports it makes there: ``(importer, imported, line)``."""
    seen: dict[str, list[tuple[str, str, int]]] = {}
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen[module] = [
            (module, imported, line) for imported, line in imports_of(module, at_import_time=True)
        ]
        for _, imported, _ in seen[module]:
            if imported.startswith("trio_mcp.") and module_path(imported) is not None:
                # Importing a.b.c runs a.b's __init__ first (trio_mcp's own is not followed).
                parts = imported.split(".")
                for depth in range(2, len(parts) + 1):
                    todo.append(".".join(parts[:depth]))
    return seen


def chain(closure: dict[str, list[tuple[str, str, int]]], root: str, target: str) -> list[str]:
    """How ``root`` reaches ``target`` (breadth first), for the failure message."""
    paths = {root: [root]}
    queue = [root]
    while queue:
        module = queue.pop(0)
        for _, imported, line in closure.get(module, []):
            if imported == target:
                return [*paths[module], f"{imported} (line {line} of {module})"]
            if imported in closure and imported not in paths:
                paths[imported] = [*paths[module], imported]
                queue.append(imported)
    return [root, "?", target]


def test_the_import_walker_sees_what_it_should() -> None:
    # A guard against a walker that finds nothing: these imports are known to exist.
    routing = [m for m, _ in imports_of("trio_mcp._routing", at_import_time=True)]
    assert "trio_mcp._state" in routing
    supervisor = [m for m, _ in imports_of("trio_mcp._supervisor", at_import_time=True)]
    assert "trio" in supervisor and any(m.startswith("mcp.") for m in supervisor)
    exceptions = [m for m, _ in imports_of("trio_mcp._exceptions", at_import_time=True)]
    assert "trio_mcp._attempt" not in exceptions  # only under TYPE_CHECKING
    assert "trio_mcp._attempt" in [m for m, _ in imports_of("trio_mcp._exceptions", at_import_time=False)]
    assert {"trio_mcp._state", "trio_mcp._failure"} <= set(import_closure(("trio_mcp._routing",)))


@pytest.mark.parametrize("root", PURE_MODULES)
def test_pure_modules_import_no_io_modules(root: str) -> None:
    """``root`` and every ``trio_mcp`` module it imports (transitively) import no I/O library
    when they are imported."""
    closure = import_closure((root,))
    offending = sorted(
        {imported for imports in closure.values() for _, imported, _ in imports if is_io(imported)}
    )
    assert offending == [], "\n".join(" -> ".join(chain(closure, root, target)) for target in offending)


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_modules_have_no_io_import_anywhere(module: str) -> None:
    """Not even a deferred import in a function, nor one for the type checker."""
    offending = [(name, line) for name, line in imports_of(module, at_import_time=False) if is_io(name)]
    assert offending == []


RUNTIME_IO_MODULES = ("trio", "anyio", "httpx", "httpx2", "mcp")
"""Not ``socket``: third-party data libraries (pydantic) may load it without doing I/O."""


def test_pure_modules_load_without_io_modules() -> None:
    """The same, at run time: load the modules in a fresh interpreter without running the
    package ``__init__`` (which imports everything), and look at ``sys.modules``."""
    script = (
        "import importlib, sys, types\n"
        f"package = types.ModuleType('trio_mcp'); package.__path__ = [{str(PACKAGE)!r}]\n"
        "sys.modules['trio_mcp'] = package\n"
        f"for name in {PURE_MODULES!r}: importlib.import_module(name)\n"
        f"io = {RUNTIME_IO_MODULES!r}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(io)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_import_cycles_not_even_under_type_checking() -> None:
    """Every import between ``trio_mcp`` modules (module level, in functions, and under
    ``TYPE_CHECKING``; subpackages count as modules) forms no cycle. The top-level package
    ``__init__`` only re-exports and is left out."""
    modules = sorted(
        "trio_mcp." + ".".join(parts)
        for path in PACKAGE.rglob("*.py")
        if (
            parts := path.relative_to(PACKAGE).with_suffix("").parts[:-1]
            if path.name == "__init__.py"
            else path.relative_to(PACKAGE).with_suffix("").parts
        )
    )
    graph: dict[str, set[str]] = {}
    for module in modules:
        targets: set[str] = set()
        for imported, _ in imports_of(module, at_import_time=False):
            if not imported.startswith("trio_mcp."):
                continue
            while imported not in modules and "." in imported[len("trio_mcp.") :]:
                imported = imported.rpartition(".")[0]  # a name imported from a module
            if imported in modules and imported != module:
                targets.add(imported)
        graph[module] = targets

    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in modules:
        if module not in state:
            visit(module, [module])
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


HEALTHY_USED = ServerState(status=ServerStatus.HEALTHY, last_activity_at=5.0)


@pytest.mark.parametrize(
    ("state", "used_at", "expected"),
    [
        (HEALTHY_USED, None, True),  # a call reported as an outcome since the last check
        (replace(HEALTHY_USED, last_activity_at=1.0), 5.0, True),  # a call stamped on the session
        (replace(HEALTHY_USED, last_activity_at=1.0), 2.0, False),  # nothing since the check at 2
        (replace(HEALTHY_USED, last_activity_at=2.0), 2.0, False),  # at the check is not after it
        (replace(HEALTHY_USED, status=ServerStatus.RECOVERED), 5.0, False),
        (replace(HEALTHY_USED, status=ServerStatus.DEGRADED, consecutive_failures=1), 5.0, False),
        (replace(HEALTHY_USED, consecutive_failures=1), 5.0, False),
    ],
)
def test_a_call_stands_in_for_a_probe_only_on_a_healthy_server(
    state: ServerState, used_at: float | None, expected: bool
) -> None:
    assert probe_can_wait(state, used_at=used_at, since=2.0) is expected
