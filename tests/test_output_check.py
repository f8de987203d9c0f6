"""A tool's structured content is checked against the output schema the server declared for it:
content that fits passes (through a check compiled once per schema), content that does not
fails the call with the SDK's own reason, as a ``protocol_error`` that leaves the connection up
(real SDK server in memory, virtual time)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from mcp.client.session import ClientSession
from mcp.server import Server
from mcp_types import CallToolRequestParams, CallToolResult, ListToolsResult, TextContent, Tool

import trio_mcp
from trio_mcp._arguments import output_check
from trio_mcp._session import FleetSession
from trio_mcp.testing import memory_server

COUNT = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
CLOSED = {"type": "object", "properties": {"n": {"type": "integer"}}, "additionalProperties": False}
NULLABLE = {"type": "object", "properties": {"n": {"type": ["integer", "null"]}}}
LIST = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}}
REFERENCED = {
    "$defs": {"word": {"type": "string", "minLength": 2}},
    "type": "object",
    "properties": {"w": {"$ref": "#/$defs/word"}},
}
ELSEWHERE = {"type": "object", "properties": {"w": {"$ref": "https://example.com/word.json"}}}

CASES = [
    (COUNT, {"n": 1}),
    (COUNT, {"n": 1.0}),  # JSON Schema's integer takes an integral number
    (COUNT, {"n": 1.5}),
    (COUNT, {"n": "1"}),
    (COUNT, {"n": True}),
    (COUNT, {}),
    (COUNT, {"n": None}),
    (COUNT, {"n": 1, "extra": "x"}),
    (CLOSED, {"n": 1, "extra": "x"}),
    (CLOSED, {"n": 2}),
    (NULLABLE, {"n": None}),
    (NULLABLE, {"n": "x"}),
    (LIST, {"tags": ["a", "b"]}),
    (LIST, {"tags": ["a", 1]}),
    (REFERENCED, {"w": "ok"}),
    (REFERENCED, {"w": "x"}),
    (ELSEWHERE, {"w": "x"}),
]


def never_entered(session_class: type[ClientSession]) -> ClientSession:
    send, receive = trio.open_memory_channel[Any](0)
    return session_class(receive, send)


async def sdk_verdict(schema: dict[str, Any], content: Any) -> str | None:
    """What the SDK's own check says of ``content``: ``None`` (fits) or why not."""
    session = never_entered(ClientSession)
    session._tool_output_schemas["t"] = schema
    try:
        await session.validate_tool_result("t", CallToolResult(content=[], structured_content=content))
    except RuntimeError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize(("schema", "content"), CASES)
async def test_the_compiled_check_agrees_with_the_sdk(schema: dict[str, Any], content: Any) -> None:
    expected = await sdk_verdict(schema, content)
    check = output_check(schema)
    assert check is not None
    # Asked twice: the second answer may come from the verdict kept for this shape.
    assert check(content) is (expected is None)
    assert check(content) is (expected is None)

    session = never_entered(FleetSession)
    session._tool_output_schemas["t"] = schema
    result = CallToolResult(content=[], structured_content=content)
    if expected is None:
        await session.validate_tool_result("t", result)
    else:
        with pytest.raises(trio_mcp.InvalidResultError) as caught:
            await session.validate_tool_result("t", result)
        assert str(caught.value) == expected  # the SDK's own reason
        assert caught.value.category == "protocol_error"


async def test_one_verdict_per_shape_never_answers_for_another_shape() -> None:
    check = output_check(COUNT)
    assert check is not None
    assert check({"n": 1}) is True
    assert check({"n": "1"}) is False
    assert check({"n": 2}) is True
    assert check({"m": 2}) is False
    assert check({"n": 2.5}) is False
    assert check({"n": 3.0}) is True


