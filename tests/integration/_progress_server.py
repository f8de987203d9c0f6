"""A small MCP server (the SDK's ``MCPServer``, over stdio) for the CLI's tests.

Tools: ``count(steps)`` reports progress after each step, ``fail(reason)`` answers with
``isError``, and ``die()`` ends the server's process while the call runs (so whether it ran
is unknown to the caller).
"""

from __future__ import annotations

import os

import trio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("progress")


@server.tool(description="Count to steps, reporting progress after each step.")
async def count(steps: int, ctx: Context) -> str:
    for step in range(1, steps + 1):
        await trio.sleep(0.02)
        await ctx.report_progress(step, steps, f"step {step} of {steps}")
    return f"counted to {steps}"


@server.tool(description="Answer with an error.")
async def fail(reason: str = "it broke") -> str:
    raise ToolError(reason)


@server.tool(description="End this server's process while the call runs.")
async def die() -> str:
    os._exit(1)


if __name__ == "__main__":
    trio.run(server.run_stdio_async)
