"""A tool's JSON Schema 2020-12 ``inputSchema`` reaches the caller as the server wrote it:
through the catalog, the argument check and the HTTP API (a real SDK server in memory)."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest
from mcp.server import Server
from mcp_types import CallToolRequestParams, CallToolResult, ListToolsResult, TextContent, Tool

import trio_mcp
from web.app import create_app

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:example:contact",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string", "x-ui": {"widget": "text", "order": 1}},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string", "format": "email"},
        "nickname": {"type": ["string", "null"], "default": None},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
    "unevaluatedProperties": False,
    "x-vendor-keyword": {"keep": [1, None, "two"]},
}


class Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def server(self) -> Server[Any]:
        async def list_tools(ctx: Any, params: Any) -> ListToolsResult:
            return ListToolsResult(tools=[Tool(name="contact", input_schema=copy.deepcopy(SCHEMA))])

        async def call_tool(ctx: Any, params: CallToolRequestParams) -> CallToolResult:
            self.calls.append(dict(params.arguments or {}))
            return CallToolResult(content=[TextContent(type="text", text="ok")])

        return Server("schemas", on_list_tools=list_tools, on_call_tool=call_tool)


def config(recorder: Recorder, protocol: str) -> trio_mcp.ServerConfig:
    return trio_mcp.ServerConfig(
        name="schemas",
        transport=trio_mcp.MemoryTransport(server=recorder.server()),
        policy=trio_mcp.ServerPolicy(protocol=protocol, probe="none"),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("protocol", ["modern", "legacy"])
async def test_the_catalog_and_the_api_keep_the_schema_as_written(protocol: str) -> None:
    recorder = Recorder()
    async with trio_mcp.open_manager([config(recorder, protocol)]) as manager:
        (entry,) = await manager.list_tools()
        assert isinstance(entry.item, Tool)
        # Every keyword and value, unknown ones and nulls included (JSON key order is not
        # part of the value: the SDK itself does not keep it).
        assert entry.item.input_schema == SCHEMA

        transport = httpx.ASGITransport(app=create_app(manager))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/api/v1/mcp/tools")
        assert response.status_code == 200
        (tool,) = response.json()["tools"]
        assert (tool["name"], tool["servers"]) == ("contact", ["schemas"])
        assert tool["inputSchema"] == SCHEMA


async def test_the_argument_check_reads_the_schema_without_changing_it() -> None:
    recorder = Recorder()
    async with trio_mcp.open_manager([config(recorder, "modern")]) as manager:
        good = {"name": "Ada", "contactMethod": "phone", "phone": "555", "address": {"city": "Paris"}}
        assert (await manager.call_tool("contact", good)).is_error is False
        # $ref into $defs, allOf/anyOf, if/then/else and additionalProperties are all applied.
        for bad, reason in [
            ({"name": "Ada"}, "'email' is a required property"),
            ({"contactMethod": "phone", "email": "a@b.c"}, "'phone' is a required property"),
            (
                {"email": "a@b.c", "address": {"city": 7}},
                "argument 'address.city': 7 is not of type 'string'",
            ),
            ({"email": "a@b.c", "age": 3}, "Additional properties are not allowed ('age' was unexpected)"),
            ({"contactMethod": "fax", "email": "a@b.c"}, "argument 'contactMethod': 'fax' is not one of"),
        ]:
            with pytest.raises(trio_mcp.RequestRejectedError) as info:
                await manager.call_tool("contact", bad)
            assert str(info.value).startswith(f"schemas rejected tools/call: contact: {reason}")
            assert str(info.value).endswith("(its schema of 'contact'; nothing was sent)")
        # A null optional parameter is "no value".
        await manager.call_tool("contact", {"email": "a@b.c", "nickname": None, "phone": None})
        (entry,) = await manager.list_tools()
        assert entry.item.input_schema == SCHEMA  # type: ignore[union-attr]
    assert recorder.calls == [good, {"email": "a@b.c", "nickname": None, "phone": None}]


async def test_a_reference_to_a_network_uri_is_never_fetched() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"id": {"type": "string"}, "profile": {"$ref": "http://127.0.0.1:9/profile.json"}},
        "required": ["id"],
    }

    async def list_tools(ctx: Any, params: Any) -> ListToolsResult:
        return ListToolsResult(tools=[Tool(name="lookup", input_schema=schema)])

    async def call_tool(ctx: Any, params: CallToolRequestParams) -> CallToolResult:
        return CallToolResult(content=[TextContent(type="text", text="found")])

    server: Server[Any] = Server("refs", on_list_tools=list_tools, on_call_tool=call_tool)
    conf = trio_mcp.ServerConfig(
        name="refs",
        transport=trio_mcp.MemoryTransport(server=server),
        policy=trio_mcp.ServerPolicy(protocol="modern", probe="none"),
    )
    async with trio_mcp.open_manager([conf]) as manager:
        (entry,) = await manager.list_tools()
        assert entry.item.input_schema == schema  # type: ignore[union-attr]
        # What the schema says itself is checked; what it leaves to another document is the
        # server's to check (nothing is retrieved).
        with pytest.raises(trio_mcp.RequestRejectedError) as info:
            await manager.call_tool("lookup", {"profile": {}})
        assert "'id' is a required property" in str(info.value)
        result = await manager.call_tool("lookup", {"id": "u1", "profile": {"displayName": 3}})
        assert result.is_error is False
