"""A small MCP server (the SDK's ``MCPServer``, over stdio) whose tool list changes by itself.

Tools: ``echo(text)``, ``pid()`` and ``ask_roots_later(seconds)``, which returns at once and
``seconds`` later, outside any request, asks the client for its roots (``roots/list``: a
2025-11-25 server may) and writes the URIs it got, one per line, to the file named by
``TRIO_MCP_TEST_ROOTS``. Once the file named by ``TRIO_MCP_TEST_TRIGGER`` exists, a tool ``late``
is added and ``notifications/tools/list_changed`` is announced to its list-change streams every
50 ms (a stream held only later still hears it).
"""

from __future__ import annotations

import os
import warnings

import trio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.subscriptions import ToolsListChanged

TRIGGER_ENV = "TRIO_MCP_TEST_TRIGGER"
ROOTS_ENV = "TRIO_MCP_TEST_ROOTS"

bus = InMemorySubscriptionBus()
server = MCPServer("changing", subscriptions=bus)


@server.tool()
async def echo(text: str) -> str:
    return text


@server.tool()
async def pid() -> int:
    return os.getpid()


background: trio.Nursery | None = None


@server.tool()
async def ask_roots_later(seconds: float, ctx: Context) -> str:
    session = ctx.session
    assert background is not None

    async def ask() -> None:
        await trio.sleep(seconds)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # roots are deprecated at 2026-07-28; this is 2025-11-25
            listed = await session.list_roots()
        lines = "".join(f"{root.uri}\n" for root in listed.roots)
        await trio.Path(os.environ[ROOTS_ENV]).write_text(lines)

    background.start_soon(ask)
    return "asked later"


async def late() -> str:
    return "late"


async def change_when_triggered(trigger: trio.Path) -> None:
    while not await trigger.exists():  # noqa: ASYNC110 (a file has no event to wait on)
        await trio.sleep(0.05)
    server.add_tool(late, name="late")
    while True:
        await bus.publish(ToolsListChanged())
        await trio.sleep(0.05)


async def main() -> None:
    global background
    async with trio.open_nursery() as nursery:
        background = nursery
        trigger = os.environ.get(TRIGGER_ENV)
        if trigger is not None:
            nursery.start_soon(change_when_triggered, trio.Path(trigger))
        await server.run_stdio_async()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
