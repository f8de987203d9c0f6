"""A fault-injection kit: scriptable in-memory MCP servers for virtual-time tests.

:class:`ScriptedServer` is a real MCP server built with the SDK's ``MCPServer``. Register it
with :func:`memory_server` and drive faults from the test while the manager runs under
``trio.testing.MockClock`` (pytest-trio's ``autojump_clock``)::

    server = ScriptedServer("primary")
    async with trio_mcp.open_manager([memory_server(server)]) as manager:
        server.hang_tool("charge")
        with pytest.raises(trio_mcp.InvocationFailedError):
            await manager.call_tool("charge", {"amount": 5}, attempt_timeout=2)
        assert server.executions("charge") == 1

Every tool is ``async def`` (tools in worker threads would let the virtual clock jump while
they run). Tools:

- ``echo(text)``: returns ``text``.
- ``charge(amount)``: a side-effecting tool; returns ``"charged <amount>"``.
- ``sleep(seconds)``: sleeps, then returns ``"slept <seconds>"``.
- ``work(steps, interval)``: reports progress every ``interval`` seconds for ``steps`` steps.
- ``lookup(key)``: a read-only, idempotent tool (annotated as such).

Resource ``docs://readme`` and prompt ``review(code)`` are served too.

Faults (each holds until cleared; :meth:`ScriptedServer.heal` clears them all):

- the server: ``go_down`` / ``come_up``, ``close_connections``, ``expire_sessions``;
- handshakes and probes: ``delay_handshake``, ``hang_handshake``, ``fail_handshake``,
  ``fail_probes``, ``delay_probes``;
- every request: ``answer_status`` (401, 500, ...: refused before anything runs);
- one tool: ``hang_tool``, ``delay_tool``, ``fail_tool``, ``crash_during``, and
  ``mangle_responses`` (its answer written twice, unparseable, a parse error, or no valid result).

Every tool call may carry an ``invocation_id`` argument (any tool accepts it): the server then
counts the executions it started per invocation id in :attr:`ScriptedServer.invocations`, the
ledger that :class:`History` checks its invariants against::

    history = History()
    with history.watch(manager):
        await history.call(manager, "charge", {"amount": 5}, idempotent=False, timeout=10)
    history.load_ledger(server.name, server.invocations)
    history.check()

:class:`History` checks the invariants N1 to N6 on a recorded run (see
:mod:`trio_mcp.testing.history`); :class:`Baseline` captures what the process holds (children,
zombies, open files, trio tasks) to check that a run gave it all back.

:class:`FaultProxy` puts faults between the manager and a real server over TCP (streamable
HTTP): a proxy on loopback whose fault the test switches at any time (latency, black hole,
reset after N bytes, slow close, one-byte fragments, truncation; see
:mod:`trio_mcp.testing.proxy`)::

    async with FaultProxy(server_port) as proxy:
        transport = trio_mcp.HttpTransport(url=proxy.url("/mcp"))
        ...
        proxy.reset_after(40, direction="downstream")
"""

from __future__ import annotations

import contextvars
import math
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import trio
from mcp.server import Server
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts import Prompt
from mcp.server.mcpserver.tools import Tool
from mcp.server.runner import serve_loop
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, ToolAnnotations

from .._config import MemoryTransport, ServerConfig, ServerPolicy
from .._transports import MemoryServerHooks, memory_connection
from ._baseline import Baseline as Baseline
from ._wire import WIRE_FAULTS, Wire, WireFault
from .history import History as History
from .history import InvariantViolationError as InvariantViolationError
from .history import Violation as Violation
from .proxy import FaultProxy as FaultProxy

__all__ = [
    "Baseline",
    "FaultProxy",
    "History",
    "InvariantViolationError",
    "ScriptedServer",
    "Violation",
    "memory_server",
]

INVOCATION_ID_ARGUMENT = "invocation_id"
"""The tool-call argument a :class:`ScriptedServer` keys its execution ledger by."""

_current_invocation: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "trio_mcp_testing_invocation", default=None
)

_TOOLS: tuple[tuple[str, str, ToolAnnotations | None], ...] = (
    ("echo", "Echo the text back.", None),
    ("charge", "Charge an amount (a side effect: never run it twice).", None),
    ("sleep", "Sleep for a while.", None),
    ("work", "Work in steps, reporting progress after each.", None),
    (
        "lookup",
        "Look a key up (read-only).",
        ToolAnnotations(read_only_hint=True, idempotent_hint=True),
    ),
)


