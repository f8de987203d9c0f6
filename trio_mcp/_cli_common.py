"""What the ``trio-mcp`` command's modules share: exit codes, where a command runs, and
reading an ``mcpServers`` file. Standard library only at import time (``--help`` stays quick)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._config import ServerConfig

EXIT_OK = 0
EXIT_TOOL_ERROR = 1
"""The tool answered with ``isError``."""
EXIT_USAGE = 2
"""The command cannot run as given: arguments, configuration, an unreachable API or a refused
token, a target no server offers, arguments a server's schema refuses."""
EXIT_FAILED = 3
"""Every candidate failed and the request ran nowhere (outcome ``failed``)."""
EXIT_UNKNOWN = 4
"""The request may have run (outcome ``unknown``)."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (but it is how ``events --follow`` ends: 0 there)."""


@dataclass(frozen=True, kw_only=True)
class Target:
    """A running API (``url``, ``token``) or an ``mcpServers`` file to run one-shot (``config``)."""

    url: str | None = None
    token: str | None = None
    config: Path | None = None


def load_fleet(path: Path | None) -> list[ServerConfig]:
    """The servers in the ``mcpServers`` file at ``path``, or the demo fleet.

    Raises:
        ConfigError: the file cannot be read or is not a valid ``mcpServers`` document.
    """
    from ._config import parse_mcp_servers
    from ._default_fleet import default_fleet
    from ._exceptions import ConfigError

    if path is None:
        return default_fleet()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    return parse_mcp_servers(text)
