"""Which network addresses a server may live at when only public ones are allowed (SSRF), and a
connection backend that checks the address it actually connects to.

A registration's URL is checked when it is made, but a host name can resolve elsewhere later
(DNS rebinding), and a server's answers name more URLs to fetch (OAuth discovery). So a
connection that must stay public resolves the host itself, refuses every internal address,
and connects to the address it checked: there is no second lookup to rebind.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import httpcore2
import trio

RESOLVE_TIMEOUT = 2.0
"""Seconds a host name gets to resolve when a URL is checked."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def refused_address(address: IPAddress) -> str | None:
    """Why a server may not live at ``address`` when only public addresses are allowed
    (``None``: it may). Every spelling of an address is one :mod:`ipaddress` value."""
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


def _parse(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 zone
    except ValueError:
        return None


async def addresses_of(host: str) -> list[IPAddress]:
    """What ``host`` resolves to, as a connection would see it (empty: it does not resolve
    within :data:`RESOLVE_TIMEOUT`, and a connection would fail anyway)."""
    try:
        infos: list[Any] = await trio.socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        infos = []
        with trio.move_on_after(RESOLVE_TIMEOUT):
            try:
                infos = await trio.socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError):
                infos = []
    return [address for info in infos if (address := _parse(str(info[4][0]))) is not None]


class InternalAddressError(httpcore2.ConnectError):
    """A connection that must stay public would have reached an internal address."""


class PublicOnlyBackend(httpcore2.AsyncNetworkBackend):
    """Connects only to public addresses: resolves the host, refuses the connection when any
    address it resolves to is internal, and connects to the first address it checked."""

    def __init__(self, inner: httpcore2.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner if inner is not None else httpcore2.TrioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        addresses = await addresses_of(host)
        if not addresses:
            raise httpcore2.ConnectError(f"{host} does not resolve")
        for address in addresses:
            reason = refused_address(address)
            if reason is not None:
                shown = host if host == str(address) else f"{host} ({address})"
                raise InternalAddressError(
                    f"refused to connect to {shown}: a {reason} address (only public addresses are allowed)"
                )
        return await self._inner.connect_tcp(
            str(addresses[0]),
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        raise InternalAddressError(f"refused to connect to the unix socket {path}")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
