"""OpenTelemetry spans: one per invocation, a child per attempt.

Through ``opentelemetry-api`` (the MCP SDK's own dependency): without an OpenTelemetry SDK
configured nothing is created at all. With one (``pip install 'trio-mcp[otel]'``), an invocation
is a span ``trio_mcp <method> <target>``; each handshake and each attempt on a server is a child
span ``trio_mcp <stage> <server>``, and the SDK's own ``MCP send ...`` request spans are children
of the attempt that sent them (an attempt runs in the caller's task, with its span current). The
caller's current span, e.g. the HTTP request's remote parent, is the invocation's parent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from ._attempt import Attempt, InvocationResult

if TYPE_CHECKING:
    import trio

_tracer = trace.get_tracer("trio_mcp")
_TARGET_ATTRIBUTE = {
    "tools/call": "mcp.tool.name",
    "resources/read": "mcp.resource.uri",
    "prompts/get": "mcp.prompt.name",
}


_UNKNOWN = object()
_PROVIDER_FROM_ENVIRONMENT = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


def tracing() -> bool:
    """Whether an OpenTelemetry SDK is configured (else every span would be a no-op, and none
    is created).

    Asked once per invocation, so the common answer (nothing configured) is read from the API's
    global directly: ``get_tracer_provider()`` encodes and looks up an environment variable on
    every call. A provider named by ``OTEL_PYTHON_TRACER_PROVIDER`` is found when the variable
    was set before this module was imported.
    """
    if getattr(trace, "_TRACER_PROVIDER", _UNKNOWN) is None and not _PROVIDER_FROM_ENVIRONMENT:
        return False
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _target_attributes(method: str, target: str | None) -> dict[str, str]:
    attributes = {"mcp.method.name": method}
    if target is not None:
        attributes[_TARGET_ATTRIBUTE.get(method, "trio_mcp.target")] = target
    return attributes


class InvocationSpan:
    """An invocation's span, started when :func:`tracing` (a child of the caller's current
    span) and ended by ``succeeded(result)`` or ``failed(exc)``; its attempts' spans are its
    children. It is never made current itself: a call without tracing then costs no context
    manager at all."""

    def __init__(self, method: str, target: str | None, request_id: str) -> None:
        self._span = _tracer.start_span(
            f"trio_mcp {method}{f' {target}' if target else ''}",
            kind=SpanKind.CLIENT,
            attributes={**_target_attributes(method, target), "trio_mcp.request_id": request_id},
        )
        self._context = trace.set_span_in_context(self._span)

    def attempt(self, server: str, stage: str, method: str, target: str | None) -> AttemptSpan:
        """A child span for one stage on one server."""
        return AttemptSpan(server, stage, method, target, self._context)

    def succeeded(self, result: InvocationResult[Any]) -> None:
        self._span.set_attributes(
            {
                "trio_mcp.outcome": "success",
                "trio_mcp.server": result.server,
                "trio_mcp.attempts": len(result.attempts),
            }
        )
        self._span.end()

    def failed(self, exc: BaseException) -> None:
        attempts: tuple[Attempt, ...] | list[Attempt] = getattr(exc, "attempts", ())
        self._span.set_attributes(
            {
                "trio_mcp.outcome": str(getattr(exc, "outcome", None) or type(exc).__name__),
                "trio_mcp.attempts": len(attempts),
            }
        )
        self._span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        self._span.end()


class NoInvocationSpan:
    def attempt(self, server: str, stage: str, method: str, target: str | None) -> _NoAttemptSpan:
        return NO_ATTEMPT_SPAN

    def succeeded(self, result: InvocationResult[Any]) -> None:
        return None

    def failed(self, exc: BaseException) -> None:
        return None


NO_INVOCATION_SPAN = NoInvocationSpan()


class AttemptSpan:
    """One stage on one server: current while it sends (``with span.current():``), ended with
    the attempt it produced (``span.end(attempt)``)."""

    def __init__(
        self, server: str, stage: str, method: str, target: str | None, parent: Context | None = None
    ) -> None:
        attributes = {
            "trio_mcp.server": server,
            "trio_mcp.stage": stage,
            **_target_attributes(method, target),
        }
        self._span = _tracer.start_span(f"trio_mcp {stage} {server}", context=parent, attributes=attributes)

    def current(self) -> AbstractContextManager[Any]:
        return trace.use_span(self._span, end_on_exit=False, record_exception=False)

    @contextmanager
    def covering(self, scope: trio.CancelScope) -> Iterator[trio.CancelScope]:
        """``scope`` entered, with this span current inside it."""
        with scope, self.current():
            yield scope

    def end(self, attempt: Attempt | None) -> None:
        if attempt is not None:
            self._span.set_attributes(
                {
                    "trio_mcp.success": attempt.success,
                    "trio_mcp.sent": attempt.sent,
                    "trio_mcp.error_category": attempt.category or "",
                }
            )
            if not attempt.success:
                self._span.set_status(Status(StatusCode.ERROR, attempt.error or ""))
        self._span.end()


_NOT_CURRENT: AbstractContextManager[None] = nullcontext()


class _NoAttemptSpan:
    def current(self) -> AbstractContextManager[Any]:
        return _NOT_CURRENT

    def covering(self, scope: trio.CancelScope) -> AbstractContextManager[trio.CancelScope]:
        return scope

    def end(self, attempt: Attempt | None) -> None:
        return None


NO_ATTEMPT_SPAN = _NoAttemptSpan()
