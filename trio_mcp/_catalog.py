"""Catalogs: what each server offers, fetched at handshake, and checking arguments against it.

A server's tools, resources and prompts are listed when its session is opened (for the kinds
it advertises) and again when it says a list changed, so routing knows from the first call
which servers offer a tool, and arguments can be checked before any server is touched.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio
from mcp.client.session import ClientSession
from mcp_types import PaginatedRequestParams, Prompt, Resource, Tool

from ._arguments import compile_check
from ._state import CATALOG_KINDS, Catalog, Listing

logger = logging.getLogger("trio_mcp")

MAX_PAGES = 1000
"""A listing stops after this many pages (a server that keeps sending cursors)."""


@dataclass(frozen=True, kw_only=True)
class CatalogEntry:
    """A tool, resource or prompt and the servers that offer it (in fleet order).

    Tools with one name but different input schemas on different servers are separate
    entries, so a name collision is visible.
    """

    key: str
    servers: tuple[str, ...]
    item: Tool | Resource | Prompt


def key_of(kind: str, item: Any) -> str:
    return str(item.uri) if kind == "resources" else str(item.name)


def listing(kind: str, items: Sequence[Any]) -> Listing:
    """``items`` of ``kind`` by key, each with its compiled argument check."""
    by_key = {key_of(kind, item): item for item in items}
    checks = {key: check for key, item in by_key.items() if (check := compile_check(kind, item)) is not None}
    return Listing(by_key, checks)


async def _list_pages(fetch: Callable[[str | None], Awaitable[Any]], attr: str) -> list[Any]:
    items: list[Any] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = await fetch(cursor)
        items.extend(getattr(page, attr))
        cursor = page.next_cursor
        if not cursor:
            break
    return items


async def list_kind(session: ClientSession, kind: str) -> list[Any]:
    """Every item of ``kind`` (``tools`` / ``resources`` / ``prompts``) on ``session``, all pages."""
    if kind == "tools":
        return await _list_pages(lambda c: session.list_tools(params=PaginatedRequestParams(cursor=c)), kind)
    if kind == "resources":
        return await _list_pages(
            lambda c: session.list_resources(params=PaginatedRequestParams(cursor=c)), kind
        )
    if kind == "prompts":
        return await _list_pages(
            lambda c: session.list_prompts(params=PaginatedRequestParams(cursor=c)), kind
        )
    raise ValueError(f"unknown catalog kind {kind!r}")


def advertised_kinds(session: ClientSession) -> list[str]:
    """The catalog kinds the server says it has."""
    caps = session.server_capabilities
    if caps is None:
        return []
    return [kind for kind in CATALOG_KINDS if getattr(caps, kind, None) is not None]


async def fetch_catalog(session: ClientSession, kinds: Sequence[str], timeout: float) -> Catalog:
    """List ``kinds`` on ``session``, best effort: a kind that fails (or takes longer than
    ``timeout`` altogether) stays unknown, and is listed again on the next listing."""
    catalog = Catalog()
    with trio.move_on_after(timeout):
        for kind in kinds:
            try:
                items = await list_kind(session, kind)
            except Exception as exc:
                logger.debug("listing %s failed: %s", kind, exc)
                continue
            catalog = catalog.with_kind(kind, listing(kind, items))
    return catalog


def merge(kind: str, listings: Sequence[tuple[str, Sequence[Any]]]) -> list[CatalogEntry]:
    """One entry per distinct item (tools: per name and input schema) with the servers that
    offer it, in fleet order."""
    entries: dict[tuple[str, str], tuple[list[str], Any]] = {}
    for server, items in listings:
        for item in items:
            key = key_of(kind, item)
            shape = json.dumps(item.input_schema, sort_keys=True, default=str) if kind == "tools" else ""
            entries.setdefault((key, shape), ([], item))[0].append(server)
    return [CatalogEntry(key=k, servers=tuple(s), item=item) for (k, _), (s, item) in entries.items()]
