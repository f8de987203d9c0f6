"""``open_store()``: a SQLite or PostgreSQL store, migrated, closed when the block ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ._base import Store
from ._location import StateLocation, parse_state


@asynccontextmanager
async def open_store(location: StateLocation | str) -> AsyncIterator[Store]:
    """Open the state store at ``location`` and apply the schema migrations it lacks.

    Args:
        location: a :class:`StateLocation`, or a ``--state`` value (``sqlite:///FILE``,
            ``postgresql://...``; not ``memory``, which keeps nothing).

    Raises:
        StoreError: it cannot be opened (naming the file or the URL): a SQLite file that is
            not a database, an unreachable PostgreSQL, a schema newer than this program.
        ValueError: ``location`` is not a store location.
    """
    if isinstance(location, str):
        parsed = parse_state(location)
        if parsed is None:
            raise ValueError("'memory' keeps nothing: there is no store to open")
        location = parsed
    store: Store
    if location.kind == "sqlite":
        from ._sqlite import SqliteStore

        assert location.path is not None
        store = await SqliteStore.open(location.path, busy_timeout=location.busy_timeout)
    else:
        from ._postgres import PostgresStore

        store = await PostgresStore.open(location)
    try:
        yield store
    finally:
        await store.aclose()
