"""The state store: locations and retention, secrets, the SQL stores (every store test runs on
SQLite and on PostgreSQL), the registry followed by two managers on one store, and the event
history's writer against a healthy, a locked and a hanging store.

Real clock: the stores work in worker threads (a virtual clock would jump while they run).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
from _fleet import policy

from trio_mcp import (
    ConnectionEvent,
    InvocationEvent,
    ManagerClosedError,
    ServerConfig,
    ServerExistsError,
    StdioTransport,
    open_manager,
)
from trio_mcp.store import (
    EventWriter,
    History,
    Registry,
    RegistrySnapshot,
    ReservedNameError,
    Retention,
    SecretBox,
    SecretKeyRequiredError,
    StateLocation,
    StoredRegistration,
    StoreError,
    StoreUnavailableError,
    SyncPlan,
    load_registry,
    open_store,
    parse_retention,
    parse_state,
    plan_sync,
)
from trio_mcp.store._secrets import join_secrets, split_secrets
from trio_mcp.testing import ScriptedServer, memory_server
from web.schemas import parse_registration

KEY = "Jm3BNJ55nvZCMdx8ZgzXBC2Kq3lnl-iEq3fLBiHX9pE="
OTHER_KEY = "x6NaUsr4GVJ9aBpS8xkWg0UZ-fRFe2GBqJ0cIFkEmqE="
QUIET = policy(health_interval=3600.0)


class Records(logging.Handler):
    """The records of the ``trio_mcp.store`` logger (attached directly: another test may have
    configured the ``trio_mcp`` logger not to propagate)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]


@pytest.fixture
def store_log() -> Iterator[Records]:
    logger = logging.getLogger("trio_mcp.store")
    handler = Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new store: a SQLite file, or a database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


# -- where, and how long -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "path", "busy"),
    [
        ("sqlite:///var/lib/trio-mcp/state.db", "sqlite", "/var/lib/trio-mcp/state.db", 5.0),
        ("sqlite:////var/lib/trio-mcp/state.db", "sqlite", "/var/lib/trio-mcp/state.db", 5.0),
        ("sqlite:state.db?timeout=0.5", "sqlite", "state.db", 0.5),
        ("./data/state.db", "sqlite", "data/state.db", 5.0),
        ("", "sqlite", "/xdg/trio-mcp/state.db", 5.0),
        ("postgresql://trio@db.internal:5432/trio", "postgresql", None, 5.0),
        ("postgres://trio@db/trio", "postgresql", None, 5.0),
    ],
)
def test_state_locations(text: str, kind: str, path: str | None, busy: float) -> None:
    location = parse_state(text, {"XDG_STATE_HOME": "/xdg"})
    assert location is not None
    assert (location.kind, location.busy_timeout) == (kind, busy)
    assert location.path == (Path(path) if path is not None else None)


def test_state_location_errors_and_display() -> None:
    assert parse_state("memory") is None
    for text, complaint in [
        ("mysql://db/x", "--state takes memory, sqlite:///FILE or postgresql://..., got 'mysql://db/x'"),
        ("sqlite:///", "a SQLite URL names a file"),
        ("sqlite:///x.db?journal=off", "unknown SQLite option 'journal' (known: timeout)"),
        ("sqlite:///x.db?timeout=soon", "timeout must be a number of seconds >= 0, got 'soon'"),
        ("postgresql:db", "a PostgreSQL URL starts with postgresql://"),
    ]:
        with pytest.raises(ValueError) as info:
            parse_state(text)
        assert str(info.value).startswith(complaint)
    secret = StateLocation(kind="postgresql", url="postgresql://trio:hunter2@db:5432/trio?sslmode=require")
    assert str(secret) == "postgresql://trio:***@db:5432/trio"
    assert str(StateLocation(kind="sqlite", path=Path("/srv/state.db"))) == "sqlite:///srv/state.db"


