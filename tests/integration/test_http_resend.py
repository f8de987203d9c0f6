"""A tool call whose connection broke after it was written is not sent again by the HTTP
transport (the tool may have run): a real streamable-HTTP server (hypercorn) behind a
:class:`~trio_mcp.testing.FaultProxy` that resets the connection before the answer. (Requests
that may be received twice are sent again: ``tests/test_transports.py``.)"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio

import trio_mcp
from trio_mcp.demo_server import build_server, serve_http
from trio_mcp.testing import FaultProxy

pytestmark = pytest.mark.integration


@asynccontextmanager
async def proxied_server() -> AsyncIterator[tuple[trio_mcp.Manager, FaultProxy, Counter[str]]]:
    """A demo server counting its ``tools/call`` and ``tools/list`` requests, behind a proxy."""
    server = build_server("a")
    requests: Counter[str] = Counter()

    async def count(ctx: Any, call_next: Any) -> Any:
        if ctx.method == "tools/call":
            requests[ctx.params["arguments"].get("invocation_id") or "?"] += 1
        else:
            requests[ctx.method] += 1
        return await call_next(ctx)

    server._lowlevel_server.middleware.insert(0, count)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve_http, server, 0))
        async with FaultProxy(int(binds[0].rsplit(":", 1)[1])) as proxy:
            config = trio_mcp.ServerConfig(
                name="a",
                transport=trio_mcp.HttpTransport(url=proxy.url("/mcp")),
                policy=trio_mcp.ServerPolicy(health_interval=3600, call_timeout=10),
            )
            async with trio_mcp.open_manager([config]) as manager:
                await manager.wait_for("a", lambda s: s.session.active)
                await manager.call_tool("charge", {"amount": 1, "invocation_id": "warm-up"})
                yield manager, proxy, requests
        nursery.cancel_scope.cancel()


async def test_a_tool_call_cut_before_its_answer_runs_once() -> None:
    async with proxied_server() as (manager, proxy, requests):
        proxy.reset_after(0, direction="downstream")  # the request goes through, no answer comes back
        with pytest.raises(trio_mcp.InvocationFailedError) as info:
            await manager.call_tool(
                "charge", {"amount": 2, "invocation_id": "once"}, failover="never", timeout=10
            )
        proxy.heal()
        assert info.value.outcome == "unknown"
        (attempt,) = info.value.attempts
        assert attempt.sent is True
    assert requests["once"] == 1
