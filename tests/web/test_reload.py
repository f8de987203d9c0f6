"""Reloading the config file: POST /api/v1/mcp/reload and SIGHUP (real hypercorn, real clock)."""

from __future__ import annotations

import functools
import os
import signal
from typing import Any

import httpx
import pytest
import trio
from _fleet import policy

import trio_mcp
from trio_mcp.testing import ScriptedServer, memory_server
from web.reload import plan_reload
from web.serve import serve

pytestmark = pytest.mark.integration
API = "/api/v1/mcp"


def _config(name: str, **changes: Any) -> trio_mcp.ServerConfig:
    return trio_mcp.ServerConfig(
        name=name, transport=trio_mcp.HttpTransport(url=f"http://127.0.0.1:9/{name}"), **changes
    )


def test_the_plan_keeps_what_did_not_change_and_leaves_api_registrations_alone() -> None:
    running = {"a": _config("a"), "b": _config("b"), "api": _config("api"), "gone": _config("gone")}
    wanted = [_config("a"), _config("b", idempotent=True), _config("new")]
    plan = plan_reload(running, {"a", "b", "gone"}, wanted)
    assert plan.summary() == {"added": ["new"], "removed": ["gone"], "restarted": ["b"], "unchanged": ["a"]}
    # A name registered over the API that moves into the file is taken over (restarted).
    plan = plan_reload(running, {"a"}, [_config("a"), _config("api")])
    assert plan.summary() == {"added": [], "removed": [], "restarted": ["api"], "unchanged": ["a"]}


async def test_reload_and_sighup_follow_the_file() -> None:
    servers = {name: ScriptedServer(name) for name in ("a", "b", "c", "d")}
    fast = policy(health_interval=3600.0)
    configs = {name: memory_server(s, policy=fast) for name, s in servers.items()}
    file = [configs["a"], configs["b"]]
    stop = trio.Event()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                functools.partial(
                    serve, file, port=0, reload_from=lambda: list(file), shutdown_trigger=stop.wait
                )
            )
            async with httpx.AsyncClient(base_url=binds[0], timeout=10) as client:
                await client.post(f"{API}/servers/connect")

                async def session_ids() -> dict[str, tuple[int | None, float | None]]:
                    """Each server's session: its number and when it was opened."""
                    body = (await client.get(f"{API}/servers")).json()
                    return {
                        s["name"]: (s["adapter_session"]["session_id"], s["adapter_session"]["opened_at"])
                        for s in body["servers"]
                    }

                before = await session_ids()
                assert set(before) == {"a", "b"}
                # b changes, c is added.
                file[:] = [
                    configs["a"],
                    memory_server(servers["b"], policy=fast, idempotent=True),
                    configs["c"],
                ]
                response = await client.post(f"{API}/reload")
                assert response.status_code == 200, response.text
                assert response.json() == {
                    "added": ["c"],
                    "removed": [],
                    "restarted": ["b"],
                    "unchanged": ["a"],
                }
                await client.post(f"{API}/servers/connect")
                after = await session_ids()
                assert set(after) == {"a", "b", "c"}
                assert after["a"] == before["a"]  # untouched: the same session
                assert after["b"] != before["b"]
                # SIGHUP does the same: a and c go, d comes (and b, a new object, restarts).
                file[:] = [memory_server(servers["b"], policy=fast, idempotent=True), configs["d"]]
                os.kill(os.getpid(), signal.SIGHUP)
                while set(await session_ids()) != {"b", "d"}:  # noqa: ASYNC110 (polling the API)
                    await trio.sleep(0.05)
            stop.set()


async def test_reload_without_a_file_is_409_and_a_bad_file_changes_nothing() -> None:
    server = ScriptedServer("a")
    config = memory_server(server, policy=policy(health_interval=3600.0))

    def broken() -> list[trio_mcp.ServerConfig]:
        return trio_mcp.parse_mcp_servers({"mcpServers": {"a": {"command": "x", "callTimout": 1}}})

    stop = trio.Event()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            plain = await nursery.start(
                functools.partial(serve, [config], port=0, shutdown_trigger=stop.wait)
            )
            async with httpx.AsyncClient(base_url=plain[0], timeout=10) as client:
                response = await client.post(f"{API}/reload")
                assert response.status_code == 409
                assert response.json()["detail"]["error"] == "conflict"
            stop.set()
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                functools.partial(serve, [config], port=0, reload_from=broken, shutdown_trigger=stop.wait)
            )
            async with httpx.AsyncClient(base_url=binds[0], timeout=10) as client:
                response = await client.post(f"{API}/reload")
                assert response.status_code == 422
                assert "did you mean 'callTimeout'" in response.json()["detail"]["message"]
                names = [s["name"] for s in (await client.get(f"{API}/servers")).json()["servers"]]
                assert names == ["a"]
            stop.set()
