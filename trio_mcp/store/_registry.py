"""The registry: servers registered over the API, kept in the store and run by the manager.

A registration is committed to the store before the manager starts the server (and before
the API answers 201); a deletion is committed before the manager stops it (and before the
204). Servers of the config file are not stored; their names are reserved. Every process on
the same store follows the others: :meth:`Registry.run` re-reads the registry whenever it
changes and starts or stops servers to match it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from .._exceptions import ManagerClosedError, ServerExistsError
from ._base import Store, StoredRegistration
from ._errors import (
    SECRET_KEY_ENV,
    ReservedNameError,
    SecretKeyRequiredError,
    StoreError,
    StoreUnavailableError,
)
from ._secrets import SECRET_FIELDS, SecretBox, join_secrets, split_secrets

if TYPE_CHECKING:
    from .._config import ServerConfig
    from .._manager import Manager
    from .._state import ServerSnapshot

logger = logging.getLogger("trio_mcp.store")

ParseRegistration = Callable[[Mapping[str, Any]], "ServerConfig"]
"""Turns a registration body into a :class:`ServerConfig` (raises on a body it refuses)."""
Admit = Callable[["ServerConfig"], Awaitable["ServerConfig"]]
"""The server as this process runs it, or raises when it may not run it (its own rules: a
replica started with other flags may have stored it)."""

CLEANUP_TIMEOUT = 10.0
"""Seconds to take back a stored registration whose server could not be started."""


@dataclass(frozen=True, kw_only=True)
class SyncPlan:
    """What to do to follow the store: names to start, stop, and restart (re-registered)."""

    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()


def plan_sync(running: Mapping[str, int], stored: Mapping[str, int], reserved: Collection[str]) -> SyncPlan:
    """How to go from ``running`` (stored registrations this process runs, name: revision) to
    ``stored`` (the store's); names in ``reserved`` (the config file's) are left alone."""
    return SyncPlan(
        add=tuple(n for n in stored if n not in running and n not in reserved),
        remove=tuple(n for n in running if n not in stored and n not in reserved),
        replace=tuple(n for n in stored if n in running and running[n] != stored[n] and n not in reserved),
    )


def registration_config(
    row: StoredRegistration, parse: ParseRegistration, box: SecretBox | None
) -> ServerConfig:
    """The server configuration of a stored registration.

    Raises:
        StoreError: its secrets cannot be decrypted.
        Exception: whatever ``parse`` raises for a body it refuses.
    """
    body = dict(row.body)
    if row.sealed is not None:
        if box is None:
            raise StoreError(f"its secrets are encrypted and {SECRET_KEY_ENV} is not set")
        body = join_secrets(body, box.open(row.sealed))
    return parse(body)


async def _admitted(admit: Admit | None, config: ServerConfig) -> ServerConfig | None:
    if admit is None:
        return config
    try:
        return await admit(config)
    except Exception as exc:
        logger.error("registry: %s is stored but not allowed here, skipped: %s", config.name, exc)
        return None


@dataclass(frozen=True, kw_only=True)
class LoadedRegistry:
    """The stored registrations read at startup.

    Attributes:
        version: the registry version read.
        configs: the usable registrations: name: (revision, config).
        stored: every stored registration: name: revision (unusable ones included).
    """

    version: int
    configs: Mapping[str, tuple[int, ServerConfig]]
    stored: Mapping[str, int]


async def load_registry(
    store: Store, parse: ParseRegistration, box: SecretBox | None, admit: Admit | None = None
) -> LoadedRegistry:
    """Read every stored registration. One that cannot be used (its secrets do not decrypt,
    its body is refused, ``admit`` refuses it) is logged and left out, and stays stored."""
    snapshot = await store.registrations()
    configs: dict[str, tuple[int, ServerConfig]] = {}
    for row in snapshot.registrations:
        try:
            config = registration_config(row, parse, box)
        except Exception as exc:
            logger.error("registry: the stored registration of %s cannot be used, skipped: %s", row.name, exc)
            continue
        admitted = await _admitted(admit, config)
        if admitted is not None:
            configs[row.name] = (row.revision, admitted)
    return LoadedRegistry(
        version=snapshot.version,
        configs=configs,
        stored={row.name: row.revision for row in snapshot.registrations},
    )


class Registry:
    """The manager's servers registered over the API, kept in ``store``.

    Args:
        manager: the open manager that runs the servers.
        store: where registrations are kept.
        parse: turns a stored body back into a :class:`ServerConfig`.
        admit: raises for a server this process may not run (it is skipped and said once).
        box: encrypts secrets (``None``: registrations with secrets are refused).
        reserved: the config file's server names (read live: a reload may change it).
        running: the stored registrations the manager runs already (name: revision).
        stored: every stored registration (name: revision), as last read.
        version: the registry version that ``stored`` was read at.
    """

    def __init__(
        self,
        manager: Manager,
        store: Store,
        *,
        parse: ParseRegistration,
        box: SecretBox | None,
        reserved: Collection[str],
        running: Mapping[str, int],
        stored: Mapping[str, int],
        version: int,
        admit: Admit | None = None,
    ) -> None:
        self._manager = manager
        self._store = store
        self._parse = parse
        self._admit = admit
        self._box = box
        self._reserved = reserved
        self._running = dict(running)
        self._stored = dict(stored)
        self._version = version
        self._unusable: dict[str, int] = {}
        self._lock = trio.Lock()

    @property
    def running(self) -> dict[str, int]:
        """The stored registrations this process runs: name: revision."""
        return dict(self._running)

    async def register(self, config: ServerConfig, body: Mapping[str, Any]) -> ServerSnapshot:
        """Store the registration ``body`` (parsed: ``config``), then start the server.

        When this returns, the registration is committed. It is not cancelled half-way: a
        registration is stored and started, or neither.

        Raises:
            ReservedNameError: a server of the config file has that name.
            ServerExistsError: the name is taken (here, or in the store by another process).
            SecretKeyRequiredError: ``body`` has secrets and there is no key to encrypt them.
            StoreUnavailableError: the store cannot take the write: nothing was registered.
        """
        name = config.name
        async with self._lock:
            if name in self._reserved:
                raise ReservedNameError(name)
            if name in self._manager.names:
                raise ServerExistsError(name)
            public, secret = split_secrets(body)
            sealed: str | None = None
            if secret:
                if self._box is None:
                    raise SecretKeyRequiredError(f for f in SECRET_FIELDS if f in secret)
                sealed = self._box.seal(secret)
            with trio.CancelScope(shield=True):
                revision = await self._store.add_registration(name, public, sealed)
                self._stored[name] = revision
                try:
                    snapshot = await self._manager.add_server(config)
                except BaseException:
                    await self._take_back(name, revision)
                    raise
                self._running[name] = revision
        logger.info("registry: %s stored (revision %d)", name, revision)
        return snapshot

    async def _take_back(self, name: str, revision: int) -> None:
        with trio.move_on_after(CLEANUP_TIMEOUT):
            try:
                await self._store.remove_registration(name, revision=revision)
            except StoreError as exc:
                logger.error(
                    "registry: %s was stored but its server could not start, and removing it failed: %s",
                    name,
                    exc,
                )
                return
            self._stored.pop(name, None)

    async def unregister(self, name: str) -> None:
        """Delete the stored registration ``name`` (committed first), then stop its server; a
        server that is not stored (from the config file) is only stopped.

        Raises:
            UnknownServerError: no server has that name.
            StoreUnavailableError: the store cannot take the write: nothing was changed.
        """
        async with self._lock:
            if name not in self._stored:
                await self._manager.remove_server(name)
                return
            with trio.CancelScope(shield=True):
                await self._store.remove_registration(name)
                self._stored.pop(name, None)
                self._running.pop(name, None)
                self._unusable.pop(name, None)
                if name in self._manager.names:
                    await self._manager.remove_server(name)
        logger.info("registry: %s deleted", name)

    async def sync(self) -> SyncPlan:
        """Re-read the store and start, stop or restart servers to follow it; returns what
        was done.

        Raises:
            StoreUnavailableError: the store cannot be read (nothing changed).
        """
        async with self._lock:
            snapshot = await self._store.registrations()
            rows = {row.name: row for row in snapshot.registrations}
            self._stored = {name: row.revision for name, row in rows.items()}
            plan = plan_sync(self._running, self._stored, self._reserved)
            for name in (*plan.remove, *plan.replace):
                del self._running[name]
                if name in self._manager.names:
                    await self._manager.remove_server(name)
                if name in plan.remove:
                    logger.info("registry: %s stopped: its registration was deleted", name)
            for name in (*plan.replace, *plan.add):
                await self._start(rows[name], replaced=name in plan.replace)
            self._version = snapshot.version
            return plan

    async def _start(self, row: StoredRegistration, *, replaced: bool) -> None:
        if self._unusable.get(row.name) == row.revision:
            return  # said once already
        try:
            config = registration_config(row, self._parse, self._box)
        except Exception as exc:
            self._unusable[row.name] = row.revision
            logger.error("registry: the stored registration of %s cannot be used, skipped: %s", row.name, exc)
            return
        admitted = await _admitted(self._admit, config)
        if admitted is None:
            self._unusable[row.name] = row.revision
            return
        try:
            await self._manager.add_server(admitted)
        except ServerExistsError:
            self._unusable[row.name] = row.revision
            logger.warning("registry: %s is stored but a server of that name runs here: skipped", row.name)
            return
        self._running[row.name] = row.revision
        logger.info("registry: %s %s: registered elsewhere", row.name, "restarted" if replaced else "started")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the store until cancelled: after every change (notified, or found by a
        periodic read of the registry version), :meth:`sync`."""
        task_status.started()
        failing = False
        while True:
            await self._store.wait_registry_changed()
            try:
                if await self._store.registry_version() != self._version:
                    await self.sync()
            except StoreUnavailableError as exc:
                if not failing:
                    logger.warning("registry: cannot follow the store (%s); retrying", exc.reason)
                    failing = True
                continue
            except ManagerClosedError:
                return
            if failing:
                logger.info("registry: following the store again")
                failing = False

    def __repr__(self) -> str:
        return f"<Registry running={sorted(self._running)} version={self._version}>"