@pytest.mark.parametrize(
    ("text", "retention", "shown"),
    [
        ("7d", Retention(max_age=604800.0), "1w"),
        ("100000", Retention(max_count=100_000), "100000"),
        ("12h, 500", Retention(max_age=43200.0, max_count=500), "12h,500"),
        ("90s", Retention(max_age=90.0), "90s"),
        ("forever", Retention(), "forever"),
    ],
)
def test_retention(text: str, retention: Retention, shown: str) -> None:
    assert parse_retention(text) == retention
    assert str(retention) == shown


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("0", "a count must be >= 1, got '0'"),
        ("0d", "an age must be > 0, got '0d'"),
        ("7d,8d", "give one age, got '7d,8d'"),
        ("5,6", "give one count, got '5,6'"),
        ("a week", "expected an age (7d, 12h, 30m, 90s), a count (100000), both (7d,100000) or 'forever'"),
    ],
)
def test_retention_errors(text: str, complaint: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_retention(text)
    assert str(info.value).startswith(complaint)


# -- secrets -------------------------------------------------------------------------------------------


def test_secrets_are_split_off_sealed_and_opened_only_with_the_key() -> None:
    body = {
        "name": "docs",
        "url": "https://docs.example/mcp",
        "headers": {"X-Api-Key": "s3cret-header"},
        "auth": {"type": "bearer", "token": "s3cret-token"},
        "env": {},
        "callTimeout": 3,
    }
    public, secret = split_secrets(body)
    assert public == {"name": "docs", "url": "https://docs.example/mcp", "env": {}, "callTimeout": 3}
    assert secret == {
        "headers": {"X-Api-Key": "s3cret-header"},
        "auth": {"type": "bearer", "token": "s3cret-token"},
    }
    box = SecretBox(KEY)
    token = box.seal(secret)
    assert "s3cret" not in token
    assert join_secrets(public, box.open(token)) == body
    # Rotation: the new key first, the old one after it.
    assert SecretBox(f"{OTHER_KEY},{KEY}").open(token) == secret
    with pytest.raises(StoreError, match="cannot be decrypted with TRIO_MCP_SECRET_KEY"):
        SecretBox(OTHER_KEY).open(token)
    with pytest.raises(StoreError, match=r"^TRIO_MCP_SECRET_KEY is not a Fernet key"):
        SecretBox("not-a-key")
    with pytest.raises(StoreError, match=r"^key 2 of TRIO_MCP_SECRET_KEY is not a Fernet key"):
        SecretBox(f"{KEY},nope")
    assert SecretBox.from_environ({}) is None
    assert SecretBox.from_environ({"TRIO_MCP_SECRET_KEY": " "}) is None


# -- following the store: a pure plan -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("running", "stored", "reserved", "plan"),
    [
        ({}, {"a": 1}, set(), SyncPlan(add=("a",))),
        ({"a": 1}, {}, set(), SyncPlan(remove=("a",))),
        ({"a": 1}, {"a": 4}, set(), SyncPlan(replace=("a",))),
        ({"a": 1, "b": 2}, {"a": 1, "b": 2}, set(), SyncPlan()),
        # The config file's names are its own: neither started, stopped nor restarted.
        ({"a": 1}, {"a": 4, "f": 5}, {"a", "f"}, SyncPlan()),
        ({"f": 1}, {}, {"f"}, SyncPlan()),
    ],
)
def test_plan_sync(
    running: dict[str, int], stored: dict[str, int], reserved: set[str], plan: SyncPlan
) -> None:
    assert plan_sync(running, stored, reserved) == plan


# -- the stores ----------------------------------------------------------------------------------------


async def test_registrations_are_committed_and_versioned(location: str) -> None:
    async with open_store(location) as store:
        assert await store.registrations() == RegistrySnapshot(version=0, registrations=())
        first = await store.add_registration("a", {"name": "a", "url": "http://h/mcp"}, None)
        second = await store.add_registration("b", {"name": "b", "command": "x"}, "sealed")
        assert (first, second) == (1, 2)
        with pytest.raises(ServerExistsError):
            await store.add_registration("a", {"name": "a", "url": "http://other/mcp"}, None)
        assert await store.registry_version() == 2  # the refused one changed nothing
        assert await store.remove_registration("b", revision=1) is False
        assert await store.remove_registration("b", revision=2) is True
        assert await store.remove_registration("b") is False
    async with open_store(location) as store:
        assert await store.registrations() == RegistrySnapshot(
            version=3,
            registrations=(
                StoredRegistration(name="a", revision=1, body={"name": "a", "url": "http://h/mcp"}),
            ),
        )