async def test_a_tool_listed_again_with_another_schema_is_checked_against_the_new_one() -> None:
    session = never_entered(FleetSession)
    session._tool_output_schemas["t"] = COUNT
    await session.validate_tool_result("t", CallToolResult(content=[], structured_content={"n": 1}))
    session._tool_output_schemas["t"] = {
        "type": "object",
        "properties": {"n": {"type": "string"}},
        "required": ["n"],
    }
    with pytest.raises(trio_mcp.InvalidResultError, match="is not of type 'string'"):
        await session.validate_tool_result("t", CallToolResult(content=[], structured_content={"n": 1}))


def reporter(calls: list[Any]) -> Server[Any]:
    """A tool ``report`` that declares an integer ``n`` and answers whatever it is given."""

    async def list_tools(ctx: Any, params: Any) -> ListToolsResult:
        return ListToolsResult(
            tools=[Tool(name="report", input_schema={"type": "object"}, output_schema=COUNT)]
        )

    async def call_tool(ctx: Any, params: CallToolRequestParams) -> CallToolResult:
        value = (params.arguments or {}).get("value")
        calls.append(value)
        text = TextContent(type="text", text=str(value))
        return CallToolResult(content=[text], structured_content={"n": value})

    return Server("reporter", on_list_tools=list_tools, on_call_tool=call_tool)


async def test_content_that_does_not_fit_fails_the_call_and_keeps_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[Any] = []
    async with trio_mcp.open_manager([memory_server(reporter(calls), name="r")]) as manager:
        fits = await manager.call_tool("report", {"value": 1})
        assert fits.structured_content == {"n": 1}
        session_before = manager.server("r").session.session_id

        with pytest.raises(trio_mcp.InvocationFailedError) as caught:
            await manager.call_tool("report", {"value": "one"})
        failed = caught.value
        assert failed.outcome is trio_mcp.Outcome.UNKNOWN  # it reached the server and ran
        (attempt,) = failed.attempts
        assert attempt.category == "protocol_error" and attempt.sent
        assert "Invalid structured content returned by tool report" in (attempt.error or "")
        assert calls == [1, "one"]  # not repeated

        again = await manager.call_tool("report", {"value": 2})
        assert again.structured_content == {"n": 2}
        assert manager.server("r").session.session_id == session_before  # same connection


async def test_content_missing_where_the_tool_declares_it_is_an_invalid_result() -> None:
    session = never_entered(FleetSession)
    session._tool_output_schemas["t"] = COUNT
    with pytest.raises(trio_mcp.InvalidResultError, match="did not return structured content"):
        await session.validate_tool_result("t", CallToolResult(content=[]))
    # A tool that declares no output schema may answer without structured content.
    session._tool_output_schemas["u"] = None
    await session.validate_tool_result("u", CallToolResult(content=[]))


async def test_a_failure_to_list_an_unknown_tool_is_not_taken_for_an_invalid_result() -> None:
    """Checking the content of a tool it does not know, the session lists the tools first: a
    failure of that request is the connection's (it goes on as it is), not the answer's."""

    class Unlisted(FleetSession):
        listed = 0

        async def list_tools(self, *args: Any, **kwargs: Any) -> ListToolsResult:
            self.listed += 1
            raise RuntimeError("the connection is gone")

    session = never_entered(Unlisted)
    assert isinstance(session, Unlisted)
    with pytest.raises(RuntimeError, match="the connection is gone") as caught:
        await session.validate_tool_result("t", CallToolResult(content=[], structured_content={"n": 1}))
    assert not isinstance(caught.value, trio_mcp.InvalidResultError)
    assert session.listed == 1


async def test_a_tool_still_unlisted_after_listing_is_not_checked_and_listed_once() -> None:
    class Listing(FleetSession):
        listed = 0

        async def list_tools(self, *args: Any, **kwargs: Any) -> ListToolsResult:
            self.listed += 1
            self._tool_output_schemas["other"] = COUNT
            return ListToolsResult(tools=[])

    session = never_entered(Listing)
    assert isinstance(session, Listing)
    await session.validate_tool_result("t", CallToolResult(content=[], structured_content={"n": "x"}))
    assert session.listed == 1
