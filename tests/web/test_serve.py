"""``web.serve.serve``: graceful shutdown gives in-flight invocations a clear outcome (real clock)."""

from __future__ import annotations

import functools

import httpx
import pytest
import trio

from trio_mcp.testing import ScriptedServer, memory_server
from web.serve import serve

pytestmark = pytest.mark.integration


async def test_shutdown_answers_in_flight_invocations(nursery: trio.Nursery) -> None:
    server = ScriptedServer("a")
    server.hang_tool("charge")
    stop = trio.Event()
    with trio.fail_after(20):
        binds = await nursery.start(
            functools.partial(
                serve, [memory_server(server)], port=0, shutdown_grace=1.0, shutdown_trigger=stop.wait
            )
        )
        base = binds[0]
        async with httpx.AsyncClient(base_url=base, timeout=15) as client:
            response: httpx.Response | None = None

            async def invoke() -> None:
                nonlocal response
                response = await client.post(
                    "/api/v1/mcp/invoke/tool",
                    json={"tool_name": "charge", "arguments": {"amount": 5}, "preferred_servers": ["a"]},
                )

            async with trio.open_nursery() as calls:
                calls.start_soon(invoke)
                while server.executions("charge") == 0:  # noqa: ASYNC110 (a counter, not an event)
                    await trio.sleep(0.01)
                start = trio.current_time()
                stop.set()
            assert response is not None
            assert 0.9 < trio.current_time() - start < 3.0
            assert response.status_code == 503
            detail = response.json()["detail"]
            assert detail["outcome"] == "unknown"
            assert detail["attempts"][-1]["error_category"] == "shutdown"
            assert detail["attempts"][-1]["sent"] is True
    assert server.executions("charge") == 1
