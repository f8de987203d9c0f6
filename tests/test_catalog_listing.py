"""Listing a server's catalog at the handshake: every page, and a listing that fails."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from _fleet import policy
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR

import trio_mcp


class PagedServer:
    """An SDK server with two tools whose ``tools/list`` answers one tool per page, and can be
    made to fail."""

    def __init__(self) -> None:
        self.fail_listing = False
        self.cursors: list[str | None] = []
        self.server = MCPServer("paged")

        @self.server.tool()
        async def echo(text: str) -> str:
            return text

        @self.server.tool()
        async def shout(text: str) -> str:
            return text.upper()

        self.server._lowlevel_server.middleware.insert(0, self._middleware)

    async def _middleware(self, ctx: Any, call_next: Any) -> Any:
        if ctx.method != "tools/list":
            return await call_next(ctx)
        if self.fail_listing:
            raise MCPError(INTERNAL_ERROR, "cannot list")
        cursor = (ctx.params or {}).get("cursor")
        self.cursors.append(cursor)
        full = await call_next(ctx)
        if cursor is None:
            return {**full, "tools": full["tools"][:1], "nextCursor": "page-2"}
        return {**full, "tools": full["tools"][1:]}

    def config(self) -> trio_mcp.ServerConfig:
        return trio_mcp.ServerConfig(
            name="paged", transport=trio_mcp.MemoryTransport(server=self.server), policy=policy()
        )


async def test_every_page_of_the_catalog_is_listed(autojump_clock: trio.testing.MockClock) -> None:
    paged = PagedServer()
    async with trio_mcp.open_manager([paged.config()]) as manager:
        await manager.wait_for("paged", lambda s: s.session.active)
        assert paged.cursors == [None, "page-2"]
        # The tool on the second page is known: routed to; an unknown tool is not.
        assert manager.candidates("tools/call", "shout") == ["paged"]
        assert manager.candidates("tools/call", "nope") == []
        assert sorted(entry.key for entry in await manager.list_tools()) == ["echo", "shout"]


async def test_a_failed_listing_leaves_the_catalog_unknown_until_it_succeeds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    paged = PagedServer()
    paged.fail_listing = True
    async with trio_mcp.open_manager([paged.config()]) as manager:
        snap = await manager.wait_for("paged", lambda s: s.session.active)
        # Connected all the same; with no known tool list, nothing is filtered out.
        assert snap.status is trio_mcp.ServerStatus.HEALTHY
        assert manager.candidates("tools/call", "nope") == ["paged"]
        assert paged.cursors == []
        # Listing is retried every health interval (10 s) until it works.
        paged.fail_listing = False
        await trio.sleep(10.5)
        assert paged.cursors == [None, "page-2"]
        assert manager.candidates("tools/call", "nope") == []
        assert manager.candidates("tools/call", "shout") == ["paged"]
