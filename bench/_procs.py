"""What the benchmarks that start processes share: a free port, waiting for one to listen, and
a process's CPU time read from ``/proc``."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def listening(port: int, check_alive: Callable[[], None], within: float) -> bool:
    """Whether something listens on ``port`` within ``within`` seconds (``check_alive`` is
    called before each try, to raise as soon as the process meant to listen has exited)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        check_alive()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name (the 3rd field is index 0)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2 :].split()


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
