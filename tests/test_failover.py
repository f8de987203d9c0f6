"""Table tests of ``may_repeat`` (``trio_mcp._failover``): may a request that was sent to one
server (so it may have executed there) be sent to another?"""

from __future__ import annotations

from itertools import product

import mcp_types
import pytest
from mcp.server.mcpserver import MCPServer

from trio_mcp import MemoryTransport, ServerConfig
from trio_mcp._failover import FAILOVER_MODES, READ_METHODS, FailoverMode, may_repeat

TRANSPORT = MemoryTransport(server=MCPServer("table"))


def config(
    *, idempotent: bool = False, idempotent_tools: frozenset[str] = frozenset(), trusted: bool = False
) -> ServerConfig:
    return ServerConfig(
        name="s",
        transport=TRANSPORT,
        idempotent=idempotent,
        idempotent_tools=idempotent_tools,
        trusted=trusted,
    )


def tool(
    name: str = "charge",
    *,
    read_only: bool | None = None,
    idempotent: bool | None = None,
    destructive: bool | None = None,
    annotated: bool = True,
) -> mcp_types.Tool:
    annotations = (
        mcp_types.ToolAnnotations(
            read_only_hint=read_only, idempotent_hint=idempotent, destructive_hint=destructive
        )
        if annotated
        else None
    )
    return mcp_types.Tool(
        name=name,
        input_schema={"type": "object", "properties": {"amount": {"type": "integer"}}},
        annotations=annotations,
    )


PLAIN = config()
IDEMPOTENT = config(idempotent=True)
CHARGE_IDEMPOTENT = config(idempotent_tools=frozenset({"charge", "refund"}))
TRUSTED = config(trusted=True)
TRUSTED_IDEMPOTENT = config(trusted=True, idempotent=True)

READ_ONLY = tool(read_only=True)
IDEMPOTENT_HINT = tool(idempotent=True)
BOTH_HINTS = tool(read_only=True, idempotent=True)
NO_HINTS = tool(read_only=False, idempotent=False)
DESTRUCTIVE = tool(destructive=True)
UNSET_HINTS = tool()
UNANNOTATED = tool(annotated=False)

ALL_METHODS = (*sorted(READ_METHODS), "tools/call", "completion/complete", "logging/setLevel", "ping")
ALL_CONFIGS = (PLAIN, IDEMPOTENT, CHARGE_IDEMPOTENT, TRUSTED, TRUSTED_IDEMPOTENT)
ALL_TOOLS = (None, READ_ONLY, IDEMPOTENT_HINT, BOTH_HINTS, NO_HINTS, DESTRUCTIVE, UNSET_HINTS, UNANNOTATED)


def test_the_tables() -> None:
    assert FAILOVER_MODES == ("safe", "always", "never")
    assert READ_METHODS == {
        "resources/read",
        "prompts/get",
        "tools/list",
        "resources/list",
        "prompts/list",
        "resources/templates/list",
    }
    assert "tools/call" not in READ_METHODS
    # the annotation field names may_repeat relies on
    assert READ_ONLY.annotations is not None and READ_ONLY.annotations.read_only_hint is True
    assert IDEMPOTENT_HINT.annotations is not None and IDEMPOTENT_HINT.annotations.idempotent_hint is True


@pytest.mark.parametrize("method", ALL_METHODS)
def test_always_repeats_and_never_does_not(method: str) -> None:
    for server, description, target in product(ALL_CONFIGS, ALL_TOOLS, ("charge", None)):
        assert may_repeat(method, target, server, description, "always") is True
        assert may_repeat(method, target, server, description, "never") is False


@pytest.mark.parametrize("method", sorted(READ_METHODS))
@pytest.mark.parametrize("server", ALL_CONFIGS)
def test_safe_repeats_every_read(method: str, server: ServerConfig) -> None:
    for target, description in (("docs://readme", None), ("review", NO_HINTS), (None, None)):
        assert may_repeat(method, target, server, description, "safe") is True


