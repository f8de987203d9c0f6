"""One live connection: the SDK ``ClientSession``, its handshake and its capability snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import trio
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError
from mcp_types import (
    REQUEST_TIMEOUT,
    UNSUPPORTED_PROTOCOL_VERSION,
    CallToolResult,
    DiscoverResult,
    ListToolsResult,
    Tool,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from ._arguments import Fits, output_check
from ._attempt import Era
from ._clock import TimeAnchor
from ._config import ProtocolMode
from ._exceptions import InvalidResultError
from ._state import AfterDrop, CapabilitySnapshot
from ._transports import Link
from ._transports.http_probe import PlainDiscoverProbe


class FleetSession(ClientSession):
    """The SDK session, with a cheaper check of a tool's structured content: content that fits
    the tool's output schema is told so by a check compiled once for every schema alike (and
    one verdict per shape of content where the schema can only tell shapes apart), where the
    SDK walks the schema on every call. Anything else is left to the SDK's own check, which
    says why it does not fit (the same validator: the verdicts agree), raised as
    :class:`InvalidResultError`: the call reached the server, and the connection is good. A
    tool the session does not know is listed first, outside that check: what the listing
    raises is the connection's, and goes on as it is."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fits: dict[str, tuple[object, Fits | None]] = {}
        """Per tool: the output schema its check was compiled for, and the check."""

    async def validate_tool_result(self, name: str, result: CallToolResult) -> None:
        schema = self._tool_output_schemas.get(name)
        content = result.structured_content
        if schema is not None and content is not None:
            checks = self._fits
            known = checks.get(name)
            if known is None or known[0] is not schema:
                # A tool listed again with another schema is compiled again.
                known = checks[name] = (schema, output_check(schema))
            check = known[1]
            if check is not None and check(content):
                return
        if name not in self._tool_output_schemas:
            # The SDK lists the tools again to learn the schema of one it does not know: that is
            # a request like any other, and what it raises is not about this answer.
            await self.list_tools()
            if name not in self._tool_output_schemas:
                return  # still not listed: no schema to check the content against
        try:
            await super().validate_tool_result(name, result)
        except RuntimeError as exc:
            # The server's answer, not the connection, is at fault.
            raise InvalidResultError(str(exc)) from exc


def era_of(session: ClientSession) -> Era:
    return Era.MODERN if session.discover_result is not None else Era.LEGACY


async def handshake(session: ClientSession, mode: ProtocolMode) -> None:
    """Negotiate the protocol era: ``server/discover`` (2026-07-28) and/or ``initialize``.

    ``auto`` tries ``server/discover`` first and falls back to ``initialize`` when the server
    answers it with a JSON-RPC error, unless it names only modern versions we do not share.
    No answer within the SDK's own discover cap says nothing about the era:
    that error is raised, and the next attempt tries ``server/discover`` again. Falling back on
    the same connection would be refused by a 2026-07-28 server that got to the discover late.
    """
    if mode == "legacy":
        await session.initialize()
        return
    if mode == "modern":
        await session.discover()
        return
    try:
        await session.discover()
    except MCPError as exc:
        if not _falls_back(exc):
            raise
        await session.initialize()
    except (ValidationError, RuntimeError):
        # An unparseable answer, or one naming no modern version we share, is not evidence of a
        # 2026-07-28 server: fall back to the handshake, as the SDK's own auto mode does.
        await session.initialize()


def _falls_back(exc: MCPError) -> bool:
    """Whether ``server/discover`` failing with ``exc`` leads to ``initialize`` (in ``auto``
    mode): not when no answer came within the SDK's discover cap (made up on this side; a
    -32000 may be a real answer: legacy servers refuse a request without a session with it),
    nor when the server named only versions of the 2026-07-28 era that we do not share."""
    if exc.code == REQUEST_TIMEOUT:
        return False
    if exc.code == UNSUPPORTED_PROTOCOL_VERSION:
        data = exc.error.data if isinstance(exc.error.data, dict) else {}
        supported = data.get("supported")
        if isinstance(supported, list) and not any(v in HANDSHAKE_PROTOCOL_VERSIONS for v in supported):
            return False
    return True


