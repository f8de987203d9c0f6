"""The SQL both stores share: the schema and its migrations, the registry and the history.

Statements are written with ``?`` placeholders; a dialect's transaction object translates them.
Every function here runs in a worker thread, inside one transaction (:meth:`SqlStore._transact`).
"""

from __future__ import annotations

import abc
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .._events import ConnectionEvent, InvocationEvent
from .._exceptions import ServerExistsError
from ._base import RegistrySnapshot, Store, StoredRegistration
from ._errors import StoreError
from ._location import Retention

T = TypeVar("T")

REGISTRY_CHANNEL = "trio_mcp_registry"
"""PostgreSQL ``NOTIFY`` channel: a registration was added or removed."""


class Tx(Protocol):
    """One transaction on one connection, in a worker thread."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run ``sql``; returns its rows (none for statements without a result)."""

    def rowcount(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run ``sql``; returns how many rows it changed."""


@dataclass(frozen=True, kw_only=True)
class Dialect:
    name: str
    serial: str
    """The DDL of an auto-numbered primary key column."""
    notify: str | None = None
    """Run in the transaction of every registry change (with the new version as parameter)."""
    migration_lock: str | None = None
    """Run first in the migration transaction: replicas starting together migrate one at a time."""


SQLITE = Dialect(name="sqlite", serial="INTEGER PRIMARY KEY")
POSTGRESQL = Dialect(
    name="postgresql",
    serial="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    notify=f"SELECT pg_notify('{REGISTRY_CHANNEL}', CAST(? AS TEXT))",
    # Any constant would do: the key of this program's advisory lock.
    migration_lock="SELECT pg_advisory_xact_lock(7215303400521)",
)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "registry and event history",
        (
            """CREATE TABLE trio_mcp_registrations (
                name TEXT PRIMARY KEY,
                revision BIGINT NOT NULL,
                body TEXT NOT NULL,
                sealed TEXT,
                created_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE TABLE trio_mcp_registry_version (id INTEGER PRIMARY KEY, version BIGINT NOT NULL)",
            "INSERT INTO trio_mcp_registry_version (id, version) VALUES (1, 0)",
            """CREATE TABLE trio_mcp_connection_events (
                id {serial},
                replica TEXT NOT NULL,
                seq BIGINT NOT NULL,
                server TEXT NOT NULL,
                from_status TEXT NOT NULL,
                to_status TEXT NOT NULL,
                reason TEXT NOT NULL,
                category TEXT,
                correlation_id TEXT,
                at DOUBLE PRECISION NOT NULL,
                unix_time DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX trio_mcp_connection_events_server ON trio_mcp_connection_events (server, id)",
            "CREATE INDEX trio_mcp_connection_events_correlation "
            "ON trio_mcp_connection_events (correlation_id)",
            """CREATE TABLE trio_mcp_invocation_events (
                id {serial},
                replica TEXT NOT NULL,
                seq BIGINT NOT NULL,
                kind TEXT NOT NULL,
                server TEXT NOT NULL,
                method TEXT NOT NULL,
                request_id TEXT NOT NULL,
                target TEXT,
                error TEXT,
                category TEXT,
                at DOUBLE PRECISION NOT NULL,
                unix_time DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX trio_mcp_invocation_events_server ON trio_mcp_invocation_events (server, id)",
            "CREATE INDEX trio_mcp_invocation_events_request ON trio_mcp_invocation_events (request_id)",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def migrate(tx: Tx, dialect: Dialect) -> list[int]:
    """Apply the migrations this database lacks, in order; returns their versions.

    Raises:
        StoreError: the database has a schema newer than this program knows.
    """
    if dialect.migration_lock is not None:
        tx.execute(dialect.migration_lock)
    tx.execute(
        "CREATE TABLE IF NOT EXISTS trio_mcp_schema ("
        "version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
    )
    applied = {int(row[0]) for row in tx.execute("SELECT version FROM trio_mcp_schema")}
    newest = max(applied, default=0)
    if newest > SCHEMA_VERSION:
        raise StoreError(
            f"its schema is version {newest}, newer than this trio-mcp knows ({SCHEMA_VERSION}): "
            "upgrade trio-mcp"
        )
    done: list[int] = []
    for migration in MIGRATIONS:
        if migration.version in applied:
            continue
        for statement in migration.statements:
            tx.execute(statement.format(serial=dialect.serial))
        tx.execute(
            "INSERT INTO trio_mcp_schema (version, description, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.description, time.time()),
        )
        done.append(migration.version)
    return done


# -- the registry ------------------------------------------------------------------------------


def _bump_version(tx: Tx, dialect: Dialect) -> int:
    tx.execute("UPDATE trio_mcp_registry_version SET version = version + 1 WHERE id = 1")
    version = int(tx.execute("SELECT version FROM trio_mcp_registry_version WHERE id = 1")[0][0])
    if dialect.notify is not None:
        tx.execute(dialect.notify, (version,))
    return version


def read_registrations(tx: Tx) -> RegistrySnapshot:
    version = int(tx.execute("SELECT version FROM trio_mcp_registry_version WHERE id = 1")[0][0])
    rows = tx.execute("SELECT name, revision, body, sealed FROM trio_mcp_registrations ORDER BY revision")
    return RegistrySnapshot(
        version=version,
        registrations=tuple(
            StoredRegistration(name=name, revision=int(revision), body=json.loads(body), sealed=sealed)
            for name, revision, body, sealed in rows
        ),
    )


def read_registry_version(tx: Tx) -> int:
    return int(tx.execute("SELECT version FROM trio_mcp_registry_version WHERE id = 1")[0][0])


def insert_registration(
    tx: Tx, dialect: Dialect, name: str, body: Mapping[str, Any], sealed: str | None
) -> int:
    # The version row is updated first: it serializes registry writers, also across processes,
    # so the check below sees a registration that another process committed meanwhile.
    revision = _bump_version(tx, dialect)
    if tx.execute("SELECT 1 FROM trio_mcp_registrations WHERE name = ?", (name,)):
        raise ServerExistsError(name)  # rolls the transaction back, version bump included
    tx.execute(
        "INSERT INTO trio_mcp_registrations (name, revision, body, sealed, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (name, revision, json.dumps(body, separators=(",", ":"), sort_keys=True), sealed, time.time()),
    )
    return revision


def delete_registration(tx: Tx, dialect: Dialect, name: str, revision: int | None) -> bool:
    if revision is None:
        deleted = tx.rowcount("DELETE FROM trio_mcp_registrations WHERE name = ?", (name,))
    else:
        deleted = tx.rowcount(
            "DELETE FROM trio_mcp_registrations WHERE name = ? AND revision = ?", (name, revision)
        )
    if deleted:
        _bump_version(tx, dialect)
    return deleted > 0


# -- the event history -------------------------------------------------------------------------

_CONNECTION_COLUMNS = "seq, server, from_status, to_status, reason, category, correlation_id, at, unix_time"
_INVOCATION_COLUMNS = "seq, kind, server, method, request_id, target, error, category, at, unix_time"


ROWS_PER_STATEMENT = 90
"""Rows of one multi-row ``INSERT`` (x 11 columns: under SQLite's oldest limit of 999
parameters). Few statements per batch, because ``sqlite3`` lets go of the GIL around every
statement it steps: a row each would queue that many times behind a busy event loop."""


def _insert_rows(tx: Tx, table: str, columns: str, rows: Sequence[tuple[Any, ...]]) -> None:
    if not rows:
        return
    width = len(rows[0])
    one = "(" + ", ".join("?" * width) + ")"
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start : start + ROWS_PER_STATEMENT]
        tx.execute(
            f"INSERT INTO {table} ({columns}) VALUES " + ", ".join([one] * len(chunk)),
            [value for row in chunk for value in row],
        )


def insert_events(
    tx: Tx, replica: str, connection: Sequence[ConnectionEvent], invocation: Sequence[InvocationEvent]
) -> None:
    _insert_rows(
        tx,
        "trio_mcp_connection_events",
        f"replica, {_CONNECTION_COLUMNS}",
        [
            (
                replica,
                e.seq,
                e.server,
                e.from_status,
                e.to_status,
                e.reason,
                e.category,
                e.correlation_id,
                e.at,
                e.timestamp,
            )
            for e in connection
        ],
    )
    _insert_rows(
        tx,
        "trio_mcp_invocation_events",
        f"replica, {_INVOCATION_COLUMNS}",
        [
            (
                replica,
                e.seq,
                e.kind,
                e.server,
                e.method,
                e.request_id,
                e.target,
                e.error,
                e.category,
                e.at,
                e.timestamp,
            )
            for e in invocation
        ],
    )


def _where(filters: Mapping[str, str | None]) -> tuple[str, list[Any]]:
    active = [(column, value) for column, value in filters.items() if value is not None]
    if not active:
        return "", []
    return " WHERE " + " AND ".join(f"{column} = ?" for column, _ in active), [v for _, v in active]


def select_connection_events(
    tx: Tx, *, server: str | None, correlation_id: str | None, limit: int
) -> list[ConnectionEvent]:
    where, params = _where({"server": server, "correlation_id": correlation_id})
    rows = tx.execute(
        f"SELECT {_CONNECTION_COLUMNS}, replica FROM trio_mcp_connection_events{where}"
        " ORDER BY id DESC LIMIT ?",
        [*params, limit],
    )
    return [
        ConnectionEvent(
            seq=int(seq),
            server=srv,
            from_status=from_status,
            to_status=to_status,
            reason=reason,
            category=category,
            correlation_id=correlation,
            at=float(at),
            timestamp=float(unix_time),
            replica=replica,
        )
        for (
            seq,
            srv,
            from_status,
            to_status,
            reason,
            category,
            correlation,
            at,
            unix_time,
            replica,
        ) in reversed(rows)
    ]


def select_invocation_events(
    tx: Tx, *, server: str | None, method: str | None, request_id: str | None, limit: int
) -> list[InvocationEvent]:
    where, params = _where({"server": server, "method": method, "request_id": request_id})
    rows = tx.execute(
        f"SELECT {_INVOCATION_COLUMNS}, replica FROM trio_mcp_invocation_events{where}"
        " ORDER BY id DESC LIMIT ?",
        [*params, limit],
    )
    return [
        InvocationEvent(
            seq=int(seq),
            kind=kind,
            server=srv,
            method=meth,
            request_id=rid,
            target=target,
            error=error,
            category=category,
            at=float(at),
            timestamp=float(unix_time),
            replica=replica,
        )
        for seq, kind, srv, meth, rid, target, error, category, at, unix_time, replica in reversed(rows)
    ]


def server_has_events(tx: Tx, server: str) -> bool:
    return bool(
        tx.execute("SELECT 1 FROM trio_mcp_connection_events WHERE server = ? LIMIT 1", (server,))
        or tx.execute("SELECT 1 FROM trio_mcp_invocation_events WHERE server = ? LIMIT 1", (server,))
    )


EVENT_TABLES = ("trio_mcp_connection_events", "trio_mcp_invocation_events")


def prune(tx: Tx, retention: Retention, now: float) -> int:
    deleted = 0
    for table in EVENT_TABLES:
        if retention.max_age is not None:
            deleted += tx.rowcount(f"DELETE FROM {table} WHERE unix_time < ?", (now - retention.max_age,))
        if retention.max_count is not None:
            # The id of the newest event past the count (NULL when there are fewer: nothing matches).
            deleted += tx.rowcount(
                f"DELETE FROM {table} WHERE id <= (SELECT id FROM {table} ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (retention.max_count,),
            )
    return deleted


class SqlStore(Store):
    """The registry and history in SQL; a subclass runs the transactions."""

    dialect: Dialect

    @abc.abstractmethod
    async def _transact(
        self, work: Callable[[Tx], T], *, doing: str, read_only: bool = False, durable: bool = True
    ) -> T:
        """Run ``work`` in one transaction in a worker thread (committed if it returns).

        ``durable=False``: the commit may be lost if the machine (not the process) fails
        right after it; it costs no disk flush (event batches).

        Raises:
            StoreUnavailableError: the database could not run it; nothing was changed.
        """

    async def registrations(self) -> RegistrySnapshot:
        return await self._transact(read_registrations, doing="reading the registry", read_only=True)

    async def registry_version(self) -> int:
        return await self._transact(read_registry_version, doing="reading the registry", read_only=True)

    async def add_registration(self, name: str, body: Mapping[str, Any], sealed: str | None) -> int:
        dialect = self.dialect
        return await self._transact(
            lambda tx: insert_registration(tx, dialect, name, body, sealed),
            doing=f"storing the registration of {name!r}: it was not made",
        )

    async def remove_registration(self, name: str, *, revision: int | None = None) -> bool:
        dialect = self.dialect
        return await self._transact(
            lambda tx: delete_registration(tx, dialect, name, revision),
            doing=f"deleting the registration of {name!r}: it is still registered",
        )

    async def write_events(
        self, replica: str, connection: Sequence[ConnectionEvent], invocation: Sequence[InvocationEvent]
    ) -> None:
        await self._transact(
            lambda tx: insert_events(tx, replica, connection, invocation),
            doing="writing events",
            durable=False,
        )

    async def connection_events(
        self, *, server: str | None, correlation_id: str | None, limit: int
    ) -> list[ConnectionEvent]:
        return await self._transact(
            lambda tx: select_connection_events(
                tx, server=server, correlation_id=correlation_id, limit=limit
            ),
            doing="reading events",
            read_only=True,
        )

    async def invocation_events(
        self, *, server: str | None, method: str | None, request_id: str | None, limit: int
    ) -> list[InvocationEvent]:
        return await self._transact(
            lambda tx: select_invocation_events(
                tx, server=server, method=method, request_id=request_id, limit=limit
            ),
            doing="reading events",
            read_only=True,
        )

    async def has_events(self, server: str) -> bool:
        return await self._transact(
            lambda tx: server_has_events(tx, server), doing="reading events", read_only=True
        )

    async def prune_events(self, retention: Retention, *, now: float) -> int:
        return await self._transact(lambda tx: prune(tx, retention, now), doing="pruning events")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.location}>"
