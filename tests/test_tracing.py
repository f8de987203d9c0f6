"""OpenTelemetry spans: one per invocation, a child per attempt, the SDK's request spans under
the attempt that sent them, and the trace context of an HTTP request continued."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from _fleet import policy
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import trio_mcp
from trio_mcp.testing import ScriptedServer, memory_server
from web.app import create_app

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def _children(all_spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in all_spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


async def test_an_invocation_with_a_failover_is_a_tree_of_spans(spans: InMemorySpanExporter) -> None:
    a, b = ScriptedServer("a"), ScriptedServer("b")
    configs = [memory_server(s, policy=policy(health_interval=3600.0)) for s in (a, b)]
    async with trio_mcp.open_manager(configs) as manager:
        await manager.connect()
        spans.clear()
        a.fail_tool("echo")
        result = await manager.invoke(
            "tools/call", "echo", {"text": "x"}, preferred=["a", "b"], failover="always", request_id="r-1"
        )
        assert result.server == "b"
    finished = spans.get_finished_spans()
    (root,) = [s for s in finished if s.name == "trio_mcp tools/call echo"]
    assert root.parent is None
    assert root.kind is trace.SpanKind.CLIENT
    assert dict(root.attributes or {}) == {
        "mcp.method.name": "tools/call",
        "mcp.tool.name": "echo",
        "trio_mcp.outcome": "success",
        "trio_mcp.server": "b",
        "trio_mcp.attempts": 2,
        "trio_mcp.request_id": "r-1",
    }
    attempts = [s for s in _children(finished, root) if s.name.startswith("trio_mcp invoke")]
    assert [s.name for s in attempts] == ["trio_mcp invoke a", "trio_mcp invoke b"]
    first, second = (dict(s.attributes or {}) for s in attempts)
    assert (first["trio_mcp.success"], first["trio_mcp.sent"], first["trio_mcp.error_category"]) == (
        False,
        True,
        "rpc_error",
    )
    assert (second["trio_mcp.success"], second["trio_mcp.server"], second["mcp.tool.name"]) == (
        True,
        "b",
        "echo",
    )
    assert attempts[0].status.status_code is trace.StatusCode.ERROR
    # The SDK's own request span is a child of the attempt that sent it.
    for attempt in attempts:
        (sent,) = _children(finished, attempt)
        assert sent.name == "MCP send tools/call echo"


async def test_a_failed_invocation_says_its_outcome(spans: InMemorySpanExporter) -> None:
    a = ScriptedServer("a")
    async with trio_mcp.open_manager([memory_server(a, policy=policy(health_interval=3600.0))]) as manager:
        a.fail_tool("charge")
        with pytest.raises(trio_mcp.InvocationFailedError):
            await manager.invoke("tools/call", "charge", {"amount": 1}, request_id="r-2")
    (root,) = [s for s in spans.get_finished_spans() if s.name == "trio_mcp tools/call charge"]
    attributes = dict(root.attributes or {})
    assert (attributes["trio_mcp.outcome"], attributes["trio_mcp.request_id"]) == ("unknown", "r-2")
    assert root.status.status_code is trace.StatusCode.ERROR


async def test_the_http_request_trace_context_is_the_parent(spans: InMemorySpanExporter) -> None:
    a = ScriptedServer("a")
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with trio_mcp.open_manager([memory_server(a, policy=policy(health_interval=3600.0))]) as manager:
        transport = httpx.ASGITransport(app=create_app(manager))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post(
                "/api/v1/mcp/invoke/tool",
                json={"tool_name": "echo", "arguments": {"text": "x"}},
                headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
            )
            assert response.status_code == 200
    (root,) = [s for s in spans.get_finished_spans() if s.name == "trio_mcp tools/call echo"]
    assert root.context is not None and root.parent is not None
    assert format(root.context.trace_id, "032x") == trace_id
    assert format(root.parent.span_id, "016x") == parent_id
