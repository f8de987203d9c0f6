"""Catalogs: what each server offers, fetched at handshake, and checking arguments against it.

A server's tools, resources and prompts are listed when its session is opened (for the kinds
it advertises) and again when it says a list changed, so routing knows from the first call
which servers offer a tool, and arguments can be checked before any server is touched.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
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


class SharedItems:
    """Catalog items that several servers of one manager describe alike (replicas of one
    server, most often), held once: a fleet of replicas holds one copy of their tools'
    descriptions and schemas, not one per server.

    Items are compared whole (``==``: every field, schemas included), so an item is only ever
    shared with an equal one. Held weakly: an item goes when no catalog holds it any more.
    """

    __slots__ = ("__weakref__", "_held")

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], list[weakref.ref[Any]]] = {}

    def share(self, kind: str, key: str, item: Any) -> Any:
        """The item held for ``kind`` and ``key`` that equals ``item``, or ``item`` itself
        (now held)."""
        refs = self._held.setdefault((kind, key), [])
        for ref in refs:
            known = ref()
            if known is not None and known == item:
                return known
        refs.append(weakref.ref(item, _Forget(weakref.ref(self), (kind, key))))
        return item

    def _forget(self, slot: tuple[str, str], ref: weakref.ref[Any]) -> None:
        refs = self._held.get(slot)
        if refs is not None:
            if ref in refs:
                refs.remove(ref)
            if not refs:
                del self._held[slot]

    def __len__(self) -> int:
        """How many distinct items are held."""
        return sum(len(refs) for refs in self._held.values())


class _Forget:
    """A held item went: its reference leaves the table (if the table is still there)."""

    __slots__ = ("_owner", "_slot")

    def __init__(self, owner: weakref.ref[SharedItems], slot: tuple[str, str]) -> None:
        self._owner = owner
        self._slot = slot

    def __call__(self, ref: weakref.ref[Any]) -> None:
        owner = self._owner()
        if owner is not None:
            owner._forget(self._slot, ref)


def listing(kind: str, items: Sequence[Any], shared: SharedItems | None = None) -> Listing:
    """``items`` of ``kind`` by key, each with its compiled argument check (with ``shared``:
    each item equal to one another server described is that server's)."""
    if shared is None:
        by_key = {key_of(kind, item): item for item in items}
    else:
        by_key = {(key := key_of(kind, item)): shared.share(kind, key, item) for item in items}
    checks = {key: check for key, item in by_key.items() if (check := compile_check(kind, item)) is not None}
    return Listing(by_key, checks)


Pages = Callable[[str, str | None], Awaitable[Any]]
"""One page of a listing: ``(kind, cursor)`` to a ``List*Result`` (its items under the kind's
name, and ``next_cursor``)."""


def session_pages(session: ClientSession) -> Pages:
    """Pages listed through an SDK session."""

    async def page(kind: str, cursor: str | None) -> Any:
        params = PaginatedRequestParams(cursor=cursor)
        if kind == "tools":
            return await session.list_tools(params=params)
        if kind == "resources":
            return await session.list_resources(params=params)
        if kind == "prompts":
            return await session.list_prompts(params=params)
        raise ValueError(f"unknown catalog kind {kind!r}")

    return page


async def list_kind(pages: Pages, kind: str) -> list[Any]:
    """Every item of ``kind`` (``tools`` / ``resources`` / ``prompts``), all pages."""
    if kind not in CATALOG_KINDS:
        raise ValueError(f"unknown catalog kind {kind!r}")
    items: list[Any] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = await pages(kind, cursor)
        items.extend(getattr(page, kind))
        cursor = page.next_cursor
        if not cursor:
            break
    return items


def offered_kinds(capabilities: Mapping[str, Any]) -> list[str]:
    """The catalog kinds a server says it has, from its capabilities as a capability snapshot
    holds them (JSON)."""
    return [kind for kind in CATALOG_KINDS if capabilities.get(kind) is not None]


def listened_kinds(capabilities: Mapping[str, Any]) -> tuple[str, ...]:
    """The catalog kinds whose changes a server says it announces, from its capabilities as
    a capability snapshot holds them (JSON, e.g. ``{"tools": {"listChanged": true}}``)."""
    kinds = []
    for kind in ("tools", "prompts", "resources"):
        advertised = capabilities.get(kind)
        if isinstance(advertised, Mapping) and advertised.get("listChanged") is True:
            kinds.append(kind)
    return tuple(kinds)


async def fetch_catalog(
    pages: Pages, kinds: Sequence[str], timeout: float, shared: SharedItems | None = None
) -> Catalog:
    """List ``kinds`` from ``pages``, best effort: a kind that fails (or takes longer than
    ``timeout`` altogether) stays unknown, and is listed again on the next listing."""
    catalog = Catalog()
    with trio.move_on_after(timeout):
        for kind in kinds:
            try:
                items = await list_kind(pages, kind)
            except Exception as exc:
                logger.debug("listing %s failed: %s", kind, exc)
                continue
            catalog = catalog.with_kind(kind, listing(kind, items, shared))
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
