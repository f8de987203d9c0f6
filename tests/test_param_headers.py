"""SEP-2243 over streamable HTTP (protocol 2026-07-28): a tool's ``x-mcp-header`` parameters
travel as ``Mcp-Param-*`` headers too, and a tool with a malformed designation is left out of
the catalog while the server's other tools stay callable.

The SDK session computes the headers from the listed schema; the HTTP transport must put the
headers each message carries on that message's POST. The server here is an in-process httpx2
handler (no socket)."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx2
import pytest
from _fleet import policy

import trio_mcp

URL = "http://params.test/mcp"
MODERN = "2026-07-28"

TOOLS: list[dict[str, Any]] = [
    {
        "name": "deploy",
        "inputSchema": {
            "type": "object",
            "properties": {
                "region": {"type": "string", "x-mcp-header": "Region"},
                "priority": {"type": "integer", "x-mcp-header": "Priority"},
                "verbose": {"type": "boolean", "x-mcp-header": "Verbose"},
                "dry": {"type": "boolean", "x-mcp-header": "Dry"},
                "query": {"type": "string"},
            },
            "required": ["region"],
        },
    },
    {
        "name": "broken",
        "inputSchema": {"type": "object", "properties": {"data": {"type": "object", "x-mcp-header": "Data"}}},
    },
]


class ModernServer:
    """Answers server/discover, tools/list and tools/call with JSON, recording each request."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], dict[str, Any]]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if request.method != "POST":
            return httpx2.Response(405)
        body = json.loads(request.content)
        method, rid = body.get("method"), body.get("id")
        if rid is None:
            return httpx2.Response(202)
        if method == "server/discover":
            result: dict[str, Any] = {
                "supportedVersions": [MODERN],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "params", "version": "1"},
                "ttlMs": 0,
                "cacheScope": "private",
            }
        elif method == "tools/list":
            result = {"tools": TOOLS, "ttlMs": 0, "cacheScope": "private"}
        elif method == "tools/call":
            self.calls.append((dict(request.headers), body["params"]))
            result = {"content": [{"type": "text", "text": "deployed"}]}
        else:
            return httpx2.Response(
                200, json={"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "?"}}
            )
        result["resultType"] = "complete"
        return httpx2.Response(200, json={"jsonrpc": "2.0", "id": rid, "result": result})


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> ModernServer:
    handler = ModernServer()
    monkeypatch.setattr(httpx2, "AsyncHTTPTransport", lambda *args, **kwargs: httpx2.MockTransport(handler))
    return handler


def b64(text: str) -> str:
    return f"=?base64?{base64.b64encode(text.encode()).decode()}?="


async def test_designated_parameters_travel_as_headers(server: ModernServer) -> None:
    config = trio_mcp.ServerConfig(
        name="params",
        transport=trio_mcp.HttpTransport(url=URL),
        # Through httpx2 (the in-process handler): no parking, whose requests go over sockets.
        policy=policy(protocol="modern", probe="none", park_after=None),
    )
    async with trio_mcp.open_manager([config]) as manager:
        # The malformed designation leaves that one tool out; the other stays callable.
        assert [entry.key for entry in await manager.list_tools()] == ["deploy"]
        with pytest.raises(trio_mcp.NotOfferedError):
            await manager.call_tool("broken", {"data": {}})

        arguments = {
            "region": "Hello, 世界",
            "priority": 42,
            "verbose": None,
            "dry": False,
            "query": "SELECT 1",
        }
        result = await manager.call_tool("deploy", arguments)
        assert result.content[0].text == "deployed"  # type: ignore[union-attr]
        await manager.call_tool("deploy", {"region": " us-west1 "})

    (headers, params), (headers2, _) = server.calls
    assert params["arguments"] == arguments
    mirrored = {k: v for k, v in headers.items() if k.startswith("mcp-param-")}
    # Unsafe values are base64-wrapped, numbers and booleans spelt as JSON, null omitted, and
    # parameters without a designation never mirrored.
    assert mirrored == {
        "mcp-param-region": b64("Hello, 世界"),
        "mcp-param-priority": "42",
        "mcp-param-dry": "false",
    }
    assert (headers["mcp-method"], headers["mcp-name"]) == ("tools/call", "deploy")
    assert {k: v for k, v in headers2.items() if k.startswith("mcp-param-")} == {
        "mcp-param-region": b64(" us-west1 ")
    }
