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


# ---------------------------------------------------------------------------------------------
# replicas describe their tools alike: one copy for all of them
# ---------------------------------------------------------------------------------------------


def replica(name: str, *, shout_schema: str = "text") -> trio_mcp.ServerConfig:
    """An SDK server with ``echo(text)`` and ``shout(<shout_schema>)``."""
    server = MCPServer("replica")

    @server.tool()
    async def echo(text: str) -> str:
        return text

    if shout_schema == "text":

        @server.tool()
        async def shout(text: str) -> str:
            return text.upper()
    else:

        @server.tool()
        async def shout(words: list[str]) -> str:  # same name, another schema
            return " ".join(words).upper()

    return trio_mcp.ServerConfig(
        name=name, transport=trio_mcp.MemoryTransport(server=server), policy=policy()
    )


def tools_of(manager: trio_mcp.Manager, name: str) -> Any:
    tools = manager._supervisors[name].state.catalog.tools
    assert tools is not None
    return tools


async def test_replicas_hold_one_copy_of_the_tools_they_describe_alike(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Three replicas list the same tools: each tool is held once for all of them (the same
    object), while a tool one server describes differently stays its own; and what is shared
    still routes and checks per server."""
    configs = [replica("a"), replica("b"), replica("c", shout_schema="words")]
    async with trio_mcp.open_manager(configs) as manager:
        for name in ("a", "b", "c"):
            await manager.wait_for(name, lambda s: s.session.active)
        a, b, c = (tools_of(manager, name) for name in ("a", "b", "c"))
        assert a["echo"] is b["echo"] is c["echo"]
        assert a["shout"] is b["shout"]
        assert c["shout"] is not a["shout"] and c["shout"] != a["shout"]
        assert len(manager._shared_items) == 3  # echo, and shout twice
        # Arguments shaped for c's shout go to c only, the others' to a or b.
        assert (await manager.invoke("tools/call", "shout", {"words": ["hi"]})).server == "c"
        assert (await manager.invoke("tools/call", "shout", {"text": "hi"})).server in ("a", "b")


def test_shared_items_are_compared_whole_and_held_weakly() -> None:
    import gc

    from mcp_types import Tool

    from trio_mcp._catalog import SharedItems, listing

    shared = SharedItems()
    schema = {"type": "object", "properties": {"text": {"type": "string"}}}
    first = listing("tools", [Tool(name="echo", input_schema=schema)], shared)
    same = listing("tools", [Tool(name="echo", input_schema=dict(schema))], shared)
    described = listing("tools", [Tool(name="echo", input_schema=schema, description="Echo.")], shared)
    assert same["echo"] is first["echo"]
    assert described["echo"] is not first["echo"]
    assert len(shared) == 2
    del first, same, described
    gc.collect()
    assert len(shared) == 0  # nothing holds them: the table forgets them
    assert shared._held == {}
