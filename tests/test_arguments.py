"""Argument checks against a tool's inputSchema or a prompt's declared arguments (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from mcp_types import Prompt, PromptArgument, Tool

from trio_mcp._arguments import argument_problem, compile_check

SIMPLE = {
    "type": "object",
    "title": "findArguments",
    "properties": {"key": {"type": "integer", "title": "Key"}, "exact": {"type": "boolean"}},
    "required": ["key"],
}
RICH = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 3},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name"],
}

REMOTE = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"id": {"type": "string"}, "profile": {"$ref": "http://127.0.0.1:9/profile.json"}},
    "required": ["id"],
}


def tool(schema: dict[str, Any]) -> Tool:
    return Tool(name="t", input_schema=schema)


@pytest.mark.parametrize(
    ("schema", "arguments", "expected"),
    [
        (SIMPLE, {"key": 1}, None),
        (SIMPLE, {"key": 1, "exact": True}, None),
        (SIMPLE, {"key": 1.0}, None),  # JSON Schema's integer accepts an integral float
        (SIMPLE, {"key": 1.5}, "argument 'key': 1.5 is not of type 'integer'"),
        (SIMPLE, {"key": True}, "argument 'key': True is not of type 'integer'"),
        (SIMPLE, {"key": "1"}, "argument 'key': '1' is not of type 'integer'"),
        (SIMPLE, {}, "'key' is a required property"),
        (SIMPLE, None, "'key' is a required property"),
        (RICH, {"name": "abc", "tags": ["x"]}, None),
        (RICH, {"name": "ab"}, "argument 'name': 'ab' is too short"),
        (RICH, {"name": "abc", "tags": [1]}, "argument 'tags.0': 1 is not of type 'string'"),
        # null for a parameter the schema does not require means "no value"; a required one is not.
        (SIMPLE, {"key": 1, "exact": None}, None),
        (RICH, {"name": "abc", "tags": None}, None),
        (SIMPLE, {"key": None}, "argument 'key': None is not of type 'integer'"),
        # A reference to another document is never fetched: the rest of the schema still holds.
        (REMOTE, {"id": "u1", "profile": {"anything": 1}}, None),
        (REMOTE, {"profile": {}}, "'id' is a required property"),
        (REMOTE, {"id": 7}, "argument 'id': 7 is not of type 'string'"),
    ],
)
def test_tool_arguments_against_the_schema(
    schema: dict[str, Any], arguments: Any, expected: str | None
) -> None:
    check = compile_check("tools", tool(schema))
    assert check is not None
    # Twice: the second verdict may come from the per-shape memo and must be the same.
    assert check(arguments) == expected
    assert check(arguments) == expected
    assert argument_problem("tools", tool(schema), arguments) == expected


def test_the_shape_memo_never_lets_a_value_through_that_the_schema_refuses() -> None:
    check = compile_check("tools", tool(SIMPLE))
    assert check is not None
    assert check({"key": 2.0}) is None
    assert check({"key": 2.5}) == "argument 'key': 2.5 is not of type 'integer'"
    assert check({"key": 3}) is None
    assert check({"key": False}) == "argument 'key': False is not of type 'integer'"
    # Containers are not shapes: always checked in full.
    assert check({"key": [1]}) == "argument 'key': [1] is not of type 'integer'"


def test_one_schema_is_compiled_once_for_every_server_that_describes_a_tool_with_it() -> None:
    # A fleet of a thousand servers offering one tool compiled its schema a thousand times
    # (checking a schema takes milliseconds): connecting the fleet took seconds more.
    first = compile_check("tools", tool(dict(SIMPLE)))
    assert first is not None
    assert compile_check("tools", tool({**SIMPLE, "title": "findArguments"})) is first
    assert compile_check("tools", tool(RICH)) is not first
    assert first({"key": 1}) is None
    assert first({"key": "1"}) == "argument 'key': '1' is not of type 'integer'"
    # The memo keeps verdicts, not reasons: each refusal names its own value.
    assert first({"key": "2"}) == "argument 'key': '2' is not of type 'integer'"


def test_a_schema_we_cannot_use_checks_nothing() -> None:
    assert compile_check("tools", tool({"type": 12})) is None
    assert argument_problem("tools", tool({"type": 12}), {"anything": 1}) is None


def test_prompt_arguments() -> None:
    prompt = Prompt(
        name="review",
        arguments=[PromptArgument(name="code", required=True), PromptArgument(name="style", required=False)],
    )
    check = compile_check("prompts", prompt)
    assert check is not None
    assert check({"code": "x"}) is None
    assert check({"code": "x", "style": "terse"}) is None
    assert check({}) == "missing required argument 'code'"
    assert check({"code": 3}) == "argument 'code' must be a string"
    assert compile_check("resources", prompt) is None
