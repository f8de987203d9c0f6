"""A 2026-07-28 server that says its lists can change but refuses ``subscriptions/listen``: the
stream is asked for again less and less often, never in a tight loop, and is held as soon as the
server serves it (real SDK server in memory, virtual time)."""

from __future__ import annotations

import httpx2
import trio
import trio.testing
from _fleet import policy
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, METHOD_NOT_FOUND, REQUEST_TIMEOUT

import trio_mcp
from trio_mcp._supervisor import LISTEN_REFUSED_MAX_WAIT, _refusal, listen_wait
from trio_mcp.testing import ScriptedServer, memory_server

LISTEN = "subscriptions/listen"


def refusing() -> tuple[ScriptedServer, trio_mcp.ServerConfig]:
    """A server that refuses the stream, probed every second and never parked."""
    server = ScriptedServer("s")
    server.refuse_listen()
    return server, memory_server(server, policy=policy(health_interval=1.0, park_after=None))


async def test_a_refused_stream_is_asked_for_again_less_and_less_often(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server, config = refusing()
    async with trio_mcp.open_manager([config]) as manager:
        await trio.sleep(600)
        asked = server.requests[LISTEN]
        # Doubling waits from the health interval (1, 2, 4, ... s) up to the bound: about ten
        # requests in ten minutes, where one a second would be six hundred.
        assert 6 <= asked <= 12
        await trio.sleep(LISTEN_REFUSED_MAX_WAIT)
        assert server.requests[LISTEN] == asked + 1  # at the bound, never beyond it
        assert manager.server("s").status == "healthy"  # a refused stream says nothing of health

        server.refuse_listen(False)
        await trio.sleep(LISTEN_REFUSED_MAX_WAIT + 1)
        held_after = server.requests[LISTEN]
        assert held_after == asked + 2  # asked once more: served, and held
        await trio.sleep(600)
        assert server.requests[LISTEN] == held_after  # a held stream is not asked for again


async def test_the_waits_start_over_on_a_new_connection(autojump_clock: trio.testing.MockClock) -> None:
    server, config = refusing()
    async with trio_mcp.open_manager([config]) as manager:
        await trio.sleep(300)
        before = server.requests[LISTEN]
        server.close_connections()  # a new connection, and a new stream task
        await manager.wait_for("s", lambda s: s.session.active and s.session.session_id == 2)
        await trio.sleep(3.5)
        # Asked at once on the new connection, then after 1 and 2 s.
        assert server.requests[LISTEN] - before == 3


def test_only_an_answer_with_an_error_is_a_refusal() -> None:
    request = httpx2.Request("POST", "http://127.0.0.1:9/mcp")
    status = httpx2.HTTPStatusError("405", request=request, response=httpx2.Response(405, request=request))
    assert _refusal(MCPError(METHOD_NOT_FOUND, "Method not found"))
    assert _refusal(status)
    assert not _refusal(MCPError(CONNECTION_CLOSED, "Connection closed"))  # no answer came
    assert not _refusal(MCPError(REQUEST_TIMEOUT, "Timed out"))
    assert not _refusal(httpx2.ReadError("reset"))


def test_the_wait_doubles_from_the_interval_up_to_the_bound() -> None:
    assert [listen_wait(1.0, n) for n in range(6)] == [1.0, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert listen_wait(1.0, 100) == LISTEN_REFUSED_MAX_WAIT
    assert listen_wait(600.0, 3) == 600.0  # never below the interval
