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
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, ToolAnnotations

from .._config import MemoryTransport, ServerConfig, ServerPolicy
from .._transports import MemoryServerHooks, memory_connection

__all__ = ["ScriptedServer", "memory_server"]


class ScriptedServer:
    """An in-memory MCP server (the SDK's ``MCPServer``) with scriptable faults.

    Args:
        name: the server's name (also its ``serverInfo.name``).
        era: ``"dual"`` (answers ``server/discover`` and ``initialize``: a 2026-07-28 server)
            or ``"legacy"`` (``initialize`` only, like an SDK 1.x server).
    """

    def __init__(self, name: str = "scripted", *, era: str = "dual", instructions: str | None = None) -> None:
        if era not in ("dual", "legacy"):
            raise ValueError("era must be 'dual' or 'legacy'")
        self.name = name
        self.era = era
        self.mcp_server = MCPServer(name, instructions=instructions)
        self._trio_mcp_hooks = MemoryServerHooks()
        self._trio_mcp_hooks.legacy_only = era == "legacy"
        self.ledger: Counter[str] = Counter()
        """Executions started per tool name."""
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

    def heal(self) -> None:
        """Clear every fault."""
        self.come_up()
        self.handshake_delay = self.probe_delay = 0.0
        self.handshake_error = self.probe_error = None
        self.tool_delays.clear()
        self.tool_errors.clear()
        self.tool_crash.clear()

    # -- observations --------------------------------------------------------------------------

    def executions(self, tool: str) -> int:
        """How many times ``tool`` started executing."""
        return self.ledger[tool]

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

    async def _middleware(self, ctx: Any, call_next: Any) -> Any:
        method = ctx.method
        if ctx.request_id is not None:
            self.requests[method] += 1
        connection = memory_connection.get()
        # server/discover is the handshake on a new 2026-era connection and a probe afterwards.
        is_handshake = method == "initialize" or (
            method == "server/discover" and (connection is None or not connection.handshaken)
        )
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

    def _register(self) -> None:
        server = self.mcp_server

        @server.tool(description="Echo the text back.")
        async def echo(text: str) -> str:
            async with self._executing("echo"):
                return text

        @server.tool(description="Charge an amount (a side effect: never run it twice).")
        async def charge(amount: int) -> str:
            async with self._executing("charge"):
                return f"charged {amount}"

        @server.tool(description="Sleep for a while.")
        async def sleep(seconds: float) -> str:
            async with self._executing("sleep"):
                await trio.sleep(seconds)
                return f"slept {seconds:g}"

        @server.tool(description="Work in steps, reporting progress after each.")
        async def work(steps: int, interval: float, ctx: Context) -> str:
            async with self._executing("work"):
                for step in range(1, steps + 1):
                    await trio.sleep(interval)
                    await ctx.report_progress(step, steps, f"step {step}")
                return f"worked {steps} steps"

        @server.tool(
            description="Look a key up (read-only).",
            annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True),
        )
        async def lookup(key: str) -> str:
            async with self._executing("lookup"):
                return f"{self.name}:{key}"

        @server.resource("docs://readme", description="The readme.")
        async def readme() -> str:
            async with self._executing("docs://readme"):
                return f"readme from {self.name}"

        @server.prompt(description="Review some code.")
        async def review(code: str) -> str:
            return f"Please review:\n{code}"

    def __repr__(self) -> str:
        return f"<ScriptedServer {self.name} era={self.era} live={self.live_connections}>"


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
