"""An HTTP server that answers 401 (virtual time: the HTTP client's transport is replaced by an
in-process handler, so no socket is opened and the clock can jump)."""

from __future__ import annotations

import httpx2
import pytest
import trio
import trio.testing
from _fleet import policy

import trio_mcp
from trio_mcp import ServerStatus


class Guard:
    """Answers every request with 401, recording the Authorization header it got."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.seen.append((request.method, request.headers.get("authorization")))
        return httpx2.Response(401, headers={"WWW-Authenticate": "Bearer"}, json={"error": "unauthorized"})


@pytest.fixture
def guard(monkeypatch: pytest.MonkeyPatch) -> Guard:
    handler = Guard()
    monkeypatch.setattr(httpx2, "AsyncHTTPTransport", lambda *args, **kwargs: httpx2.MockTransport(handler))
    return handler


async def test_401_is_auth_required_and_never_unreachable(
    guard: Guard, autojump_clock: trio.testing.MockClock
) -> None:
    config = trio_mcp.ServerConfig(
        name="guarded",
        transport=trio_mcp.HttpTransport(
            url="http://guarded.test/mcp", auth=trio_mcp.BearerAuth(token="wrong-token")
        ),
        policy=policy(unreachable_threshold=2),
    )
    async with trio_mcp.open_manager([config]) as manager:
        # Backoff 1, 2, 4 s (no jitter): the fourth refused handshake is at t = 7.
        snap = await manager.wait_for("guarded", lambda s: s.consecutive_failures == 4)
        assert trio.current_time() == 7.0
        assert (snap.status, snap.last_error_category) == (ServerStatus.DEGRADED, "auth_required")
        assert snap.last_error is not None and snap.last_error.startswith("HTTP 401: ")
        assert not snap.session.active
        # Past the unreachable threshold, still only ever degraded: the server answered.
        events = manager.connection_events(server="guarded")
        assert [(e.from_status, e.to_status, e.category) for e in events] == [
            ("unknown", "degraded", "auth_required")
        ]
        # Every attempt sent the configured credentials.
        assert guard.seen and all(seen == ("POST", "Bearer wrong-token") for seen in guard.seen)

        # An invocation once the retry window is open: refused at the handshake, never sent.
        assert snap.retry_at is not None
        await trio.sleep_until(snap.retry_at)
        with pytest.raises(trio_mcp.InvocationFailedError) as info:
            await manager.call_tool("echo", {"text": "x"})
        assert info.value.outcome == "failed"
        assert [(a.server, a.stage, a.category, a.sent) for a in info.value.attempts] == [
            ("guarded", "handshake", "auth_required", False)
        ]
        assert manager.server("guarded").status is ServerStatus.DEGRADED