async def discover_without_session(session: ClientSession, mode: ProtocolMode) -> bool:
    """``server/discover`` through ``session``, whose dispatcher needs no session (see
    ``_transports.http_probe.SessionlessDispatcher``): ``True`` once it adopted the answer.
    ``False`` where :func:`handshake` would fall back to ``initialize`` on this answer: the
    server is then handshaken through a real session with ``initialize`` alone (it is not
    asked ``server/discover`` again). Everything :func:`handshake` raises is raised; so are
    transport errors (an unreachable server is not a legacy one).
    """
    if mode == "modern":
        await session.discover()
        return True
    try:
        await session.discover()
    except MCPError as exc:
        if not _falls_back(exc):
            raise
        return False
    except (ValidationError, RuntimeError):
        return False
    return True


def capability_snapshot(session: ClientSession, anchor: TimeAnchor) -> CapabilitySnapshot:
    info = session.server_info
    caps = session.server_capabilities
    now = trio.current_time()
    stamp = anchor.at(now)
    return CapabilitySnapshot(
        protocol_version=session.protocol_version or "unknown",
        era=era_of(session),
        server_name=info.name if info else None,
        server_version=info.version if info else None,
        capabilities=caps.model_dump(mode="json", by_alias=True, exclude_none=True) if caps else {},
        instructions=session.instructions,
        captured_at=now,
        captured_timestamp=stamp,
    )


async def rediscover(session: ClientSession) -> None:
    """Re-run ``server/discover`` on a live modern connection and adopt the answer."""
    version = session.protocol_version
    if version not in MODERN_PROTOCOL_VERSIONS:
        raise RuntimeError("rediscover needs a modern (2026-07-28) connection")
    raw = await session.send_discover(version)
    session.adopt(DiscoverResult.model_validate(raw))


async def probe(conn: Connection, kind: str) -> None:
    """One health probe on ``conn``.

    A 2026-07-28 connection whose transport sends ``server/discover`` by itself
    (``Link.discover_probe``) is probed that way, without its session (which may be parked).
    """
    if kind == "auto":
        kind = "discover" if conn.era == "modern" else "ping"
    if kind == "discover":
        version = conn.protocol_version
        discover_probe = conn.link.discover_probe
        if version in MODERN_PROTOCOL_VERSIONS and discover_probe is not None:
            await discover_probe(version)
            return
        await conn.session.send_discover(
            version if version in MODERN_PROTOCOL_VERSIONS else MODERN_PROTOCOL_VERSIONS[-1]
        )
    elif kind == "ping":
        ping_probe = conn.link.ping_probe
        if ping_probe is not None:
            await ping_probe()
            return
        await conn.session.send_ping()
    elif kind == "list_tools":
        await conn.session.list_tools()


def probe_in_rounds(conn: Connection, kind: str) -> PlainDiscoverProbe | None:
    """The probe that ``conn``'s origin's rounds can send for it (``kind`` resolved as
    :func:`probe` does: ``server/discover`` on a plain 2026-07-28 HTTP connection), or
    ``None``: it is probed by :func:`probe`."""
    if kind == "auto":
        kind = "discover" if conn.era == "modern" else "ping"
    discover_probe = conn.link.discover_probe
    if (
        kind == "discover"
        and conn.protocol_version in MODERN_PROTOCOL_VERSIONS
        and isinstance(discover_probe, PlainDiscoverProbe)
        and discover_probe.rounds is not None
    ):
        return discover_probe
    return None


def prime_tool_listing(session: ClientSession, tools: Sequence[Tool]) -> None:
    """Give a session opened again the tools listed before, as if it had listed them: it
    checks results against their output schemas and sends their ``Mcp-Param-*`` headers
    without listing them again."""
    absorb = getattr(session, "_absorb_tool_listing", None)
    if absorb is not None:  # the SDK's own bookkeeping of a listing (else it lists on demand)
        absorb(ListToolsResult(tools=list(tools)), complete=True)