class ScriptedServer:
    """An in-memory MCP server (the SDK's ``MCPServer``) with scriptable faults.

    Args:
        name: the server's name (also its ``serverInfo.name``).
        era: ``"dual"`` (answers ``server/discover`` and ``initialize``: a 2026-07-28 server)
            or ``"legacy"`` (``initialize`` only, like an SDK 1.x server).
    """

    _tool_templates: ClassVar[dict[str, Tool]] = {}
    """Each tool's registration, built once: deriving a tool's schemas costs milliseconds, and
    a storm builds a thousand servers."""
    _prompt_template: ClassVar[Prompt | None] = None

    def __init__(self, name: str = "scripted", *, era: str = "dual", instructions: str | None = None) -> None:
        if era not in ("dual", "legacy"):
            raise ValueError("era must be 'dual' or 'legacy'")
        self.name = name
        self.era = era
        self.mcp_server = MCPServer(name, instructions=instructions, tools=self._tools())
        # Every connection is served by _serve (both eras), which applies the wire faults.
        self._trio_mcp_hooks = MemoryServerHooks()
        self.mcp_server._lowlevel_server.run = self._serve  # type: ignore[method-assign,assignment]
        self.ledger: Counter[str] = Counter()
        """Executions started per tool name."""
        self.invocations: Counter[str] = Counter()
        """Executions started per invocation id (the ``invocation_id`` argument of a tool call)."""
        self.completed: Counter[str] = Counter()
        """Executions finished per tool name."""
        self.in_flight: Counter[str] = Counter()
        """Executions running now per tool name (an abandoned request is cancelled at the server)."""
        self.requests: Counter[str] = Counter()
        """Requests received per JSON-RPC method."""
        self.handshake_delay = 0.0
        self.handshake_error: str | None = None
        self.probe_delay = 0.0
        self.probe_error: str | None = None
        self.tool_delays: dict[str, float] = {}
        self.tool_errors: dict[str, str] = {}
        self.tool_crash: set[str] = set()
        self.wire_faults: dict[str, WireFault] = {}
        """How the answer to each tool's calls is mangled (see :meth:`mangle_responses`)."""
        self.status: int | None = None
        """The HTTP status every request is answered with (see :meth:`answer_status`)."""
        self.listen_refused = False
        """Whether ``subscriptions/listen`` is refused (see :meth:`refuse_listen`)."""
        self.expired_through = 0
        """Connections numbered up to this one have an expired session (see :meth:`expire_sessions`)."""
        self._register()
        self.mcp_server._lowlevel_server.middleware.insert(0, self._middleware)

    # -- faults ----------------------------------------------------------------------------------

    def go_down(self) -> None:
        """Refuse new connections and drop the live ones (the server crashed)."""
        self._trio_mcp_hooks.refuse_connections = True
        self._trio_mcp_hooks.kill_connections()

    def come_up(self) -> None:
        """Accept connections again."""
        self._trio_mcp_hooks.refuse_connections = False

    def close_connections(self) -> int:
        """Drop every live connection (the server restarted); returns how many."""
        return self._trio_mcp_hooks.kill_connections()

    def delay_handshake(self, seconds: float) -> None:
        self.handshake_delay = seconds

    def hang_handshake(self) -> None:
        self.handshake_delay = math.inf

    def fail_handshake(self, message: str | None = "handshake refused") -> None:
        """Answer ``initialize`` / ``server/discover`` with an error (``None`` clears)."""
        self.handshake_error = message

    def fail_probes(self, message: str | None = "probe failed") -> None:
        """Answer probes (``ping``, and ``server/discover`` after the handshake) with an error
        (``None`` clears)."""
        self.probe_error = message

    def delay_probes(self, seconds: float) -> None:
        self.probe_delay = seconds

    def delay_tool(self, tool: str, seconds: float) -> None:
        self.tool_delays[tool] = seconds

    def hang_tool(self, tool: str) -> None:
        self.tool_delays[tool] = math.inf

    def fail_tool(self, tool: str, message: str | None = "tool failed") -> None:
        """Make ``tool`` answer a JSON-RPC internal error (``None`` clears)."""
        if message is None:
            self.tool_errors.pop(tool, None)
        else:
            self.tool_errors[tool] = message

    def crash_during(self, tool: str) -> None:
        """Drop the connection while ``tool`` runs (after it has started executing)."""
        self.tool_crash.add(tool)

    def refuse_listen(self, refused: bool = True) -> None:
        """Answer ``subscriptions/listen`` with "method not found" (a 2026-07-28 server that
        says its lists can change but holds no list-change stream); ``False`` serves it again."""
        self.listen_refused = refused

    def expire_sessions(self) -> None:
        """Forget the sessions of every connection open now, as an HTTP server that restarted
        does: every request on them, probes included, is answered as the SDK's streamable
        HTTP client reports a 404 on a known session (invalid request, "Session terminated"),
        before anything executes. Connections opened later are served normally."""
        self.expired_through = self.connections_opened

    def answer_status(self, status: int | None) -> None:
        """Answer every request, handshakes included, as an HTTP server answering ``status``
        (401, 500, ...) does, as the SDK's streamable HTTP client reports it (a 404: see
        :meth:`expire_sessions`; any other status: an internal error, "Server returned an
        error response"), before anything executes; ``None`` clears.

        Over the in-memory transport there is no HTTP status for the connection to record, so
        the failure is classified from the JSON-RPC error alone (``rpc_error`` on a call,
        ``protocol_error`` on a handshake), not ``auth_required`` / ``http_status``.
        """
        if status is not None and not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400 to 599)")
        self.status = status

    def mangle_responses(self, tool: str, how: WireFault | None = "duplicate") -> None:
        """Mangle the answer to every call of ``tool`` (which executes normally); ``None``
        clears.

        ``how``: ``"duplicate"`` (the answer is written twice, with one id), ``"frame"``
        (replaced by a frame that does not parse: the call is never answered), ``"parse_error"``
        (replaced by a JSON-RPC parse error, as the SDK's streamable HTTP client reports a body it
        cannot parse) or ``"result"`` (replaced by a result that is no ``CallToolResult``).
        """
        if how is None:
            self.wire_faults.pop(tool, None)
        elif how not in WIRE_FAULTS:
            raise ValueError(f"how must be one of {', '.join(WIRE_FAULTS)}")
        else:
            self.wire_faults[tool] = how

    def heal(self) -> None:
        """Clear every fault (sessions that expired stay expired: their connections are gone
        for good, as after a real restart)."""
        self.come_up()
        self.handshake_delay = self.probe_delay = 0.0
        self.handshake_error = self.probe_error = None
        self.tool_delays.clear()
        self.tool_errors.clear()
        self.tool_crash.clear()
        self.wire_faults.clear()
        self.status = None
        self.listen_refused = False

    # -- observations --------------------------------------------------------------------------

    def executions(self, tool: str) -> int:
        """How many times ``tool`` started executing."""
        return self.ledger[tool]

    @property
    def faulty(self) -> bool:
        """Whether any fault is set now."""
        return bool(
            self._trio_mcp_hooks.refuse_connections
            or self.handshake_delay
            or self.handshake_error is not None
            or self.probe_delay
            or self.probe_error is not None
            or self.tool_delays
            or self.tool_errors
            or self.tool_crash
            or self.wire_faults
            or self.status is not None
        )

    @property
    def connections_opened(self) -> int:
        return self._trio_mcp_hooks.connections_opened

    @property
    def connect_attempts(self) -> list[float]:
        """Trio-clock times of every connection attempt (refused ones included)."""
        return list(self._trio_mcp_hooks.connect_attempts)

    @property
    def live_connections(self) -> int:
        return self._trio_mcp_hooks.live_connections

    # -- internals -----------------------------------------------------------------------------

    async def _serve(self, read: Any, write: Any, init_options: Any, raise_exceptions: bool = False) -> None:
        """Serve one in-memory connection (in place of the SDK server's ``run``)."""
        wire = Wire(read, write, self.wire_faults.get)
        server = self.mcp_server._lowlevel_server
        if self.era == "legacy":
            async with server.lifespan(server) as state:
                await serve_loop(
                    server, wire.read, wire.write, lifespan_state=state, init_options=init_options
                )
        else:
            await Server.run(server, wire.read, wire.write, init_options, raise_exceptions)

    async def _middleware(self, ctx: Any, call_next: Any) -> Any:
        method = ctx.method
        if ctx.request_id is not None:
            self.requests[method] += 1
        connection = memory_connection.get()
        if ctx.request_id is not None:
            if connection is not None and connection.number <= self.expired_through:
                raise MCPError(code=INVALID_REQUEST, message="Session terminated")
            if self.status == 404:
                raise MCPError(code=INVALID_REQUEST, message="Session terminated")
            if self.status is not None:
                raise MCPError(code=INTERNAL_ERROR, message="Server returned an error response")
        if method == "subscriptions/listen" and self.listen_refused:
            raise MCPError(code=METHOD_NOT_FOUND, message="Method not found: subscriptions/listen")
        # server/discover is the handshake on a new 2026-era connection and a probe afterwards.
        is_handshake = method == "initialize" or (
            method == "server/discover" and (connection is None or not connection.handshaken)
        )
        if method == "tools/call":
            arguments = (ctx.params or {}).get("arguments") or {}
            invocation = arguments.get(INVOCATION_ID_ARGUMENT)
            token = _current_invocation.set(invocation if isinstance(invocation, str) else None)
            try:
                return await call_next(ctx)
            finally:
                _current_invocation.reset(token)
        if is_handshake:
            if self.handshake_delay:
                await trio.sleep(self.handshake_delay)
            if self.handshake_error is not None:
                raise MCPError(code=INTERNAL_ERROR, message=self.handshake_error)
            result = await call_next(ctx)
            if connection is not None:
                connection.handshaken = True
            return result
        if method in ("ping", "server/discover"):
            if self.probe_delay:
                await trio.sleep(self.probe_delay)
            if self.probe_error is not None:
                raise MCPError(code=INTERNAL_ERROR, message=self.probe_error)
        return await call_next(ctx)

    @asynccontextmanager
    async def _executing(self, tool: str) -> AsyncIterator[None]:
        """Book-keeping and faults around one execution of ``tool``."""
        self.ledger[tool] += 1
        invocation = _current_invocation.get()
        if invocation is not None:
            self.invocations[invocation] += 1
        self.in_flight[tool] += 1
        try:
            if tool in self.tool_crash:
                self.close_connections()
                await trio.sleep_forever()
            delay = self.tool_delays.get(tool, 0.0)
            if delay:
                await trio.sleep(delay)
            error = self.tool_errors.get(tool)
            if error is not None:
                raise MCPError(code=INTERNAL_ERROR, message=error)
            yield
            self.completed[tool] += 1
        finally:
            self.in_flight[tool] -= 1

    def _tools(self) -> list[Tool]:
        """This server's tools: each template, bound to this server's function."""
        templates = ScriptedServer._tool_templates
        if not templates:
            for tool_name, description, annotations in _TOOLS:
                templates[tool_name] = Tool.from_function(
                    getattr(self, f"_tool_{tool_name}"),
                    name=tool_name,
                    description=description,
                    annotations=annotations,
                )
        return [
            template.model_copy(update={"fn": getattr(self, f"_tool_{tool_name}")})
            for tool_name, template in templates.items()
        ]

    async def _tool_echo(self, text: str) -> str:
        async with self._executing("echo"):
            return text

    async def _tool_charge(self, amount: int) -> str:
        async with self._executing("charge"):
            return f"charged {amount}"

    async def _tool_sleep(self, seconds: float) -> str:
        async with self._executing("sleep"):
            await trio.sleep(seconds)
            return f"slept {seconds:g}"

    async def _tool_work(self, steps: int, interval: float, ctx: Context) -> str:
        async with self._executing("work"):
            for step in range(1, steps + 1):
                await trio.sleep(interval)
                await ctx.report_progress(step, steps, f"step {step}")
            return f"worked {steps} steps"

    async def _tool_lookup(self, key: str) -> str:
        async with self._executing("lookup"):
            return f"{self.name}:{key}"

    def _register(self) -> None:
        server = self.mcp_server

        @server.resource("docs://readme", description="The readme.")
        async def readme() -> str:
            async with self._executing("docs://readme"):
                return f"readme from {self.name}"

        template = ScriptedServer._prompt_template
        if template is None:
            template = Prompt.from_function(_review, name="review", description="Review some code.")
            ScriptedServer._prompt_template = template
        server.add_prompt(template)

    def __repr__(self) -> str:
        return f"<ScriptedServer {self.name} era={self.era} live={self.live_connections}>"


async def _review(code: str) -> str:
    return f"Please review:\n{code}"


def memory_server(
    server: ScriptedServer | Any,
    *,
    name: str | None = None,
    policy: ServerPolicy | None = None,
    idempotent: bool = False,
    idempotent_tools: frozenset[str] | set[str] = frozenset(),
    trusted: bool = False,
    **policy_overrides: Any,
) -> ServerConfig:
    """A :class:`ServerConfig` for an in-memory server (``policy_overrides`` go to
    :class:`ServerPolicy`, e.g. ``health_interval=5``, ``backoff=BackoffPolicy(jitter=0)``)."""
    if policy is None:
        policy = ServerPolicy(**policy_overrides)
    elif policy_overrides:
        raise TypeError("pass either policy or policy keyword overrides, not both")
    server_name = name or getattr(server, "name", None) or "memory"
    return ServerConfig(
        name=server_name,
        transport=MemoryTransport(server=server),
        policy=policy,
        idempotent=idempotent,
        idempotent_tools=frozenset(idempotent_tools),
        trusted=trusted,
    )
