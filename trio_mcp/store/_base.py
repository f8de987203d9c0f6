"""The state store's interface: what the registry and the event history need from a database.

Two implementations: :class:`~trio_mcp.store._sqlite.SqliteStore` (one file, embedded) and
:class:`~trio_mcp.store._postgres.PostgresStore` (shared by replicas). Every method runs its
database work in a worker thread (``trio.to_thread.run_sync``) and raises
:class:`~trio_mcp.store.StoreUnavailableError` when the database cannot answer.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from .._events import ConnectionEvent, InvocationEvent
from ._location import Retention


@dataclass(frozen=True, kw_only=True)
class StoredRegistration:
    """One registration as stored.

    Attributes:
        name: the server's name.
        revision: the registry version that created it (a re-registration gets a new one).
        body: the registration body without its secrets.
        sealed: the secrets (``headers``, ``env``, ``auth``), encrypted; ``None``: it had none.
    """

    name: str
    revision: int
    body: Mapping[str, Any]
    sealed: str | None = None


@dataclass(frozen=True, kw_only=True)
class RegistrySnapshot:
    """Every stored registration, at registry ``version`` (which changes with every write)."""

    version: int
    registrations: tuple[StoredRegistration, ...]


class Store(abc.ABC):
    """A database holding the registry (API registrations) and the event history.

    Open one with :func:`trio_mcp.store.open_store`; it is closed when that block ends.
    """

    kind: str
    """``"sqlite"`` or ``"postgresql"``."""
    location: str
    """Where it is, for messages (no password)."""
    poll_interval: float = 2.0
    """Seconds between two reads of the registry version when nothing says it changed."""

    # -- the registry ------------------------------------------------------------------------

    @abc.abstractmethod
    async def registrations(self) -> RegistrySnapshot:
        """Every stored registration, and the registry version they are at."""

    @abc.abstractmethod
    async def registry_version(self) -> int:
        """The registry version: it changes whenever a registration is added or removed."""

    @abc.abstractmethod
    async def add_registration(self, name: str, body: Mapping[str, Any], sealed: str | None) -> int:
        """Store a registration, committed before this returns; returns its revision.

        Raises:
            ServerExistsError: a registration with that name is stored already.
            StoreUnavailableError: nothing was stored.
        """

    @abc.abstractmethod
    async def remove_registration(self, name: str, *, revision: int | None = None) -> bool:
        """Delete the registration ``name`` (only at ``revision``, if given), committed before
        this returns; returns whether there was one."""

    async def wait_registry_changed(self) -> None:
        """Return when the registry may have changed (another process wrote to it), or after
        :attr:`poll_interval` seconds at the latest."""
        await trio.sleep(self.poll_interval)

    # -- the event history -------------------------------------------------------------------

    @abc.abstractmethod
    async def write_events(
        self, replica: str, connection: Sequence[ConnectionEvent], invocation: Sequence[InvocationEvent]
    ) -> None:
        """Append events recorded by ``replica``, in one transaction."""

    @abc.abstractmethod
    async def connection_events(
        self, *, server: str | None, correlation_id: str | None, limit: int
    ) -> list[ConnectionEvent]:
        """The newest ``limit`` connection events matching the filters, oldest first."""

    @abc.abstractmethod
    async def invocation_events(
        self, *, server: str | None, method: str | None, request_id: str | None, limit: int
    ) -> list[InvocationEvent]:
        """The newest ``limit`` invocation events matching the filters, oldest first."""

    @abc.abstractmethod
    async def has_events(self, server: str) -> bool:
        """Whether any event of ``server`` is stored."""

    @abc.abstractmethod
    async def prune_events(self, retention: Retention, *, now: float) -> int:
        """Delete the events that ``retention`` no longer keeps (``now``: a Unix time);
        returns how many were deleted."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close every connection (idempotent)."""
