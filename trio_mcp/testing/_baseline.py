"""What a process holds (children, zombies, open files, trio tasks), to check that a run gave
back everything it took (invariant N5). Linux: read from ``/proc``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import trio


@dataclass(frozen=True, kw_only=True)
class Baseline:
    """A snapshot of what this process holds. Take one before a run with :meth:`capture`, and
    compare it with one taken after (:meth:`differences`, or :meth:`History.check_baseline`
    which waits for stragglers).

    Attributes:
        children: live descendant processes (children, grandchildren, ...).
        zombies: descendants that exited and were not reaped.
        fds: open file descriptors, by number, with what each points at.
        tasks: trio tasks alive (``None`` when captured outside trio).
    """

    children: frozenset[int]
    zombies: frozenset[int]
    fds: dict[int, str]
    tasks: int | None

    @classmethod
    def capture(cls) -> Baseline:
        """What this process holds now (in trio: its tasks too)."""
        live, zombies = _descendants(os.getpid())
        return cls(children=live, zombies=zombies, fds=_open_fds(), tasks=_count_tasks())

    @property
    def sockets(self) -> int:
        """Open sockets among :attr:`fds`."""
        return sum(1 for target in self.fds.values() if target.startswith("socket:"))

    def differences(self, now: Baseline, *, groups: Iterable[int] = ()) -> list[str]:
        """How ``now`` differs from this baseline (empty: back to it).

        Args:
            now: a later capture.
            groups: process groups that must be empty by now (servers started in their own
                groups, whose members a crash may have orphaned: an orphan is no descendant).
        """
        out: list[str] = []
        extra = sorted(now.children - self.children)
        if extra:
            out.append(f"child processes left: {', '.join(f'{pid} ({_command(pid)})' for pid in extra)}")
        zombies = sorted(now.zombies - self.zombies)
        if zombies:
            out.append(f"zombies left: {', '.join(map(str, zombies))}")
        opened = sorted(set(now.fds) - set(self.fds))
        if opened:
            out.append(f"file descriptors left open: {', '.join(f'{fd} -> {now.fds[fd]}' for fd in opened)}")
        if self.tasks is not None and now.tasks is not None and now.tasks > self.tasks:
            out.append(f"trio tasks left: {now.tasks - self.tasks} more than the {self.tasks} before")
        wanted = set(groups)
        if wanted:
            left = sorted(pid for pid, pgid in _process_groups().items() if pgid in wanted)
            if left:
                out.append(f"processes left in the servers' groups: {', '.join(map(str, left))}")
        return out


def _stat_fields(pid: int | str) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state, ppid, pgrp, ...)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses.
    return stat[stat.rfind(b")") + 2 :].split()


def _processes() -> dict[int, tuple[bytes, int, int]]:
    """Every process: pid -> (state, ppid, pgrp)."""
    out: dict[int, tuple[bytes, int, int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for entry in entries:
        if entry.isdigit():
            fields = _stat_fields(entry)
            if fields is not None and len(fields) >= 3:
                out[int(entry)] = (fields[0], int(fields[1]), int(fields[2]))
    return out


def _descendants(root: int) -> tuple[frozenset[int], frozenset[int]]:
    """(live, zombie) descendants of ``root``."""
    procs = _processes()
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    live: set[int] = set()
    zombies: set[int] = set()
    stack = list(children.get(root, ()))
    while stack:
        pid = stack.pop()
        if procs[pid][0] in (b"Z", b"X"):
            zombies.add(pid)
        else:
            live.add(pid)
        stack.extend(children.get(pid, ()))
    return frozenset(live), frozenset(zombies)


def _process_groups() -> dict[int, int]:
    """Live processes and their process groups."""
    return {pid: pgrp for pid, (state, _, pgrp) in _processes().items() if state not in (b"Z", b"X")}


def _open_fds() -> dict[int, str]:
    out: dict[int, str] = {}
    try:
        entries = os.listdir("/proc/self/fd")
    except OSError:
        return out
    for entry in entries:
        try:
            out[int(entry)] = os.readlink(f"/proc/self/fd/{entry}")
        except OSError:
            continue  # the descriptor listdir itself used, closed since
    return out


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()[:120]
    except OSError:
        return "?"


def _count_tasks() -> int | None:
    try:
        root = trio.lowlevel.current_root_task()
    except RuntimeError:
        return None
    if root is None:
        return None
    count = 0
    stack = [root]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count
