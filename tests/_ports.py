"""A TCP port for a server a test starts, picked below the kernel's ephemeral range.

A port the kernel picked for ``bind(("127.0.0.1", 0))`` is an ephemeral one: between the check
and the server binding it, any outgoing connection (the server's own, connecting to its fleet
before it listens) may be given the same port, and the server then fails with "address in use".
Ports below the ephemeral range are only ever taken by an explicit bind.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOWEST = 10_000
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_start() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, outside the ephemeral range when possible."""
    pick = random.SystemRandom()  # not the seeded global generator: runs must not repeat picks
    top = _ephemeral_start()
    for _ in range(100 if top > _LOWEST else 0):
        port = pick.randrange(_LOWEST, top)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen
