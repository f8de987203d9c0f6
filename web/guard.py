"""What the API refuses to register: HTTP servers on internal addresses (SSRF) and stdio
commands outside the operator's allowlist.

Addresses are checked after the operating system's own parsing (``getaddrinfo``), so every
spelling of an address counts as that address: ``0177.0.0.1``, ``2130706433`` and
``0x7f000001`` are all 127.0.0.1, and ``::ffff:127.0.0.1`` is too.
"""

from __future__ import annotations

import ipaddress
import logging
import shlex
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import trio

from trio_mcp import HttpTransport, ServerConfig, StdioTransport

from .errors import ForbiddenError

logger = logging.getLogger("web.registry")

RESOLVE_TIMEOUT = 2.0
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def refused_address(address: IPAddress) -> str | None:
    """Why a server at ``address`` may not be registered without ``--allow-private-urls``
    (``None``: it may)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local (where cloud metadata services live)"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.is_private or address.is_reserved or not address.is_global:
        return "private"
    return None


def _host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


async def addresses_of(host: str) -> list[IPAddress]:
    """What ``host`` resolves to, as the connection would see it (empty: it does not resolve,
    and the connection will fail anyway)."""
    try:
        infos: list[Any] = await trio.socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        infos = []
        with trio.move_on_after(RESOLVE_TIMEOUT):
            try:
                infos = await trio.socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError):
                infos = []
    out: list[IPAddress] = []
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]  # an IPv6 zone
        try:
            out.append(ipaddress.ip_address(text))
        except ValueError:
            continue
    return out


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

    async def check(self, config: ServerConfig, *, url: bool = True) -> None:
        """Refuse (403) a server these rules do not allow (``url=False``: its URL was checked
        already, in whatever spelling it was given)."""
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
        elif url and isinstance(transport, HttpTransport) and not self.allow_private_urls:
            await check_url(transport.url)