async def test_migrations_run_once_and_a_newer_schema_is_refused(location: str) -> None:
    async with open_store(location):
        pass
    async with open_store(location) as store:
        versions = await store._transact(  # type: ignore[attr-defined]
            lambda tx: tx.execute("SELECT version, description FROM trio_mcp_schema"), doing="test"
        )
        assert versions == [(1, "registry and event history")]
        await store._transact(  # type: ignore[attr-defined]
            lambda tx: tx.execute("INSERT INTO trio_mcp_schema VALUES (99, 'from the future', 0)"),
            doing="test",
        )
    with pytest.raises(StoreError) as info:
        async with open_store(location):
            pass
    assert "its schema is version 99, newer than this trio-mcp knows (1): upgrade trio-mcp" in str(info.value)


def _connection_event(seq: int, server: str, correlation_id: str | None) -> ConnectionEvent:
    return ConnectionEvent(
        seq=seq,
        server=server,
        from_status="unknown",
        to_status="healthy",
        reason=f"reason {seq}",
        category=None,
        correlation_id=correlation_id,
        at=seq + 0.25,
        timestamp=1000.0 + seq,
    )


def _invocation_event(seq: int, method: str, request_id: str) -> InvocationEvent:
    return InvocationEvent(
        seq=seq,
        kind="invoke_failure" if seq % 2 else "invoke_start",
        server="a",
        method=method,
        request_id=request_id,
        target="echo",
        error="boom" if seq % 2 else None,
        category="transport" if seq % 2 else None,
        at=seq + 0.5,
        timestamp=1000.0 + seq,
    )


async def test_events_are_filtered_newest_last_and_kept_by_count_and_age(location: str) -> None:
    connection = [_connection_event(i, "a" if i % 2 else "b", f"c{i % 3}") for i in range(1, 11)]
    invocation = [
        _invocation_event(i, "tools/call" if i < 4 else "resources/read", f"r{i % 2}") for i in range(1, 7)
    ]
    async with open_store(location) as store:
        await store.write_events("replica-1", connection[:5], invocation)
        await store.write_events("replica-2", connection[5:], [])
        got = await store.connection_events(server="a", correlation_id=None, limit=3)
        # seq 5, 7, 9: the newest 3 of a, each with the replica that wrote it.
        assert got == [
            replace(connection[4], replica="replica-1"),
            replace(connection[6], replica="replica-2"),
            replace(connection[8], replica="replica-2"),
        ]
        by_correlation = await store.connection_events(server=None, correlation_id="c0", limit=100)
        assert [e.seq for e in by_correlation] == [3, 6, 9]
        assert await store.connection_events(server=None, correlation_id=None, limit=0) == []
        calls = await store.invocation_events(server="a", method="tools/call", request_id="r1", limit=10)
        assert calls == [
            replace(invocation[0], replica="replica-1"),
            replace(invocation[2], replica="replica-1"),
        ]
        assert await store.has_events("b") is True
        assert await store.has_events("nobody") is False
        # The newest 4 per log stay: 6 connection and 2 invocation events go.
        assert await store.prune_events(Retention(max_count=4), now=0.0) == 8
        remaining = await store.connection_events(server=None, correlation_id=None, limit=100)
        assert [e.seq for e in remaining] == [7, 8, 9, 10]
        # Older than 2.5 s at 1010.0: connection 7 (at 1007) and every invocation event (1003-1006).
        assert await store.prune_events(Retention(max_age=2.5), now=1010.0) == 5
        remaining = await store.connection_events(server=None, correlation_id=None, limit=100)
        assert [e.seq for e in remaining] == [8, 9, 10]
        assert await store.invocation_events(server=None, method=None, request_id=None, limit=100) == []


# -- SQLite --------------------------------------------------------------------------------------------