def probes_without_session(conn: Connection, kind: str) -> bool:
    """Whether :func:`probe` of ``kind`` on ``conn`` needs no session (so it may be parked)."""
    if kind == "none":
        return True
    if kind == "auto":
        kind = "discover" if conn.era == "modern" else "ping"
    if kind == "discover":
        return (
            conn.era == "modern"
            and conn.protocol_version in MODERN_PROTOCOL_VERSIONS
            and conn.link.discover_probe is not None
        )
    return kind == "ping" and conn.link.ping_probe is not None


class _ParkedSession:
    """Stands for the session of a parked connection: any use of it is a clear error."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("the connection is parked: it has no session now")


_PARKED = cast(ClientSession, _ParkedSession())


class Connection:
    """A live, handshaken session owned by a supervisor task; callers borrow it.

    Attributes:
        session: the SDK ``ClientSession``. Call its methods from any task.
        session_id: a number that is new for every connection of a server.
    """

    __slots__ = (
        "_dropped",
        "after_drop",
        "capabilities",
        "checked_at",
        "drop_reason",
        "era",
        "handshaken_at",
        "lent_at",
        "link",
        "listening",
        "opened_at",
        "pinned",
        "protocol_version",
        "server",
        "session",
        "session_id",
        "used_at",
    )

    def __init__(
        self, *, server: str, session: ClientSession, session_id: int, link: Link, opened_at: float
    ) -> None:
        self.server = server
        self.session = session
        self.era: Era = era_of(session)
        """The protocol era negotiated (kept while the connection is parked)."""
        self.protocol_version = session.protocol_version
        self.session_id = session_id
        self.link = link
        self.opened_at = opened_at
        self.handshaken_at = opened_at
        self.used_at = opened_at
        """When a call on this connection last succeeded (trio clock). A usage stamp of the
        connection, like a byte counter: stamping it changes no server state."""
        self.checked_at: float | None = None
        """When a probe last found the server healthy without changing its state (trio clock):
        a usage stamp too, read into snapshots as ``last_checked_at``."""
        self.lent_at = opened_at
        """When the connection was last handed to a caller (trio clock): it is not parked
        until it has been idle for ``park_after`` since then."""
        self.pinned = False
        """Handed out by ``acquire``: its holder may call the session at any time, so it is
        never parked."""
        self.capabilities: CapabilitySnapshot | None = None
        self.listening: trio.CancelScope | None = None
        """The scope of the list-change stream held now: a re-handshake that changes the
        server's capabilities cancels it, and it is opened anew for what they say now."""
        self.drop_reason: str | None = None
        self.after_drop: AfterDrop = "backoff"
        self._dropped = trio.Event()

    def stamp(self, at: float) -> None:
        """Record a successful use at ``at``."""
        if at > self.used_at:
            self.used_at = at

    @property
    def parked(self) -> bool:
        """Whether the SDK session is closed while the connection stays up (see ``park_after``)."""
        return self.session is _PARKED

    def park(self) -> None:
        """Forget the closed session (by the owner task, which closed it)."""
        self.session = _PARKED

    def resume(self, session: ClientSession) -> None:
        """Take the session the owner task opened again (it adopted the handshake's answer)."""
        self.session = session

    @property
    def alive(self) -> bool:
        return not self._dropped.is_set() and not self.link.dead.is_set()

    def drop(self, reason: str, *, then: AfterDrop = "backoff") -> None:
        """Ask the owning supervisor to close this connection. ``then``: ``backoff``, ``idle``
        or ``reconnect``."""
        if not self._dropped.is_set():
            self.drop_reason = reason
            self.after_drop = then
            self._dropped.set()

    async def wait_dropped(self) -> None:
        await self._dropped.wait()

    def __repr__(self) -> str:
        state = "alive" if self.alive else f"dropped ({self.drop_reason})"
        return f"<Connection {self.server}#{self.session_id} {state}>"