@pytest.mark.parametrize("method", ["completion/complete", "logging/setLevel", "ping", "tools/unknown"])
@pytest.mark.parametrize("server", ALL_CONFIGS)
def test_safe_never_repeats_other_methods(method: str, server: ServerConfig) -> None:
    # Idempotency (configured or annotated) is about tool calls only.
    for description in (None, BOTH_HINTS):
        assert may_repeat(method, "charge", server, description, "safe") is False


@pytest.mark.parametrize(
    "server, target, description, expected",
    [
        # nothing says it is safe: no repeat
        (PLAIN, "charge", None, False),
        (PLAIN, "charge", UNANNOTATED, False),
        (PLAIN, None, None, False),
        # the configuration says so: every tool, or the listed ones
        (IDEMPOTENT, "charge", None, True),
        (IDEMPOTENT, "anything", NO_HINTS, True),
        (IDEMPOTENT, None, None, True),
        (CHARGE_IDEMPOTENT, "charge", None, True),
        (CHARGE_IDEMPOTENT, "refund", NO_HINTS, True),
        (CHARGE_IDEMPOTENT, "transfer", None, False),
        (CHARGE_IDEMPOTENT, "transfer", BOTH_HINTS, False),  # not trusted: hints ignored
        (CHARGE_IDEMPOTENT, None, None, False),
        # a trusted server's own annotations are believed: readOnlyHint or idempotentHint
        (TRUSTED, "charge", READ_ONLY, True),
        (TRUSTED, "charge", IDEMPOTENT_HINT, True),
        (TRUSTED, "charge", BOTH_HINTS, True),
        (TRUSTED, "charge", NO_HINTS, False),
        (TRUSTED, "charge", UNSET_HINTS, False),
        (TRUSTED, "charge", DESTRUCTIVE, False),
        (TRUSTED, "charge", UNANNOTATED, False),
        (TRUSTED, "charge", None, False),
        (TRUSTED, None, READ_ONLY, True),
        # configured idempotency wins over annotations that do not say so
        (TRUSTED_IDEMPOTENT, "charge", NO_HINTS, True),
        (TRUSTED_IDEMPOTENT, "charge", None, True),
        # an untrusted server's annotations are ignored
        (PLAIN, "charge", READ_ONLY, False),
        (PLAIN, "charge", IDEMPOTENT_HINT, False),
        (PLAIN, "charge", BOTH_HINTS, False),
        (PLAIN, "lookup", tool("lookup", read_only=True, idempotent=True), False),
    ],
)
def test_safe_tool_calls(
    server: ServerConfig, target: str | None, description: mcp_types.Tool | None, expected: bool
) -> None:
    assert may_repeat("tools/call", target, server, description, "safe") is expected


def expected_repeat(
    method: str, server: ServerConfig, target: str | None, description: mcp_types.Tool | None, mode: str
) -> bool:
    """The rule, written out independently of the implementation."""
    if mode != "safe":
        return mode == "always"
    if method in READ_METHODS:
        return True
    if method != "tools/call":
        return False
    if server.idempotent or target in server.idempotent_tools:
        return True
    hints = description.annotations if description is not None else None
    return server.trusted and hints is not None and bool(hints.read_only_hint or hints.idempotent_hint)


@pytest.mark.parametrize("mode", FAILOVER_MODES)
def test_every_combination(mode: FailoverMode) -> None:
    cases = list(product(ALL_METHODS, ALL_CONFIGS, ("charge", "refund", "lookup", None), ALL_TOOLS))
    assert len(cases) == 10 * 5 * 4 * 8
    wrong = [
        (method, server.idempotent, sorted(server.idempotent_tools), server.trusted, target, description)
        for method, server, target, description in cases
        if may_repeat(method, target, server, description, mode)
        is not expected_repeat(method, server, target, description, mode)
    ]
    assert wrong == []


def test_it_is_pure() -> None:
    before = (PLAIN, BOTH_HINTS.model_copy(deep=True))
    for _ in range(3):
        assert may_repeat("tools/call", "charge", PLAIN, BOTH_HINTS, "safe") is False
        assert may_repeat("tools/call", "charge", TRUSTED, BOTH_HINTS, "safe") is True
    assert (PLAIN, BOTH_HINTS) == before