async def test_sqlite_creates_a_private_file_and_refuses_a_corrupt_one(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.db"
    async with open_store(f"sqlite:///{path}"):
        pass
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database\n" * 200)
    with pytest.raises(StoreError) as info:
        async with open_store(f"sqlite:///{corrupt}"):
            pass
    assert str(info.value) == (
        f"cannot open the state file {corrupt}: "
        "it is not a SQLite database (corrupt, or another kind of file)"
    )


def _lock(path: Path) -> sqlite3.Connection:
    """Another process's write lock on the database at ``path``."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


async def test_a_locked_sqlite_file_is_unavailable_for_writes_not_reads(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with open_store(f"sqlite:///{path}?timeout=0.1") as store:
        await store.add_registration("a", {"name": "a", "url": "http://h/mcp"}, None)
        lock = _lock(path)
        try:
            with trio.fail_after(5):
                with pytest.raises(StoreUnavailableError) as info:
                    await store.add_registration("b", {"name": "b", "url": "http://h/mcp"}, None)
                assert str(info.value) == (
                    "the state store is unavailable (storing the registration of 'b': it was not made): "
                    "database is locked"
                )
                assert [r.name for r in (await store.registrations()).registrations] == ["a"]
        finally:
            lock.close()
        assert await store.add_registration("b", {"name": "b", "url": "http://h/mcp"}, None) == 2


# -- the registry --------------------------------------------------------------------------------------


def _remote(name: str, url: str = "http://127.0.0.1:9/mcp", **extra: Any) -> dict[str, Any]:
    return {"name": name, "url": url, "connectOnStart": False, **extra}


async def test_two_managers_on_one_store_follow_each_other(location: str) -> None:
    local = memory_server(ScriptedServer("local"), policy=QUIET)
    async with (
        open_store(location) as store_a,
        open_store(location) as store_b,
        open_manager([local]) as a,
        open_manager() as b,
        trio.open_nursery() as nursery,
    ):

        def registry(manager: Any, store: Any, reserved: set[str]) -> Registry:
            return Registry(
                manager,
                store,
                parse=parse_registration,
                box=SecretBox(KEY),
                reserved=reserved,
                running={},
                stored={},
                version=0,
            )

        on_a, on_b = registry(a, store_a, {"local"}), registry(b, store_b, set())
        with pytest.raises(ReservedNameError):
            await on_a.register(parse_registration(_remote("local")), _remote("local"))
        body = _remote("remote", headers={"Authorization": "Bearer s3cret"})
        await on_a.register(parse_registration(body), body)
        with pytest.raises(ServerExistsError):
            await on_a.register(parse_registration(body), body)
        assert "remote" in a.names
        # B, which has not followed yet, learns of it from the store.
        with pytest.raises(ServerExistsError):
            await on_b.register(parse_registration(body), body)
        assert await on_b.sync() == SyncPlan(add=("remote",))
        assert b.config("remote") == a.config("remote")  # secrets decrypted
        await on_b.unregister("remote")
        assert "remote" not in b.names
        assert await on_a.sync() == SyncPlan(remove=("remote",))
        assert a.names == ["local"]
        # Registered again, differently, on B: A restarts it with the new settings.
        await on_a.register(parse_registration(body), body)
        await on_b.sync()
        await on_b.unregister("remote")
        changed = _remote("remote", url="http://127.0.0.1:9/other")
        await on_b.register(parse_registration(changed), changed)
        assert await on_a.sync() == SyncPlan(replace=("remote",))
        assert a.config("remote").transport == b.config("remote").transport
        # Followed by itself: store B's poll finds A's change.
        store_b.poll_interval = 0.05
        await nursery.start(on_b.run)
        later = _remote("later")
        await on_a.register(parse_registration(later), later)
        with trio.fail_after(5):
            while "later" not in b.names:  # noqa: ASYNC110 (the registry works in the background)
                await trio.sleep(0.02)
        # A config server is only stopped, with nothing stored.
        await on_a.unregister("local")
        assert sorted(r.name for r in (await store_a.registrations()).registrations) == ["later", "remote"]
        nursery.cancel_scope.cancel()


async def test_registrations_that_cannot_be_stored_are_not_made(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with open_store(f"sqlite:///{path}?timeout=0.1") as store:
        async with open_manager() as manager:
            registry = Registry(
                manager,
                store,
                parse=parse_registration,
                box=None,
                reserved=set(),
                running={},
                stored={},
                version=0,
            )
            secret = _remote("secret", auth={"type": "bearer", "token": "t0ken"}, headers={"X": "y"})
            with pytest.raises(SecretKeyRequiredError) as refused:
                await registry.register(parse_registration(secret), secret)
            assert refused.value.fields == ("headers", "auth")
            lock = _lock(path)
            try:
                with pytest.raises(StoreUnavailableError):
                    await registry.register(parse_registration(_remote("late")), _remote("late"))
            finally:
                lock.close()
            assert manager.names == []
            kept = _remote("kept")
            await registry.register(parse_registration(kept), kept)
            lock = _lock(path)
            try:
                with pytest.raises(StoreUnavailableError):
                    await registry.unregister("kept")
            finally:
                lock.close()
            assert manager.names == ["kept"]
        # The manager is closed: the server cannot start, so the registration is taken back.
        with pytest.raises(ManagerClosedError):
            await registry.register(parse_registration(_remote("closed")), _remote("closed"))
        assert [r.name for r in (await store.registrations()).registrations] == ["kept"]


async def test_unusable_stored_registrations_are_skipped_and_said(tmp_path: Path, store_log: Records) -> None:
    async with open_store(f"sqlite:///{tmp_path}/state.db") as store:
        box = SecretBox(KEY)
        public, secret = split_secrets(_remote("sealed", headers={"X": "y"}))
        await store.add_registration("sealed", public, box.seal(secret))
        await store.add_registration("odd", {"name": "odd", "url": "ftp://nope"}, None)
        await store.add_registration("fine", _remote("fine"), None)
        loaded = await load_registry(store, parse_registration, SecretBox(OTHER_KEY))
        assert list(loaded.configs) == ["fine"]
        assert loaded.stored == {"sealed": 1, "odd": 2, "fine": 3}
        assert store_log.messages == [
            "registry: the stored registration of sealed cannot be used, skipped: its secrets cannot be "
            "decrypted with TRIO_MCP_SECRET_KEY (a different key encrypted them)",
            "registry: the stored registration of odd cannot be used, skipped: must be an http:// or "
            "https:// URL with a host name or IP address, got 'ftp://nope'",
        ]
        assert list((await load_registry(store, parse_registration, box)).configs) == ["sealed", "fine"]


async def test_following_skips_what_cannot_run_here_and_says_it_once(
    tmp_path: Path, store_log: Records
) -> None:
    clash = memory_server(ScriptedServer("clash"), policy=QUIET)
    async with open_store(f"sqlite:///{tmp_path}/state.db") as store, open_manager([clash]) as manager:
        public, secret = split_secrets(_remote("sealed", headers={"X": "y"}))
        await store.add_registration("sealed", public, SecretBox(OTHER_KEY).seal(secret))
        await store.add_registration("clash", _remote("clash"), None)
        registry = Registry(
            manager,
            store,
            parse=parse_registration,
            box=SecretBox(KEY),
            reserved=set(),
            running={},
            stored={},
            version=0,
        )
        assert await registry.sync() == SyncPlan(add=("sealed", "clash"))
        assert await registry.sync() == SyncPlan(add=("sealed", "clash"))
        assert manager.names == ["clash"]
        assert registry.running == {}
        assert store_log.messages == [
            "registry: the stored registration of sealed cannot be used, skipped: its secrets cannot be "
            "decrypted with TRIO_MCP_SECRET_KEY (a different key encrypted them)",
            "registry: clash is stored but a server of that name runs here: skipped",
        ]
        # Deleting it over the API deletes the stored registration and stops the server.
        await registry.unregister("clash")
        assert manager.names == []
        assert [r.name for r in (await store.registrations()).registrations] == ["sealed"]


# -- the event history ---------------------------------------------------------------------------------


async def test_events_are_written_in_batches_by_one_writer(tmp_path: Path) -> None:
    server = ScriptedServer("a")
    async with (
        open_store(f"sqlite:///{tmp_path}/state.db") as store,
        open_manager([memory_server(server, policy=QUIET)]) as manager,
        trio.open_nursery() as nursery,
    ):
        await manager.acquire("a")  # connected before the writer starts: its events are a backlog
        batches: list[int] = []
        write = store.write_events

        async def counted(replica: str, connection: Any, invocation: Any) -> None:
            batches.append(len(connection) + len(invocation))
            await write(replica, connection, invocation)

        store.write_events = counted  # type: ignore[method-assign]
        writer = EventWriter(store, manager.stream, replica="r1", retention=None, batch_interval=0.5)
        await nursery.start(writer.run)
        with trio.fail_after(10):
            for i in range(50):
                await manager.call_tool("echo", {"text": str(i)})
            await writer.flush()
        history = History(store, writer)
        assert await history.invocation_events(manager, limit=1000) == [
            replace(e, replica="r1") for e in manager.invocation_log
        ]
        assert await history.connection_events(manager, limit=1000) == [
            replace(e, replica="r1") for e in manager.connection_log
        ]
        stats = writer.statistics()
        assert stats.written == sum(batches) == len(manager.invocation_log) + len(manager.connection_log)
        assert stats.dropped == 0
        assert len(batches) <= 4  # 100+ events in a few transactions, not one each
        nursery.cancel_scope.cancel()


async def test_a_locked_store_drops_events_and_invocations_carry_on(
    tmp_path: Path, store_log: Records
) -> None:
    path = tmp_path / "state.db"
    async with (
        open_store(f"sqlite:///{path}?timeout=0.2") as store,
        open_manager([memory_server(ScriptedServer("a"), policy=QUIET)]) as manager,
        trio.open_nursery() as nursery,
    ):
        writer = EventWriter(store, manager.stream, replica="r1", retention=None, batch_interval=0.01)
        await nursery.start(writer.run)
        await manager.acquire("a")
        with trio.fail_after(5):
            await writer.flush()
        lock = _lock(path)
        try:
            with trio.fail_after(5):
                for i in range(20):
                    await manager.call_tool("echo", {"text": str(i)})
                await writer.flush()
            stats = writer.statistics()
            assert stats.available is False
            assert stats.last_error == "database is locked"
            assert stats.dropped_unavailable > 0
            assert store_log.messages[0] == (
                "event history: the store is unavailable (database is locked): "
                "events are dropped until it is back"
            )
        finally:
            lock.close()
        dropped = writer.statistics().dropped_unavailable
        with trio.fail_after(10):
            while not writer.statistics().available:
                await manager.call_tool("echo", {"text": "again"})
                await writer.flush()
                await trio.sleep(0.05)
        dropped = writer.statistics().dropped_unavailable
        assert store_log.messages[-1] == (
            f"event history: the store is back; {dropped} events were dropped while it was unavailable"
        )
        nursery.cancel_scope.cancel()


async def test_a_hanging_store_never_holds_up_an_invocation(tmp_path: Path, store_log: Records) -> None:
    async with (
        open_store(f"sqlite:///{tmp_path}/state.db") as store,
        open_manager([memory_server(ScriptedServer("a"), policy=QUIET)]) as manager,
        trio.open_nursery() as nursery,
    ):
        await manager.acquire("a")
        gate, writing = trio.Event(), trio.Event()
        write = store.write_events

        async def hanging(replica: str, connection: Any, invocation: Any) -> None:
            writing.set()
            await gate.wait()
            await write(replica, connection, invocation)

        store.write_events = hanging  # type: ignore[method-assign]
        writer = EventWriter(
            store, manager.stream, replica="r1", retention=None, buffer=5, batch_interval=0.01
        )
        await nursery.start(writer.run)
        with trio.fail_after(5):
            await manager.call_tool("echo", {"text": "first"})
            await writing.wait()  # the writer is stuck in the store with the first batch
            # Every call ends while the store has not finished that write.
            for i in range(20):
                await manager.call_tool("echo", {"text": str(i)})
        assert not gate.is_set()
        stats = writer.statistics()
        assert stats.buffered == 5
        assert stats.dropped_buffer_full > 0
        gate.set()
        with trio.fail_after(5):
            await writer.flush()
        stats = writer.statistics()
        assert stats.dropped_unavailable == 0
        assert store_log.messages == [
            f"event history: {stats.dropped_buffer_full} events dropped: the buffer of 5 was full "
            "(the store is slower than the events)"
        ]
        nursery.cancel_scope.cancel()


async def test_the_writer_keeps_the_retention(tmp_path: Path) -> None:
    async with (
        open_store(f"sqlite:///{tmp_path}/state.db") as store,
        open_manager([memory_server(ScriptedServer("a"), policy=QUIET)]) as manager,
        trio.open_nursery() as nursery,
    ):
        writer = EventWriter(
            store, manager.stream, replica="r1", retention=Retention(max_count=3), prune_interval=0.05
        )
        await nursery.start(writer.run)
        with trio.fail_after(5):
            for i in range(10):
                await manager.call_tool("echo", {"text": str(i)})
            await writer.flush()
            kept: list[InvocationEvent] = []
            while len(kept) != 3:
                await trio.sleep(0.05)
                kept = await store.invocation_events(server=None, method=None, request_id=None, limit=100)
        assert kept == [replace(e, replica="r1") for e in list(manager.invocation_log)[-3:]]
        nursery.cancel_scope.cancel()


async def test_reads_fall_back_to_the_log_when_the_store_cannot_answer(
    tmp_path: Path, store_log: Records
) -> None:
    async with (
        open_store(f"sqlite:///{tmp_path}/state.db") as store,
        open_manager([memory_server(ScriptedServer("a"), policy=QUIET)]) as manager,
        trio.open_nursery() as nursery,
    ):
        writer = EventWriter(store, manager.stream, replica="r1", retention=None)
        await nursery.start(writer.run)
        history = History(store, writer)
        await manager.call_tool("echo", {"text": "x"}, request_id="one")
        with pytest.raises(LookupError):
            await history.connection_events(manager, server="nobody")
        assert await history.invocation_events(manager, request_id="one", correlation_id="two") == []
        nursery.cancel_scope.cancel()
        await store.aclose()
        events = await history.invocation_events(manager, correlation_id="one")
        assert events == manager.invocation_events(request_id="one")
        assert len(events) == 2
        assert store_log.messages[-1] == (
            "event history: the state store is unavailable (reading events): it is closed; "
            "answering from this process's log"
        )


async def test_closing_leaves_no_connection_or_thread(location: str, request: pytest.FixtureRequest) -> None:
    before = {t.name for t in threading.enumerate()}
    async with open_store(location) as store:
        store.poll_interval = 0.05
        await store.add_registration("a", {"name": "a", "url": "http://h/mcp"}, None)
        for _ in range(3):  # PostgreSQL: connects its listening connection, then waits on it
            await store.wait_registry_changed()
        assert await store.registry_version() == 1
    assert {t.name for t in threading.enumerate()} - before <= {"Trio thread 0", "Trio thread 1"}
    if store.kind == "sqlite":
        assert [
            target for target in await trio.Path("/proc/self/fd").iterdir() if "state.db" in _target(target)
        ] == []
    else:
        server = request.getfixturevalue("postgres")
        # A backend leaves pg_stat_activity a moment after its client hung up.
        for _ in range(50):
            if await trio.to_thread.run_sync(server.sessions) == 0:
                break
            await trio.sleep(0.1)
        assert await trio.to_thread.run_sync(server.sessions) == 0


def _target(fd: trio.Path) -> str:
    try:
        return os.readlink(fd)
    except OSError:
        return ""


async def test_a_replica_runs_only_what_its_own_rules_allow(tmp_path: Path, store_log: Records) -> None:
    """Each replica applies its own flags to what another one stored (a stdio registration made
    where stdio is allowed does not run where it is not)."""

    async def no_stdio(config: ServerConfig) -> ServerConfig:
        if isinstance(config.transport, StdioTransport):
            raise PermissionError("stdio servers are not allowed here")
        return config

    stdio = {"name": "local", "command": sys.executable, "args": ["-c", "pass"]}
    async with open_store(f"sqlite:///{tmp_path}/state.db") as store:
        await store.add_registration("remote", _remote("remote"), None)
        await store.add_registration("local", stdio, None)
        loaded = await load_registry(store, parse_registration, None, no_stdio)
        assert list(loaded.configs) == ["remote"]
        assert set(loaded.stored) == {"remote", "local"}  # still stored: another replica runs it
        async with open_manager([]) as manager:
            registry = Registry(
                manager,
                store,
                parse=parse_registration,
                box=None,
                reserved=set(),
                running={},
                stored={},
                version=0,
                admit=no_stdio,
            )
            assert await registry.sync() == SyncPlan(add=("remote", "local"))
            assert await registry.sync() == SyncPlan(add=("local",))  # skipped again, said once
            assert manager.names == ["remote"]
    message = "registry: local is stored but not allowed here, skipped: stdio servers are not allowed here"
    # Said at startup, and once while following (not at every read of the registry).
    assert store_log.messages.count(message) == 2, store_log.messages
