"""The embedded store: one SQLite file (standard ``sqlite3``), in WAL mode.

Two connections: one for writes (registrations, event batches, pruning) and one for reads,
so that a read of the history never waits behind a batch of events. Each is used by one
worker thread at a time (a trio lock per connection). Registry commits are
``synchronous=FULL``: a registration that was answered 201 survives a crash of the process or
of the machine. Event batches are ``synchronous=NORMAL`` (no disk flush; in WAL mode they
survive a crash of the process, and the machine's may take the last few).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import trio

from ._errors import StoreError, StoreUnavailableError
from ._location import DEFAULT_BUSY_TIMEOUT
from ._sql import SQLITE, SqlStore, Tx, migrate

T = TypeVar("T")


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, tuple(params)).fetchall()

    def rowcount(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, tuple(params)).rowcount


def _in_transaction(conn: sqlite3.Connection, work: Callable[[Tx], T], *, immediate: bool) -> T:
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        result = work(_SqliteTx(conn))
    except BaseException:
        conn.rollback()
        raise
    conn.execute("COMMIT")
    return result


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    # isolation_level=None: transactions are begun explicitly (BEGIN IMMEDIATE for writes, so a
    # write never fails half-way on a lock it could have waited for).
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute("PRAGMA synchronous=FULL")
    except BaseException:
        conn.close()
        raise
    return conn


class SqliteStore(SqlStore):
    """The state store in one SQLite file. Open it with :func:`trio_mcp.store.open_store`."""

    kind = "sqlite"
    dialect = SQLITE

    def __init__(self, path: Path, writer: sqlite3.Connection, reader: sqlite3.Connection) -> None:
        self.path = path
        self.location = f"sqlite://{path}"
        self._writer = writer
        self._reader = reader
        self._write_lock = trio.Lock()
        self._read_lock = trio.Lock()
        self._closed = False
        self._durable = True
        """Whether the writer's commits are flushed to disk (``synchronous=FULL``) now."""

    @classmethod
    async def open(cls, given: Path, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> SqliteStore:
        """Open (creating it and its directory if needed) and migrate the database at ``given``.

        Raises:
            StoreError: naming the file: it cannot be created or opened, is not a SQLite
                database, or has a newer schema.
        """

        def opening() -> tuple[Path, sqlite3.Connection, sqlite3.Connection]:
            path = given.absolute()
            try:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                if not path.exists():
                    # Created private: even encrypted, secrets are nobody else's business.
                    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            except OSError as exc:
                raise StoreError(f"cannot create the state file {path}: {exc.strerror or exc}") from None
            try:
                writer = _connect(path, busy_timeout)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the state file {path}: {_reason(exc)}") from None
            try:
                _in_transaction(writer, lambda tx: migrate(tx, SQLITE), immediate=True)
                reader = _connect(path, busy_timeout)
                reader.execute("PRAGMA query_only=ON")
            except StoreError as exc:
                writer.close()
                raise StoreError(f"cannot use the state file {path}: {exc}") from None
            except sqlite3.Error as exc:
                writer.close()
                raise StoreError(f"cannot open the state file {path}: {_reason(exc)}") from None
            return path, writer, reader

        path, writer, reader = await trio.to_thread.run_sync(opening)
        return cls(path, writer, reader)

    async def _transact(
        self, work: Callable[[Tx], T], *, doing: str, read_only: bool = False, durable: bool = True
    ) -> T:
        conn, lock = (self._reader, self._read_lock) if read_only else (self._writer, self._write_lock)

        def run() -> T:
            try:
                if not read_only and durable != self._durable:
                    conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                    self._durable = durable
                return _in_transaction(conn, work, immediate=not read_only)
            except sqlite3.Error as exc:
                raise StoreUnavailableError(_reason(exc), doing=doing) from None

        async with lock:
            if self._closed:
                raise StoreUnavailableError("it is closed", doing=doing)
            return await trio.to_thread.run_sync(run)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            async with self._write_lock, self._read_lock:
                if self._closed:
                    return
                self._closed = True
                await trio.to_thread.run_sync(self._close_connections)

    def _close_connections(self) -> None:
        self._reader.close()
        self._writer.close()


def _reason(exc: sqlite3.Error) -> str:
    text = str(exc) or type(exc).__name__
    if text == "file is not a database":
        return "it is not a SQLite database (corrupt, or another kind of file)"
    return text
