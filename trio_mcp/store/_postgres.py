"""The shared store: PostgreSQL through ``psycopg`` 3 and a small ``psycopg_pool`` pool.

Every replica opens one. Registry writers serialize on one version row, and each registry
change sends a ``NOTIFY``; every replica ``LISTEN``s on its own connection, waiting for it
with :func:`trio.lowlevel.wait_readable` on the connection's socket (no thread waits), and
re-reads the version every :attr:`PostgresStore.poll_interval` seconds in case a
notification was lost (its listening connection was down).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from ._errors import StoreError, StoreUnavailableError
from ._location import StateLocation
from ._sql import POSTGRESQL, REGISTRY_CHANNEL, SqlStore, Tx, migrate

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

T = TypeVar("T")

DEFAULT_CONNECT_TIMEOUT = 5
"""Seconds to open one connection (unless the URL sets ``connect_timeout``)."""
DEFAULT_STATEMENT_TIMEOUT_MS = 30_000
"""Milliseconds one statement may take (unless the URL sets ``options``)."""
POOL_TIMEOUT = 5.0
"""Seconds to wait for a pooled connection before the store counts as unavailable."""
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 4
DEFAULT_POLL_INTERVAL = 5.0

logger = logging.getLogger("trio_mcp.store")


class _PgTx:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self._conn.execute(self._sql(sql), tuple(params))
        return cursor.fetchall() if cursor.description is not None else []

    def rowcount(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(self._sql(sql), tuple(params)).rowcount


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PostgresStore(SqlStore):
    """The state store in PostgreSQL. Open it with :func:`trio_mcp.store.open_store`."""

    kind = "postgresql"
    dialect = POSTGRESQL

    def __init__(self, location: StateLocation, pool: ConnectionPool[Any], kwargs: dict[str, Any]) -> None:
        assert location.url is not None
        self.location = str(location)
        self.poll_interval = DEFAULT_POLL_INTERVAL
        self._url = location.url
        self._kwargs = kwargs
        self._pool = pool
        self._listener: psycopg.Connection[Any] | None = None
        self._closed = False

    @classmethod
    async def open(cls, location: StateLocation) -> PostgresStore:
        """Connect (a pool of 1 to 4 connections) and migrate the schema.

        Raises:
            StoreError: the database cannot be reached, or has a newer schema.
        """
        try:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict
            from psycopg_pool import ConnectionPool
        except ImportError as exc:
            raise StoreError(
                f"PostgreSQL needs psycopg and psycopg-pool ({exc}): pip install 'trio-mcp[postgres]'"
            ) from None

        assert location.url is not None
        pool_logger = logging.getLogger("psycopg.pool")
        if pool_logger.level == logging.NOTSET:
            # The pool warns at every failed reconnection attempt; the store says it once, in
            # its own words (unless the pool's logger has been configured).
            pool_logger.setLevel(logging.ERROR)
        try:
            given = conninfo_to_dict(location.url)
        except psycopg.ProgrammingError as exc:
            raise StoreError(f"{location} is not a PostgreSQL URL: {_first_line(exc)}") from None
        kwargs: dict[str, Any] = {}
        if "connect_timeout" not in given:
            kwargs["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
        if "options" not in given:
            kwargs["options"] = f"-c statement_timeout={DEFAULT_STATEMENT_TIMEOUT_MS}"
        kwargs.setdefault("application_name", "trio-mcp")
        pool: ConnectionPool[Any] = ConnectionPool(
            location.url,
            kwargs=kwargs,
            min_size=POOL_MIN_SIZE,
            max_size=POOL_MAX_SIZE,
            open=False,
            timeout=POOL_TIMEOUT,
            check=ConnectionPool.check_connection,
            name="trio-mcp",
            num_workers=1,
        )
        connect_timeout = float(given.get("connect_timeout") or DEFAULT_CONNECT_TIMEOUT)

        def opening() -> None:
            from psycopg_pool import PoolTimeout

            try:
                pool.open(wait=True, timeout=connect_timeout + 1)
            except PoolTimeout:
                # Say why: one direct attempt gives libpq's reason.
                try:
                    psycopg.connect(location.url or "", **kwargs).close()
                except psycopg.Error as exc:
                    reason = _first_line(exc)
                else:
                    reason = "no connection within the timeout"
                pool.close(timeout=1)
                raise StoreError(f"cannot connect to {location}: {reason}") from None

        await trio.to_thread.run_sync(opening)
        store = cls(location, pool, kwargs)
        try:
            await store._transact(lambda tx: migrate(tx, POSTGRESQL), doing="migrating the schema")
        except StoreError as exc:
            await store.aclose()
            raise StoreError(f"cannot use {location}: {exc}") from None
        return store

    async def _transact(
        self, work: Callable[[Tx], T], *, doing: str, read_only: bool = False, durable: bool = True
    ) -> T:
        import psycopg
        from psycopg_pool import PoolClosed, PoolTimeout

        pool = self._pool

        def run() -> T:
            try:
                with pool.connection(timeout=POOL_TIMEOUT) as conn, conn.transaction():
                    if not durable:
                        conn.execute("SET LOCAL synchronous_commit TO OFF")
                    return work(_PgTx(conn))
            except PoolTimeout:
                raise StoreUnavailableError(
                    f"no database connection within {POOL_TIMEOUT:g} s", doing=doing
                ) from None
            except PoolClosed:
                raise StoreUnavailableError("it is closed", doing=doing) from None
            except psycopg.Error as exc:
                raise StoreUnavailableError(_first_line(exc), doing=doing) from None

        if self._closed:
            raise StoreUnavailableError("it is closed", doing=doing)
        return await trio.to_thread.run_sync(run)

    # -- LISTEN / NOTIFY -----------------------------------------------------------------------

    async def wait_registry_changed(self) -> None:
        with trio.move_on_after(self.poll_interval):
            listener = self._listener
            if listener is None:
                try:
                    self._listener = await trio.to_thread.run_sync(self._listen)
                except StoreUnavailableError as exc:
                    logger.debug("registry: cannot listen for changes (%s); re-reading periodically", exc)
                    await trio.sleep_forever()
                # Changes made while no connection listened were not notified: re-read now.
                return
            await trio.lowlevel.wait_readable(listener.fileno())
            if not await trio.to_thread.run_sync(self._drain, listener):
                await self._close_listener()

    def _listen(self) -> psycopg.Connection[Any]:
        import psycopg

        try:
            conn = psycopg.Connection.connect(self._url, autocommit=True, **self._kwargs)
        except psycopg.Error as exc:
            raise StoreUnavailableError(_first_line(exc)) from None
        try:
            conn.execute(f"LISTEN {REGISTRY_CHANNEL}")
        except psycopg.Error as exc:
            conn.close()
            raise StoreUnavailableError(_first_line(exc)) from None
        return conn

    @staticmethod
    def _drain(conn: psycopg.Connection[Any]) -> bool:
        """Consume what arrived; ``False`` when the connection is broken."""
        import psycopg

        try:
            for _ in conn.notifies(timeout=0):
                pass
        except psycopg.Error:
            return False
        return not conn.closed

    async def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            import psycopg

            try:
                trio.lowlevel.notify_closing(listener.fileno())
            except psycopg.Error:
                pass  # no socket any more: nothing can be waiting on it
            await trio.to_thread.run_sync(listener.close)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            if self._closed:
                return
            self._closed = True
            await self._close_listener()
            await trio.to_thread.run_sync(lambda: self._pool.close(timeout=5.0))
