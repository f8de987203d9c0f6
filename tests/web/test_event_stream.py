"""``GET /api/v1/mcp/events/stream`` over real hypercorn (real clock): live events, filters,
resuming with ``Last-Event-ID``, the end at shutdown; readiness and the status page."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from _fleet import policy

from trio_mcp.testing import ScriptedServer, memory_server
from web.serve import serve

pytestmark = pytest.mark.integration

API = "/api/v1/mcp"


async def sse(response: httpx.Response) -> AsyncIterator[tuple[str | None, str, Any]]:
    """``(id, event, data)`` for every event of a server-sent event stream, after the
    ``: connected`` comment that says the stream is subscribed."""
    block: dict[str, str] = {}
    connected = False
    async for line in response.aiter_lines():
        if line == ": connected":
            connected = True
            yield None, "connected", None
        elif line == "":
            if "data" in block:
                assert connected
                yield block.get("id"), block.get("event", "message"), json.loads(block["data"])
            block = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            block[key] = value


@asynccontextmanager
async def running(
    *names: str, **options: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, ScriptedServer], trio.Event]]:
    servers = {name: ScriptedServer(name) for name in names}
    configs = [memory_server(s, policy=policy(health_interval=3600.0)) for s in servers.values()]
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            functools.partial(
                serve, configs, port=0, shutdown_grace=0.5, shutdown_trigger=stop.wait, **options
            )
        )
        async with httpx.AsyncClient(base_url=binds[0], timeout=10) as client:
            yield client, servers, stop
        stop.set()


async def test_live_events_filters_and_resume() -> None:
    with trio.fail_after(30):
        async with running("a", "b") as (client, servers, _):
            async with client.stream("GET", f"{API}/events/stream?server=a") as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                frames = sse(response)
                assert (await anext(frames))[1] == "connected"
                call = await client.post(
                    f"{API}/invoke/tool",
                    json={"tool_name": "echo", "arguments": {"text": "x"}, "preferred_servers": ["a"]},
                )
                request_id = call.json()["request_id"]
                await client.post(
                    f"{API}/invoke/tool",
                    json={"tool_name": "echo", "arguments": {"text": "y"}, "preferred_servers": ["b"]},
                )
                kinds = []
                last_id = None
                async for event_id, kind, data in frames:
                    assert (data["name"] if kind == "server" else data["server"]) == "a"
                    if kind == "invocation":
                        assert data["request_id"] == request_id
                        kinds.append(data["kind"])
                        last_id = event_id
                    if "invoke_success" in kinds:
                        break
                assert kinds[-2:] == ["invoke_start", "invoke_success"]
            assert last_id is not None and last_id.isdigit()
            # While nobody listens, a goes down.
            servers["a"].go_down()
            checked = await client.post(f"{API}/servers/a/health-check")
            assert checked.json()["status"] == "degraded"
            async with client.stream(
                "GET", f"{API}/events/stream?server=a", headers={"Last-Event-ID": last_id}
            ) as response:
                async for event_id, kind, data in sse(response):
                    if kind == "connected":
                        continue
                    assert event_id is not None and int(event_id) > int(last_id)
                    if kind == "connection":
                        assert (data["server"], data["from"], data["to"]) == ("a", "healthy", "degraded")
                        break
            missing = await client.get(f"{API}/events/stream?server=ghost")
            assert missing.status_code == 404


async def test_server_events_carry_the_full_payload_and_the_stream_ends_at_shutdown() -> None:
    with trio.fail_after(30):
        async with running("a") as (client, servers, stop):
            async with client.stream("GET", f"{API}/events/stream") as response:
                frames = sse(response)
                assert (await anext(frames))[1] == "connected"
                servers["a"].go_down()
                await client.post(f"{API}/servers/a/health-check")
                async for _, kind, data in frames:
                    if kind == "server" and data["status"] == "degraded":
                        assert data["name"] == "a"
                        assert data["last_error_category"] is not None
                        assert {"in_flight", "adapter_session", "capability_snapshot"} <= set(data)
                        break
                stop.set()
                with trio.fail_after(5):
                    async for _ in frames:
                        pass


async def test_readiness_counts_usable_servers() -> None:
    with trio.fail_after(30):
        async with running("a", "b", ready_min=2) as (client, servers, _):
            await client.post(f"{API}/servers/health-check")
            ready = await client.get("/api/v1/ready")
            assert ready.status_code == 200
            assert ready.json() == {
                "ready": True,
                "usable": 2,
                "ready_min": 2,
                "servers": {"unknown": 0, "healthy": 2, "degraded": 0, "unreachable": 0, "recovered": 0},
            }
            servers["b"].go_down()
            await client.post(f"{API}/servers/b/health-check")
            ready = await client.get("/api/v1/ready")
            assert ready.status_code == 503
            assert ready.json()["usable"] == 1
            assert ready.json()["servers"]["degraded"] == 1
            assert (await client.get("/api/v1/health")).json()["status"] == "ok"


async def test_the_status_page_is_one_self_contained_document() -> None:
    with trio.fail_after(30):
        async with running("a", token="s3cret") as (client, _, _stop):
            page = await client.get("/")
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert "/events/stream" in page.text and "#token=" not in page.text
            # Nothing is loaded from elsewhere: no external scripts, styles or fonts.
            assert "http://" not in page.text and "https://" not in page.text
            assert (await client.get(f"{API}/events/stream")).status_code == 401
