"""Calls to a plain ``http://`` 2026-07-28 server go out as one POST each from the caller's
task (no SDK transport), against a real SDK server under hypercorn: what the answer's event
stream carries reaches the caller as it would through the SDK's transport."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from _support import policy, serve_asgi, text_of
from mcp.server.mcpserver import Context, MCPServer

import trio_mcp

pytestmark = pytest.mark.integration


def counting_server() -> MCPServer:
    server = MCPServer("web")

    @server.tool(description="Count to steps, one step every delay seconds, reporting progress.")
    async def count(steps: int, delay: float, ctx: Context) -> str:
        for step in range(1, steps + 1):
            await trio.sleep(delay)
            await ctx.report_progress(step, steps, f"step {step}")
        return f"counted to {steps}"

    @server.tool(description="Log a message, then answer.")
    async def chatty(ctx: Context) -> str:
        await ctx.info("working on it")
        return "done"

    return server


async def test_progress_on_the_answers_stream_reaches_the_caller_and_extends_the_attempt(
    nursery: trio.Nursery,
) -> None:
    """Five steps of 0.2 s under a 0.5 s attempt timeout: each progress notification extends the
    attempt, so the call succeeds in one attempt, and the caller's progress callback sees every
    step."""
    url = await serve_asgi(nursery, counting_server().streamable_http_app(host="127.0.0.1"))
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    config = trio_mcp.ServerConfig(
        name="web",
        transport=trio_mcp.HttpTransport(url=url),
        policy=policy(call_timeout=0.5, progress_hard_max=10.0, park_after=30.0),
    )
    with trio.fail_after(30):
        async with trio_mcp.open_manager([config]) as manager:
            await manager.wait_for("web", lambda snap: snap.session.active)
            outcome = await manager.invoke(
                "tools/call", "count", {"steps": 5, "delay": 0.2}, progress_callback=on_progress
            )
    assert text_of(outcome.result) == "counted to 5"
    assert [(a.stage, a.success) for a in outcome.attempts] == [("invoke", True)]
    assert outcome.attempts[0].duration > 0.5
    assert seen == [(step, 5, f"step {step}") for step in range(1, 6)]


async def test_a_log_message_on_the_answers_stream_reaches_the_logging_callback_and_message_handler(
    nursery: trio.Nursery,
) -> None:
    """The session asks for log messages (``log_level``): the one the tool logs while answering
    reaches the logging callback and the message handler, typed, before the call returns, as
    through the SDK's own session."""
    url = await serve_asgi(nursery, counting_server().streamable_http_app(host="127.0.0.1"))
    logged: list[Any] = []
    heard: list[str] = []

    async def on_log(params: Any) -> None:
        logged.append(params)

    async def on_message(message: Any) -> None:
        heard.append(type(message).__name__)

    options = {"logging_callback": on_log, "message_handler": on_message, "log_level": "info"}
    config = trio_mcp.ServerConfig(
        name="web", transport=trio_mcp.HttpTransport(url=url), policy=policy(park_after=30.0)
    )
    with trio.fail_after(30):
        async with trio_mcp.open_manager([config], session_options=options) as manager:
            await manager.wait_for("web", lambda snap: snap.session.active)
            result = await manager.call_tool("chatty")
            assert text_of(result) == "done"
            assert [(entry.level, entry.data) for entry in logged] == [("info", "working on it")]
            assert heard == ["LoggingMessageNotification"]
