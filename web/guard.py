"""What the API refuses to register: HTTP servers on internal addresses (SSRF) and stdio
commands outside the operator's allowlist.

Addresses are checked after the operating system's own parsing (``getaddrinfo``), so every
spelling of an address counts as that address: ``0177.0.0.1``, ``2130706433`` and
``0x7f000001`` are all 127.0.0.1, and ``::ffff:127.0.0.1`` is too.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from trio_mcp import HttpTransport, ServerConfig, StdioTransport
from trio_mcp._addresses import addresses_of, refused_address

from .errors import ForbiddenError

logger = logging.getLogger("web.registry")


def _host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


async def check_url(url: Any) -> None:
    """Refuse (403) a URL whose host is, or resolves to, an internal address."""
    if not isinstance(url, str):
        return  # validation says what is wrong with it
    host = _host(url)
    if not host:
        return
    for address in await addresses_of(host):
        reason = refused_address(address)
        if reason is not None:
            raise ForbiddenError(
                f"{host} is {address}, a {reason} address: registering it needs the API to run "
                "with --allow-private-urls",
                field="url",
            )


def parse_prefixes(prefixes: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """``--allow-stdio-command`` values (shell words) as argv prefixes."""
    return tuple(tuple(shlex.split(p)) for p in prefixes if p.strip())


def check_command(argv: Sequence[str], allowed: tuple[tuple[str, ...], ...] | None) -> None:
    """Refuse (403) a stdio command that starts with none of the ``allowed`` argv prefixes
    (``None``: every command is allowed)."""
    if allowed is None:
        return
    if not any(tuple(argv[: len(prefix)]) == prefix for prefix in allowed):
        raise ForbiddenError(
            "this command is not in the API's allowlist (--allow-stdio-command)", field="command"
        )


@dataclass(frozen=True)
class Admission:
    """Which servers this process agrees to run: the same rules for a registration it receives
    and for one that another replica stored (each replica applies its own flags)."""

    allow_stdio: bool = False
    stdio_commands: tuple[tuple[str, ...], ...] | None = None
    allow_private_urls: bool = False

    @classmethod
    def from_flags(
        cls, *, allow_stdio: bool, allow_stdio_commands: Sequence[str], allow_private_urls: bool
    ) -> Admission:
        commands = parse_prefixes(allow_stdio_commands) if allow_stdio_commands else None
        return cls(allow_stdio or commands is not None, commands, allow_private_urls)

    async def admit(self, config: ServerConfig, *, url: bool = True) -> ServerConfig:
        """``config`` as this process runs it, or 403 when these rules do not allow it
        (``url=False``: its URL was checked already, in whatever spelling it was given).

        Without ``allow_private_urls`` an HTTP server is also held to public addresses at every
        connection (:attr:`HttpTransport.public_only`): the name checked now may resolve
        elsewhere later, and its answers may name other URLs (OAuth discovery)."""
        transport = config.transport
        if isinstance(transport, StdioTransport):
            if not self.allow_stdio:
                raise ForbiddenError(
                    "registering a stdio server over HTTP would run a command on this host; "
                    "start the API with --allow-stdio-command (or --allow-stdio-registration) to "
                    "permit it",
                    field="command",
                )
            check_command([transport.command, *transport.args], self.stdio_commands)
        elif isinstance(transport, HttpTransport) and not self.allow_private_urls:
            if url:
                await check_url(transport.url)
            if not transport.public_only:
                config = replace(config, transport=replace(transport, public_only=True))
        return config
