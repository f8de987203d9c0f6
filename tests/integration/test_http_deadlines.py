"""Deadlines and auth against real streamable HTTP servers (hypercorn's trio worker), real clock."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from _support import free_port, policy, text_of

import trio_mcp
from trio_mcp import ServerSnapshot, ServerStatus
from trio_mcp.demo_server import build_server

pytestmark = pytest.mark.integration


def ready(snap: ServerSnapshot) -> bool:
    return snap.status is ServerStatus.HEALTHY and snap.session.active


class HangSwitch:
    """Wraps an ASGI app; once ``hung`` is set, requests are accepted and never answered."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.hung = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.hung:
            await trio.sleep_forever()
        await self.inner(scope, receive, send)


async def _serve(app: Any, port: int, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.5
    await serve(app, config, task_status=task_status)


@asynccontextmanager
async def _stalls() -> AsyncIterator[Callable[[], float]]:
    """How long the event loop stood still in all, beyond 50 ms at a time, while in the block:
    a task that asks to wake every 10 ms measures how late it wakes."""
    late = 0.0

    async def watch() -> None:
        nonlocal late
        while True:
            before = time.monotonic()
            await trio.sleep(0.01)
            overdue = time.monotonic() - before - 0.01
            if overdue > 0.05:
                late += overdue

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        yield lambda: late
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("protocol", ["legacy", "auto"])
async def test_deadline_holds_against_a_hung_http_server(nursery: trio.Nursery, protocol: str) -> None:
    """A server that stops answering HTTP altogether. Each abandoned request's cancel notice goes
    through the SDK's single HTTP writer, which the hung server blocks; on the legacy era the
    SDK's own cancellation would hold a caller ~5 s past its deadline. Ours holds."""
    port = free_port()
    switch = HangSwitch(build_server("slow").streamable_http_app(host="127.0.0.1"))
    await nursery.start(_serve, switch, port)
    config = trio_mcp.ServerConfig(
        name="slow",
        transport=trio_mcp.HttpTransport(url=f"http://127.0.0.1:{port}/mcp"),
        policy=policy(protocol=protocol, health_interval=60, unreachable_threshold=10),
    )
    with trio.fail_after(40):
        async with trio_mcp.open_manager([config]) as manager:
            await manager.wait_for("slow", ready)
            assert text_of(await manager.call_tool("echo", {"text": "up"})) == "up"
            switch.hung = True
            for _ in range(3):
                start = trio.current_time()
                async with _stalls() as stalled:
                    with pytest.raises(trio_mcp.InvocationFailedError) as info:
                        await manager.call_tool("echo", {"text": "lost"}, attempt_timeout=1)
                elapsed = trio.current_time() - start
                # Held to its deadline, give or take the moments when this process did not run
                # at all (a loaded machine): those delay every task alike.
                assert 1.0 <= elapsed < 1.5 + stalled(), (elapsed, stalled())
                assert info.value.outcome == "unknown"
                assert info.value.attempts[-1].category == "timeout"
            # The server comes back: the next call succeeds (on this session or a fresh one).
            switch.hung = False
            with trio.fail_after(15):
                while True:
                    try:
                        result = await manager.call_tool("echo", {"text": "back"}, attempt_timeout=2)
                        break
                    except trio_mcp.InvocationFailedError:
                        await trio.sleep(0.2)
            assert text_of(result) == "back"


async def _serve_with_token(port: int, token: str, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve
    from starlette.responses import JSONResponse

    inner = build_server("guarded").streamable_http_app(host="127.0.0.1")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            if headers.get(b"authorization") != f"Bearer {token}".encode():
                await JSONResponse({"error": "unauthorized"}, status_code=401)(scope, receive, send)
                return
        await inner(scope, receive, send)

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.5
    await serve(app, config, task_status=task_status)  # type: ignore[arg-type]


async def test_http_401_is_auth_required_not_unreachable(nursery: trio.Nursery) -> None:
    port = free_port()
    await nursery.start(_serve_with_token, port, "s3cret")
    url = f"http://127.0.0.1:{port}/mcp"
    fast = policy(unreachable_threshold=2, backoff=trio_mcp.BackoffPolicy(initial=0.1, cap=0.2, jitter=0))
    configs = [
        trio_mcp.ServerConfig(name="anonymous", transport=trio_mcp.HttpTransport(url=url), policy=fast),
        trio_mcp.ServerConfig(
            name="authorized",
            transport=trio_mcp.HttpTransport(url=url, headers={"Authorization": "Bearer s3cret"}),
            policy=fast,
        ),
    ]
    with trio.fail_after(30):
        async with trio_mcp.open_manager(configs) as manager:
            await manager.wait_for("authorized", ready)
            await manager.wait_for("anonymous", lambda s: s.consecutive_failures >= 4)
            snap = manager.server("anonymous")
            assert snap.last_error_category == "auth_required"
            assert snap.status is ServerStatus.DEGRADED  # it answered: never "unreachable"
            assert all(e.to_status != "unreachable" for e in manager.connection_events(server="anonymous"))
            result = await manager.call_tool("echo", {"text": "ok"}, preferred=["anonymous", "authorized"])
            assert text_of(result) == "ok"
