"""The fleet ``trio-mcp serve`` runs when no ``--config`` is given: two demo servers over stdio."""

from __future__ import annotations

import sys

from ._config import ServerConfig, StdioTransport

DEFAULT_FLEET_NAMES = ("primary", "backup")


def demo_server_config(name: str) -> ServerConfig:
    """A stdio :class:`ServerConfig` running ``python -m trio_mcp.demo_server --name <name>``."""
    return ServerConfig(
        name=name,
        transport=StdioTransport(
            command=sys.executable,
            args=("-m", "trio_mcp.demo_server", "--name", name),
        ),
    )


def default_fleet() -> list[ServerConfig]:
    """A ``primary`` and a ``backup`` instance of the demo server."""
    return [demo_server_config(name) for name in DEFAULT_FLEET_NAMES]
