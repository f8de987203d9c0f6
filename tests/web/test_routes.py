"""The HTTP API through an ASGI client over an open manager of in-memory scripted servers."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from _fleet import policy

import trio_mcp
from trio_mcp.testing import ScriptedServer, memory_server
from web.apidoc import openapi_document
from web.app import ROUTES, create_app

API = "/api/v1/mcp"
ANCHOR = 1_700_000_000.0


@dataclasses.dataclass
class Fleet:
    servers: dict[str, ScriptedServer]
    manager: trio_mcp.Manager
    client: httpx.AsyncClient

    def __getitem__(self, name: str) -> ScriptedServer:
        return self.servers[name]


@asynccontextmanager
async def open_fleet(*names: str, **app_options: Any) -> AsyncIterator[Fleet]:
    """A connected fleet of scripted servers (default ``a`` and ``b``) and a client for its API."""
    servers = {name: ScriptedServer(name) for name in names or ("a", "b")}
    configs = [memory_server(s, policy=policy()) for s in servers.values()]
    async with trio_mcp.open_manager(configs, clock_anchor=ANCHOR) as manager:
        for name in servers:
            await manager.wait_for(name, lambda s: s.session.active)
        # These tests register servers on 127.0.0.1; tests/web/test_hardening.py checks the default.
        app_options.setdefault("allow_private_urls", True)
        transport = httpx.ASGITransport(app=create_app(manager, **app_options))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Fleet(servers, manager, client)


def detail(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"detail"}, body
    assert {"error", "message"} <= set(body["detail"])
    result: dict[str, Any] = body["detail"]
    return result


# -- liveness and the schema ---------------------------------------------------------------------


async def test_health_and_openapi_lists_every_route() -> None:
    async with open_fleet() as fleet:
        response = await fleet.client.get("/api/v1/health")
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "manager": "running", "replica": None}

        response = await fleet.client.get("/openapi.json")
        assert response.status_code == 200
        doc = response.json()
        assert doc["openapi"].startswith("3.")
        described = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
        routed = {
            (route.path, method)
            for route in ROUTES
            for method in getattr(route, "methods", set())
            if method != "HEAD"
        }
        assert described == routed
    assert openapi_document() == doc


async def test_unknown_route_and_wrong_method_are_json() -> None:
    async with open_fleet() as fleet:
        response = await fleet.client.get(f"{API}/nowhere")
        assert response.status_code == 404
        assert detail(response)["error"] == "not_found"
        response = await fleet.client.put(f"{API}/servers")
        assert response.status_code == 405
        assert detail(response)["error"] == "method_not_allowed"


# -- servers -------------------------------------------------------------------------------------


async def test_list_and_get_server_payload(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fleet() as fleet:
        # Virtual time: the fleet connected at trio time 0, the anchor's instant.
        await trio.sleep(7)
        response = await fleet.client.get(f"{API}/servers")
        assert response.status_code == 200
        assert [s["name"] for s in response.json()["servers"]] == ["a", "b"]

        response = await fleet.client.get(f"{API}/servers/a")
        assert response.status_code == 200
        server = response.json()
        assert server["name"] == "a"
        assert server["transport"] == {"kind": "memory"}
        assert server["status"] == "healthy"
        assert server["connection"] == "ready"
        assert server["last_error"] is None and server["last_error_category"] is None
        assert server["retry_count"] == 0
        assert server["next_retry_at"] is None and server["retry_window_open"] is True
        assert server["last_checked_at"] == ANCHOR
        assert server["initialized"] is True
        assert (server["initialized_at"], server["initialization_expires_at"]) == (ANCHOR, ANCHOR + 3600)
        caps = server["capability_snapshot"]
        assert caps["protocol_version"] == "2026-07-28" and caps["captured_at"] == ANCHOR
        assert caps["era"] == "modern" and caps["server_info"]["name"] == "a"
        assert "tools" in caps["capabilities"]
        session = server["adapter_session"]
        assert session["active"] is True and session["initialized"] is True
        assert session["opened_at"] == ANCHOR
        assert server["adapter_controls_available"] is True
        # One name per concept: the fields the seed's clients read, and no second spelling.
        assert set(server) == {
            "name",
            "transport",
            "status",
            "connection",
            "last_error",
            "last_error_category",
            "consecutive_failures",
            "retry_count",
            "last_checked_at",
            "next_retry_at",
            "retry_window_open",
            "initialized",
            "initialized_at",
            "initialization_expires_at",
            "capability_snapshot",
            "adapter_session",
            "adapter_controls_available",
            "in_flight",
            "max_concurrency",
        }
        assert (server["in_flight"], server["max_concurrency"]) == (0, 16)
        assert set(session) == {
            "server",
            "active",
            "initialized",
            "session_id",
            "opened_at",
            "last_activity_at",
            "freshness",
            "parked",
        }
        assert session["parked"] is False


async def test_unknown_server_is_404_everywhere() -> None:
    async with open_fleet() as fleet:
        requests = [
            ("GET", "/servers/nope"),
            ("DELETE", "/servers/nope"),
            ("POST", "/servers/nope/health-check"),
            ("POST", "/servers/nope/initialize"),
            ("POST", "/servers/nope/connect"),
            ("POST", "/servers/nope/adapter/invalidate"),
            ("POST", "/servers/nope/adapter/refresh"),
            ("GET", "/adapter-sessions?server=nope"),
        ]
        for method, path in requests:
            response = await fleet.client.request(method, API + path)
            assert response.status_code == 404, (method, path)
            body = detail(response)
            assert body["error"] == "unknown_server"
            assert body["message"] == "unknown MCP server 'nope'"
        response = await fleet.client.post(
            f"{API}/invoke/tool", json={"tool_name": "echo", "preferred_servers": ["nope"]}
        )
        assert response.status_code == 404


async def test_register_http_server_redacts_secrets_then_conflict_and_delete() -> None:
    entry = {
        "name": "remote",
        "url": "http://user:hunter2@127.0.0.1:9/mcp?api_key=q-s3cret&v=2",
        "headers": {"Authorization": "Bearer s3cret-token"},
        "connectOnStart": False,
    }
    async with open_fleet() as fleet:
        response = await fleet.client.post(f"{API}/servers", json=entry)
        assert response.status_code == 201
        assert response.headers["location"] == f"http://test{API}/servers/remote"
        server = response.json()
        assert server["transport"] == {
            "kind": "http",
            "url": "http://user:***@127.0.0.1:9/mcp?api_key=***&v=***",
            "headers": {"Authorization": "***"},
        }
        assert server["status"] == "unknown"
        for path in ("/servers", "/servers/remote"):
            text = (await fleet.client.get(API + path)).text
            assert "s3cret-token" not in text and "hunter2" not in text and "q-s3cret" not in text
        assert "remote" in fleet.manager.names

        response = await fleet.client.post(f"{API}/servers", json=entry)
        assert response.status_code == 409
        assert detail(response) == {
            "error": "server_exists",
            "message": "an MCP server named 'remote' is already registered",
            "server": "remote",
        }

        response = await fleet.client.delete(f"{API}/servers/remote")
        assert response.status_code == 204
        assert response.content == b""
        assert "remote" not in fleet.manager.names
        assert (await fleet.client.get(f"{API}/servers/remote")).status_code == 404


async def test_stdio_registration_is_refused_unless_allowed() -> None:
    entry = {
        "name": "local",
        "command": "definitely-not-run",
        "args": ["--flag"],
        "env": {"API_KEY": "s3cret-env"},
        "connectOnStart": False,
    }
    async with open_fleet() as fleet:
        response = await fleet.client.post(f"{API}/servers", json=entry)
        assert response.status_code == 403
        body = detail(response)
        assert body["error"] == "forbidden"
        assert "--allow-stdio-registration" in body["message"]
        assert "local" not in fleet.manager.names
        # A "type": "stdio" entry is a stdio server too.
        response = await fleet.client.post(f"{API}/servers", json={**entry, "type": "stdio"})
        assert response.status_code == 403

    async with open_fleet(allow_stdio=True) as fleet:
        response = await fleet.client.post(f"{API}/servers", json=entry)
        assert response.status_code == 201
        assert response.json()["transport"] == {
            "kind": "stdio",
            "command": "definitely-not-run",
            "args": ["--flag"],
            "env": {"API_KEY": "***"},
            "cwd": None,
        }
        assert "s3cret-env" not in (await fleet.client.get(f"{API}/servers")).text
        assert (await fleet.client.delete(f"{API}/servers/local")).status_code == 204


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": 5, "url": "http://x"}, "name"),
        ({"name": "bad name!", "url": "http://x"}, "name"),
        ({"name": "x"}, "body"),
        ({"name": "x", "url": 5}, "url"),
        ({"name": "x", "url": "ftp://x"}, "url"),
        ({"name": "x", "url": "http://x", "command": "y"}, "body"),
        ({"name": "x", "url": "http://x", "headers": {"A": 1}}, "headers.A"),
        ({"name": "x", "url": "http://x", "headers": ["A"]}, "headers"),
        ({"name": "x", "url": "http://x", "callTimeout": -1}, "callTimeout"),
        ({"name": "x", "url": "http://x", "type": "sse"}, "type"),
        ({"name": "x", "url": "http://x", "disabled": True}, "disabled"),
        ({"name": "x", "command": "y", "args": "z"}, "args"),
        ({"name": "x", "command": "y", "args": ["z", 1]}, "args[1]"),
        ({"name": "x", "command": "y", "env": {"K": None}}, "env.K"),
    ],
)
async def test_registration_errors_are_422_naming_the_field(body: dict[str, Any], field: str) -> None:
    async with open_fleet("a", allow_stdio=True) as fleet:
        response = await fleet.client.post(f"{API}/servers", json=body)
        assert response.status_code == 422, response.text
        assert detail(response)["field"] == field
        assert fleet.manager.names == ["a"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "malformed JSON"),
        (b"", "a JSON object is required"),
        (b"[1, 2]", "got array"),
        (b"null", "got null"),
        (b"\xff\xfe", "malformed JSON"),
        (b"[" * 100_000, "malformed JSON"),
    ],
)
async def test_malformed_bodies_are_422(content: bytes, message: str) -> None:
    async with open_fleet("a") as fleet:
        for path in ("/servers", "/invoke/tool", "/invoke/resource", "/invoke/prompt"):
            response = await fleet.client.post(
                API + path, content=content, headers={"content-type": "application/json"}
            )
            assert response.status_code == 422, (path, response.text)
            body = detail(response)
            assert body["field"] == "body"
            assert message in body["message"]


# -- safety --------------------------------------------------------------------------------------


async def test_bodies_over_the_limit_are_413() -> None:
    async with open_fleet("a", max_body_bytes=100) as fleet:
        big = {"tool_name": "echo", "arguments": {"text": "x" * 200}}
        response = await fleet.client.post(f"{API}/invoke/tool", json=big)
        assert response.status_code == 413
        assert detail(response)["error"] == "payload_too_large"
        assert fleet["a"].executions("echo") == 0

        async def chunks() -> AsyncIterator[bytes]:
            # No Content-Length: the body is counted while it is read.
            yield json.dumps(big).encode()[:60]
            yield json.dumps(big).encode()[60:]

        response = await fleet.client.post(f"{API}/servers", content=chunks())
        assert response.status_code == 413
        small = {"tool_name": "echo", "arguments": {"text": "hi"}}
        assert (await fleet.client.post(f"{API}/invoke/tool", json=small)).status_code == 200


async def test_create_app_rejects_a_bad_body_limit() -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        create_app(None, max_body_bytes=0)


async def test_bearer_token_guards_everything_but_liveness_and_the_description() -> None:
    async with open_fleet("a", token="s3cret") as fleet:
        client = fleet.client
        for public in ("/api/v1/health", "/openapi.json", f"{API}/openapi.json"):
            assert (await client.get(public)).status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            for method, path in [
                ("GET", f"{API}/servers"),
                ("POST", f"{API}/invoke/tool"),
                ("DELETE", f"{API}/servers/a"),
                ("GET", f"{API}/nowhere"),
            ]:
                response = await client.request(method, path, headers=headers)
                assert response.status_code == 401, (method, path, headers)
                assert response.headers["www-authenticate"] == "Bearer"
                assert detail(response)["error"] == "unauthorized"
        assert fleet.manager.names == ["a"]
        ok = {"Authorization": "Bearer s3cret"}
        assert (await client.get(f"{API}/servers", headers=ok)).status_code == 200


async def test_no_manager_is_503() -> None:
    transport = httpx.ASGITransport(app=create_app(None))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/api/v1/health")).json() == {
            "status": "ok",
            "manager": "stopped",
            "replica": None,
        }
        response = await client.get(f"{API}/servers")
        assert response.status_code == 503
        assert detail(response)["error"] == "manager_closed"


async def test_closed_manager_is_503() -> None:
    async with open_fleet("a") as fleet:
        manager = fleet.manager
    # The manager's block is left; an app still holding the manager refuses with 503.
    transport = httpx.ASGITransport(app=create_app(manager))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(f"{API}/invoke/tool", json={"tool_name": "echo"})
        assert response.status_code == 503
        assert detail(response)["error"] == "manager_closed"
        assert (await client.post(f"{API}/servers/connect")).status_code == 503


async def test_draining_manager_refuses_new_invocations() -> None:
    async with open_fleet("a") as fleet:
        fleet.manager.drain(0)
        response = await fleet.client.post(
            f"{API}/invoke/tool", json={"tool_name": "echo", "arguments": {"text": "x"}}
        )
        assert response.status_code == 503
        assert detail(response) == {"error": "manager_closed", "message": "the manager is shutting down"}
        assert fleet["a"].executions("echo") == 0


# -- probes and handshakes -------------------------------------------------------------------------


async def test_health_check_initialize_connect(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fleet() as fleet:
        client = fleet.client
        for action in ("health-check", "initialize", "connect"):
            response = await client.post(f"{API}/servers/a/{action}")
            assert response.status_code == 200, action
            assert response.json()["name"] == "a"
            assert response.json()["status"] == "healthy"
            response = await client.post(f"{API}/servers/{action}")
            assert response.status_code == 200, action
            assert [s["name"] for s in response.json()["servers"]] == ["a", "b"]

        fleet["b"].go_down()
        response = await client.post(f"{API}/servers/b/health-check")
        assert response.status_code == 200
        server = response.json()
        assert server["status"] == "degraded"
        assert server["last_error"]
        assert server["last_error_category"] in trio_mcp.ERROR_CATEGORIES
        assert server["next_retry_at"] > server["last_checked_at"]
        assert server["retry_window_open"] is False
        assert server["adapter_session"]["active"] is False

        # connect reports a failing server in its payload rather than as an error.
        response = await client.post(f"{API}/servers/connect")
        assert response.status_code == 200
        a, b = response.json()["servers"]
        assert a["status"] == "healthy"
        assert b["status"] in ("degraded", "unreachable")
        assert b["adapter_session"]["active"] is False


# -- session controls and diagnostics --------------------------------------------------------------


async def test_invalidate_and_refresh() -> None:
    async with open_fleet() as fleet:
        client = fleet.client
        before = (await client.get(f"{API}/servers/a")).json()["adapter_session"]["session_id"]
        response = await client.post(f"{API}/servers/a/adapter/invalidate")
        assert response.status_code == 200
        body = response.json()
        assert body["server"] == "a" and body["invalidated"] is True
        await fleet.manager.wait_for("a", lambda s: not s.session.active)
        again = await client.post(f"{API}/servers/a/adapter/invalidate")
        assert again.json()["invalidated"] is False

        response = await client.post(f"{API}/servers/a/adapter/refresh")
        assert response.status_code == 200
        session = response.json()["adapter_session"]
        assert session["active"] is True and session["session_id"] != before


async def test_refresh_conflict_when_controls_are_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_fleet("a") as fleet:
        real = fleet.manager.server

        def without_controls(name: str) -> trio_mcp.ServerSnapshot:
            snap = real(name)
            session = dataclasses.replace(snap.session, controls_available=False)
            return dataclasses.replace(snap, session=session)

        monkeypatch.setattr(fleet.manager, "server", without_controls)
        response = await fleet.client.post(f"{API}/servers/a/adapter/refresh")
        assert response.status_code == 409
        assert detail(response)["error"] == "conflict"
        assert (await fleet.client.get(f"{API}/servers/a")).json()["adapter_controls_available"] is False


async def test_refresh_handshake_timeout_is_504(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fleet("a") as fleet:
        fleet["a"].hang_handshake()
        start = trio.current_time()
        response = await fleet.client.post(f"{API}/servers/a/adapter/refresh")
        assert response.status_code == 504
        assert detail(response)["error"] == "timeout"
        assert trio.current_time() - start == pytest.approx(5.0)


async def test_adapter_sessions_filters(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fleet("a", "b", "c") as fleet:
        client = fleet.client

        async def sessions(query: str) -> list[dict[str, Any]]:
            response = await client.get(f"{API}/adapter-sessions{query}")
            assert response.status_code == 200, response.text
            result: list[dict[str, Any]] = response.json()["sessions"]
            return result

        assert [s["server"] for s in await sessions("")] == ["a", "b", "c"]
        assert [s["server"] for s in await sessions("?server=b")] == ["b"]
        assert len(await sessions("?limit=2")) == 2
        assert await sessions("?limit=0") == []

        # Past the freshness window, only "a" is used again; "c" loses its session.
        await trio.sleep(301)
        echo = {"tool_name": "echo", "arguments": {"text": "x"}, "preferred_servers": ["a"]}
        assert (await client.post(f"{API}/invoke/tool", json=echo)).status_code == 200
        fleet.manager.invalidate("c")
        await fleet.manager.wait_for("c", lambda s: not s.session.active)
        assert [s["server"] for s in await sessions("?active_only=true")] == ["a", "b"]
        assert [s["server"] for s in await sessions("?active_only=false")] == ["a", "b", "c"]
        assert [s["server"] for s in await sessions("?freshness=active_recent")] == ["a"]
        assert [s["server"] for s in await sessions("?freshness=stale")] == ["b", "c"]
        assert [s["server"] for s in await sessions("?freshness=stale&active_only=1&limit=5")] == ["b"]
        assert await sessions("?freshness=unknown") == []

        for query, field in [
            ("?limit=-1", "limit"),
            ("?limit=abc", "limit"),
            ("?freshness=bogus", "freshness"),
            ("?active_only=maybe", "active_only"),
        ]:
            response = await client.get(f"{API}/adapter-sessions{query}")
            assert response.status_code == 422, query
            assert detail(response)["field"] == field


async def test_connection_events_filters(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fleet() as fleet:
        client = fleet.client
        events = (await client.get(f"{API}/events")).json()["events"]
        assert {(e["server"], e["from"], e["to"]) for e in events} == {
            ("a", "unknown", "healthy"),
            ("b", "unknown", "healthy"),
        }
        assert [e["timestamp"] for e in events] == [ANCHOR, ANCHOR]  # both connected at trio time 0

        fleet["b"].go_down()
        await client.post(f"{API}/servers/b/health-check")
        events = (await client.get(f"{API}/events?server=b")).json()["events"]
        assert [(e["from"], e["to"]) for e in events] == [("unknown", "healthy"), ("healthy", "degraded")]
        # Failed checks continue until the server is unreachable: that change carries the
        # health check's correlation id (the first one may have been seen by the supervisor).
        for _ in range(5):
            await client.post(f"{API}/servers/b/health-check")
            events = (await client.get(f"{API}/events?server=b")).json()["events"]
            if events[-1]["to"] == "unreachable":
                break
        assert events[-1]["to"] == "unreachable"
        correlation_id = events[-1]["correlation_id"]
        assert correlation_id
        by_id = (await client.get(f"{API}/events?correlation_id={correlation_id}")).json()["events"]
        assert [e["seq"] for e in by_id] == [events[-1]["seq"]]
        newest = (await client.get(f"{API}/events?limit=1")).json()["events"]
        assert [e["seq"] for e in newest] == [events[-1]["seq"]]
        assert (await client.get(f"{API}/events?server=nope")).status_code == 404

        response = await client.get(f"{API}/events?limit=-5")
        assert response.status_code == 422
        assert detail(response)["field"] == "limit"


# -- invocation --------------------------------------------------------------------------------------


async def test_invoke_tool_success_and_invocation_events() -> None:
    async with open_fleet() as fleet:
        client = fleet.client
        response = await client.post(
            f"{API}/invoke/tool",
            json={
                "tool_name": "echo",
                "arguments": {"text": "hi"},
                "preferred_servers": ["b", "a"],
                "request_id": "req-1",
            },
        )
        assert response.status_code == 200
        body = response.json()
        assert (body["server"], body["method"], body["request_id"]) == ("b", "tools/call", "req-1")
        result = body["result"]
        assert result["content"] == [{"type": "text", "text": "hi"}]
        assert result["isError"] is False  # wire names
        assert result["structuredContent"] == {"result": "hi"}
        assert [(a["server"], a["stage"], a["success"]) for a in body["attempts"]] == [("b", "invoke", True)]

        await client.post(f"{API}/invoke/resource", json={"uri": "docs://readme", "request_id": "req-2"})

        async def events(query: str) -> list[tuple[str, str, str]]:
            response = await client.get(f"{API}/invocation-events{query}")
            assert response.status_code == 200
            return [(e["kind"], e["server"], e["request_id"]) for e in response.json()["events"]]

        assert await events("?request_id=req-1") == [
            ("invoke_start", "b", "req-1"),
            ("invoke_success", "b", "req-1"),
        ]
        assert await events("?correlation_id=req-1") == await events("?request_id=req-1")
        assert await events("?method=resources/read") == [
            ("invoke_start", "a", "req-2"),
            ("invoke_success", "a", "req-2"),
        ]
        assert await events("?server=a") == await events("?method=resources/read")
        assert await events("?limit=1") == [("invoke_success", "a", "req-2")]
        assert len(await events("")) == 4
        response = await client.get(f"{API}/invocation-events?limit=-1")
        assert response.status_code == 422
        assert detail(response)["field"] == "limit"


async def test_invoke_resource_and_prompt() -> None:
    async with open_fleet() as fleet:
        response = await fleet.client.post(
            f"{API}/invoke/resource", json={"uri": "docs://readme", "preferred_servers": ["b"]}
        )
        assert response.status_code == 200
        body = response.json()
        assert (body["server"], body["method"]) == ("b", "resources/read")
        assert body["result"]["contents"][0]["text"] == "readme from b"
        assert body["result"]["contents"][0]["uri"] == "docs://readme"

        response = await fleet.client.post(
            f"{API}/invoke/prompt", json={"name": "review", "arguments": {"code": "x = 1"}}
        )
        assert response.status_code == 200
        body = response.json()
        assert body["method"] == "prompts/get"
        assert "x = 1" in body["result"]["messages"][0]["content"]["text"]


async def test_invoke_fails_over_to_the_next_server(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fleet() as fleet:
        fleet["a"].go_down()
        await fleet.manager.wait_for("a", lambda s: not s.session.active)
        response = await fleet.client.post(
            f"{API}/invoke/tool",
            json={"tool_name": "charge", "arguments": {"amount": 5}, "preferred_servers": ["a", "b"]},
        )
        assert response.status_code == 200
        body = response.json()
        assert body["server"] == "b"
        assert body["result"]["content"][0]["text"] == "charged 5"
        first, second = body["attempts"][0], body["attempts"][-1]
        assert (first["server"], first["success"], first["sent"]) == ("a", False, False)
        assert first["error_category"] in trio_mcp.ERROR_CATEGORIES
        assert (second["server"], second["stage"], second["success"]) == ("b", "invoke", True)
        assert fleet["b"].executions("charge") == 1


async def test_invoke_timeout_is_503_with_categorized_attempts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fleet() as fleet:
        fleet["a"].hang_tool("charge")
        start = trio.current_time()
        response = await fleet.client.post(
            f"{API}/invoke/tool",
            json={
                "tool_name": "charge",
                "arguments": {"amount": 5},
                "preferred_servers": ["a", "b"],
                "timeout_seconds": 2,
                "request_id": "req-t",
            },
        )
        assert trio.current_time() - start == pytest.approx(2.0)
        assert response.status_code == 503
        body = detail(response)
        assert body["error"] == "invocation_failed"
        assert body["method"] == "tools/call"
        assert body["outcome"] == "unknown"
        assert body["request_id"] == "req-t"
        assert "charge" in body["message"]
        (attempt,) = body["attempts"]
        assert attempt["server"] == "a"
        assert attempt["stage"] == "invoke"
        assert attempt["success"] is False
        assert attempt["error_category"] == "timeout"
        assert attempt["sent"] is True
        assert attempt["duration"] == pytest.approx(2.0)
        assert attempt["started_at"] == ANCHOR + start
        # Safe failover never charged twice.
        assert fleet["b"].executions("charge") == 0

        # The attempt timeout applies per server; a read may fail over after one.
        fleet["a"].tool_delays["docs://readme"] = 60
        response = await fleet.client.post(
            f"{API}/invoke/resource",
            json={"uri": "docs://readme", "preferred_servers": ["a", "b"], "attempt_timeout_seconds": 1},
        )
        assert response.status_code == 200
        body = response.json()
        assert body["server"] == "b"
        assert [(a["server"], a["error_category"]) for a in body["attempts"]] == [
            ("a", "timeout"),
            ("b", None),
        ]


async def test_a_hedged_read_answers_from_the_faster_server(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fleet() as fleet:
        fleet["a"].tool_delays["docs://readme"] = 60
        start = trio.current_time()
        response = await fleet.client.post(
            f"{API}/invoke/resource",
            json={"uri": "docs://readme", "preferred_servers": ["a", "b"], "hedge_after_seconds": 0.5},
        )
        assert trio.current_time() - start == pytest.approx(0.5)
        assert response.status_code == 200
        body = response.json()
        assert body["server"] == "b"
        assert [(a["server"], a["error_category"], a["sent"]) for a in body["attempts"]] == [
            ("b", None, True),
            ("a", "superseded", True),
        ]
        for bad in (-1, "p99", True):
            response = await fleet.client.post(
                f"{API}/invoke/resource", json={"uri": "docs://readme", "hedge_after_seconds": bad}
            )
            assert response.status_code == 422, bad
            assert detail(response)["field"] == "hedge_after_seconds"


async def test_invoke_failed_everywhere_is_503(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fleet() as fleet:
        for name in ("a", "b"):
            fleet[name].go_down()
            await fleet.manager.wait_for(name, lambda s: not s.session.active)
        response = await fleet.client.post(f"{API}/invoke/resource", json={"uri": "docs://readme"})
        assert response.status_code == 503
        body = detail(response)
        assert body["outcome"] == "failed"
        assert body["method"] == "resources/read"
        assert {a["server"] for a in body["attempts"]} == {"a", "b"}
        assert all(a["error_category"] in trio_mcp.ERROR_CATEGORIES for a in body["attempts"])


async def test_rejected_request_is_422_with_attempts() -> None:
    async with open_fleet() as fleet:
        response = await fleet.client.post(
            f"{API}/invoke/resource", json={"uri": "docs://missing", "preferred_servers": ["a", "b"]}
        )
        # Offered by no server (the catalogs say so): 404, naming the catalogs checked.
        assert response.status_code == 404
        body = detail(response)
        assert body["error"] == "not_offered"
        assert (body["method"], body["target"], body["servers_checked"]) == (
            "resources/read",
            "docs://missing",
            ["a", "b"],
        )
        assert (
            body["message"]
            == "resources/read: no server offers resource 'docs://missing' (catalogs checked: a, b)"
        )
        # Arguments that the tool's schema refuses: 422 naming the server whose schema said so.
        response = await fleet.client.post(
            f"{API}/invoke/tool",
            json={"tool_name": "echo", "arguments": {"wrong": 1}, "preferred_servers": ["a", "b"]},
        )
        assert response.status_code == 422
        body = detail(response)
        assert (body["server"], body["method"]) == ("a", "tools/call")
        assert [(a["server"], a["error_category"], a["sent"]) for a in body["attempts"]] == [
            ("a", "invalid_request", False),
            ("b", "invalid_request", False),
        ]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/invoke/tool", {}, "tool_name"),
        ("/invoke/tool", {"tool_name": 3}, "tool_name"),
        ("/invoke/tool", {"tool_name": ""}, "tool_name"),
        ("/invoke/tool", {"tool_name": "echo", "arguments": [1]}, "arguments"),
        ("/invoke/tool", {"tool_name": "echo", "preferred_servers": "a"}, "preferred_servers"),
        ("/invoke/tool", {"tool_name": "echo", "preferred_servers": ["a", 2]}, "preferred_servers[1]"),
        ("/invoke/tool", {"tool_name": "echo", "failover": "sometimes"}, "failover"),
        ("/invoke/tool", {"tool_name": "echo", "failover": ["safe"]}, "failover"),
        ("/invoke/tool", {"tool_name": "echo", "timeout_seconds": -1}, "timeout_seconds"),
        ("/invoke/tool", {"tool_name": "echo", "timeout_seconds": 0}, "timeout_seconds"),
        ("/invoke/tool", {"tool_name": "echo", "timeout_seconds": "5"}, "timeout_seconds"),
        ("/invoke/tool", {"tool_name": "echo", "timeout_seconds": True}, "timeout_seconds"),
        ("/invoke/tool", {"tool_name": "echo", "request_id": 7}, "request_id"),
        ("/invoke/tool", {"tool_name": "echo", "bogus": 1}, "bogus"),
        ("/invoke/resource", {"uri": "docs://readme", "arguments": {}}, "arguments"),
        ("/invoke/resource", {"uri": None}, "uri"),
        ("/invoke/prompt", {"name": "review", "arguments": {"code": 1}}, "arguments.code"),
        ("/invoke/prompt", {"tool_name": "review"}, "tool_name"),
    ],
)
async def test_invoke_validation_is_422_naming_the_field(path: str, body: dict[str, Any], field: str) -> None:
    async with open_fleet("a") as fleet:
        response = await fleet.client.post(API + path, json=body)
        assert response.status_code == 422, response.text
        assert detail(response)["field"] == field
        assert fleet["a"].executions("echo") == 0


@pytest.mark.parametrize("number", [b"1e400", b"-Infinity", b"NaN"])
async def test_non_finite_timeouts_are_422(number: bytes) -> None:
    async with open_fleet("a") as fleet:
        content = b'{"tool_name": "echo", "attempt_timeout_seconds": ' + number + b"}"
        response = await fleet.client.post(f"{API}/invoke/tool", content=content)
        assert response.status_code == 422
        assert detail(response)["field"] == "attempt_timeout_seconds"


# -- catalogs ------------------------------------------------------------------------------------------


async def test_catalogs_aggregate_with_servers() -> None:
    async with open_fleet() as fleet:
        fleet["b"].go_down()
        tools = (await fleet.client.get(f"{API}/tools")).json()["tools"]
        by_name = {t["name"]: t for t in tools}
        assert {"echo", "charge", "sleep", "work", "lookup"} <= set(by_name)
        assert by_name["echo"]["servers"] == ["a"]
        assert by_name["echo"]["inputSchema"]["required"] == ["text"]
        assert by_name["lookup"]["annotations"]["readOnlyHint"] is True

        fleet["b"].come_up()
        await fleet.manager.connect("b")
        resources = (await fleet.client.get(f"{API}/resources")).json()["resources"]
        assert [(r["uri"], r["servers"]) for r in resources] == [("docs://readme", ["a", "b"])]
        prompts = (await fleet.client.get(f"{API}/prompts")).json()["prompts"]
        assert [(p["name"], p["servers"]) for p in prompts] == [("review", ["a", "b"])]
        assert prompts[0]["arguments"][0]["name"] == "code"


async def test_no_input_produces_a_500(autojump_clock: trio.testing.MockClock) -> None:
    bodies = [
        b"",
        b"{}",
        b"[]",
        b'"x"',
        b"1e999",
        b'{"name": {}, "tool_name": [], "uri": 1, "arguments": "x", "url": null}',
        b'{"name": "z", "url": "http://127.0.0.1:9", "headers": {"": ""}, "maxConcurrency": "x"}',
        b'{"name": "y", "url": "http://127.0.0.1:9", "protocol": [], "probe": {}, "handshakeMaxAge": -1}',
        b'{"tool_name": "echo", "preferred_servers": [], "failover": null, "timeout_seconds": null}',
        b'{"tool_name": "nope", "arguments": {"a": [1, {"b": null}]}}',
        '{"uri": "\u2603://\\u0000"}'.encode(),
    ]
    queries = ["", "?limit=", "?limit=1.5", "?limit=99999999999999999999", "?server=", "?freshness=", "?x=1"]
    async with open_fleet() as fleet:
        for route in ROUTES:
            path = route.path.replace("{name}", "a")  # type: ignore[attr-defined]
            if path.endswith("/events/stream"):
                continue  # endless: tests/integration/test_event_stream.py
            for method in sorted(getattr(route, "methods", set()) - {"HEAD", "DELETE"}):
                if method == "GET":
                    for query in queries:
                        response = await fleet.client.get(path + query)
                        assert response.status_code < 500, (path, query, response.text)
                else:
                    for body in bodies:
                        response = await fleet.client.post(path, content=body)
                        assert response.status_code < 500, (path, body, response.text)
        for weird in ("%00", "%2F..%2F", "a" * 300, "%E2%98%83"):
            response = await fleet.client.get(f"{API}/servers/{weird}")
            assert response.status_code == 404


def test_secret_looking_arguments_are_redacted() -> None:
    from web.schemas import _redact_args

    args = ["-y", "server", "--api-key=abc", "--token", "xyz", "--verbose", "--port", "9", "-p", "hunter2"]
    assert _redact_args(args) == [
        "-y",
        "server",
        "--api-key=***",
        "--token",
        "***",
        "--verbose",
        "--port",
        "9",
        "-p",
        "hunter2",
    ]


async def test_an_unknown_server_is_404_on_every_endpoint_that_names_one() -> None:
    async with open_fleet("a") as fleet:
        for path in (
            "/servers/ghost",
            "/events?server=ghost",
            "/invocation-events?server=ghost",
            "/adapter-sessions?server=ghost",
        ):
            response = await fleet.client.get(f"{API}{path}")
            assert (response.status_code, detail(response)["error"], detail(response)["server"]) == (
                404,
                "unknown_server",
                "ghost",
            ), path
        # A removed server's history stays readable.
        assert (await fleet.client.delete(f"{API}/servers/a")).status_code == 204
        response = await fleet.client.get(f"{API}/events?server=a")
        assert response.status_code == 200
        assert [e["server"] for e in response.json()["events"]] == ["a"] * len(response.json()["events"])


async def test_openapi_under_the_api_prefix_and_empty_strings_said_as_such() -> None:
    async with open_fleet("a") as fleet:
        root = await fleet.client.get("/openapi.json")
        prefixed = await fleet.client.get(f"{API}/openapi.json")
        assert prefixed.status_code == root.status_code == 200
        assert prefixed.json() == root.json()
        assert f"{API}/openapi.json" in root.json()["paths"]
        response = await fleet.client.post(f"{API}/invoke/tool", json={"tool_name": "echo", "request_id": ""})
        assert response.status_code == 422
        assert (detail(response)["field"], detail(response)["message"]) == (
            "request_id",
            "must be a non-empty string, got an empty string",
        )


async def test_a_huge_input_makes_a_short_error() -> None:
    big = "x" * 100_000
    async with open_fleet("a") as fleet:
        for path, body in [
            ("/servers", {"name": big, "url": "http://127.0.0.1:9/mcp"}),
            ("/servers", {"name": "ok", "url": big}),
            ("/invoke/tool", {"tool_name": "echo", "preferred_servers": [big]}),
            ("/invoke/tool", {"tool_name": "echo", "request_id": big}),
        ]:
            response = await fleet.client.post(f"{API}{path}", json=body)
            assert response.status_code in (404, 422), path
            assert len(response.content) < 1_000, (path, len(response.content))
            assert (
                "(100002 characters)" in detail(response)["message"]
                or "got 100000" in detail(response)["message"]
            )


async def test_metrics_show_a_failover_with_its_labels() -> None:
    async with open_fleet("a", "b", token="s3cret") as fleet:
        ok = {"Authorization": "Bearer s3cret"}
        assert (await fleet.client.get("/metrics")).status_code == 401
        fleet["a"].fail_tool("echo")
        response = await fleet.client.post(
            f"{API}/invoke/tool",
            json={
                "tool_name": "echo",
                "arguments": {"text": "x"},
                "preferred_servers": ["a", "b"],
                "failover": "always",
            },
            headers=ok,
        )
        assert response.status_code == 200, response.text
        assert response.json()["server"] == "b"
        response = await fleet.client.get("/metrics", headers=ok)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        lines = set(response.text.splitlines())
        assert 'trio_mcp_failovers_total{from_server="a",method="tools/call",to_server="b"} 1.0' in lines
        assert 'trio_mcp_invocations_total{method="tools/call",outcome="success",server="b"} 1.0' in lines, (
            response.text
        )
        attempts = [line for line in lines if line.startswith("trio_mcp_attempts_total{")]
        assert any('server="a"' in line and 'sent="true"' in line for line in attempts), attempts
        current = [line for line in lines if line.startswith('trio_mcp_server_status{server="a"')]
        assert [line for line in current if line.endswith(" 1.0")] == [
            f'trio_mcp_server_status{{server="a",status="{fleet.manager.server("a").status}"}} 1.0'
        ]
