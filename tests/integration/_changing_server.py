"""A small MCP server (the SDK's ``MCPServer``, over stdio) whose tool list changes by itself.

Tools: ``echo(text)`` and ``pid()``. Once the file named by ``TRIO_MCP_TEST_TRIGGER`` exists, a
tool ``late`` is added and ``notifications/tools/list_changed`` is announced to its list-change
streams every 50 ms (a stream held only later still hears it).
"""

from __future__ import annotations

import os

import trio
from mcp.server.mcpserver import MCPServer
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.subscriptions import ToolsListChanged

TRIGGER_ENV = "TRIO_MCP_TEST_TRIGGER"

bus = InMemorySubscriptionBus()
server = MCPServer("changing", subscriptions=bus)


@server.tool()
async def echo(text: str) -> str:
    return text


@server.tool()
async def pid() -> int:
    return os.getpid()


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
    async with trio.open_nursery() as nursery:
        nursery.start_soon(change_when_triggered, trio.Path(os.environ[TRIGGER_ENV]))
        await server.run_stdio_async()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
