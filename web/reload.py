"""Re-reading the config file (``POST /api/v1/mcp/reload``, SIGHUP): the fleet follows it.

Servers added to the file start, removed ones stop, changed ones restart, and untouched ones
keep their sessions. Only the servers that came from the file are managed this way: servers
registered over the API stay as they are (a name that moves into the file is taken over).
A file that does not parse changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import trio

from trio_mcp import Manager, ServerConfig


@dataclass(frozen=True, kw_only=True)
class ReloadPlan:
    """What a reload does, by server name."""

    add: tuple[ServerConfig, ...] = ()
    remove: tuple[str, ...] = ()
    restart: tuple[ServerConfig, ...] = ()
    keep: tuple[str, ...] = ()

    def summary(self) -> dict[str, list[str]]:
        return {
            "added": [c.name for c in self.add],
            "removed": list(self.remove),
            "restarted": [c.name for c in self.restart],
            "unchanged": list(self.keep),
        }


def plan_reload(
    running: Mapping[str, ServerConfig], from_file: Iterable[str], wanted: Sequence[ServerConfig]
) -> ReloadPlan:
    """The reload from ``running`` (every server now) to ``wanted`` (the file now), where
    ``from_file`` names the running servers that came from the file before."""
    wanted_names = {c.name for c in wanted}
    add, restart, keep = [], [], []
    for config in wanted:
        current = running.get(config.name)
        if current is None:
            add.append(config)
        elif current == config and config.name in from_file:
            keep.append(config.name)
        else:
            restart.append(config)
    remove = tuple(n for n in from_file if n in running and n not in wanted_names)
    return ReloadPlan(add=tuple(add), remove=remove, restart=tuple(restart), keep=tuple(keep))


@dataclass(kw_only=True)
class Reloader:
    """Applies reloads to ``manager``, one at a time."""

    manager: Manager
    read: Callable[[], Sequence[ServerConfig]]
    """Reads and parses the file (run in a worker thread); raises ``ConfigError``."""
    from_file: set[str] = field(default_factory=set)
    _lock: trio.Lock = field(default_factory=trio.Lock)

    async def reload(self) -> ReloadPlan:
        async with self._lock:
            wanted = await trio.to_thread.run_sync(self.read)
            running = {name: self.manager.config(name) for name in self.manager.names}
            plan = plan_reload(running, self.from_file, wanted)
            for name in plan.remove:
                await self.manager.remove_server(name)
                self.from_file.discard(name)
            for config in plan.restart:
                await self.manager.remove_server(config.name)
                await self.manager.add_server(config)
                self.from_file.add(config.name)
            for config in plan.add:
                await self.manager.add_server(config)
                self.from_file.add(config.name)
            return plan
