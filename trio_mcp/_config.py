"""Frozen configuration objects and the ``mcpServers`` JSON parser."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx2
from pydantic import ValidationError

from ._auth import (
    AUTH_TYPES,
    AuthConfig,
    BearerAuth,
    ClientCredentialsAuth,
    IdentityAssertionAuth,
    PrivateKeyJwtAuth,
    file_text,
)
from ._backoff import BackoffPolicy
from ._entry import (
    NAME_PATTERN,
    SERVER_ENTRY,
    AuthEntry,
    BearerEntry,
    ClientCredentialsEntry,
    HttpEntry,
    IdentityAssertionEntry,
    PrivateKeyJwtEntry,
    StdioEntry,
    entry_problem,
    json_type,
)
from ._exceptions import ConfigError, quote

ProtocolMode = Literal["auto", "legacy", "modern"]
ProbeKind = Literal["auto", "ping", "discover", "list_tools", "none"]

DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_PROBE_TIMEOUT = 5.0
DEFAULT_CALL_TIMEOUT = 30.0
DEFAULT_HEALTH_INTERVAL = 30.0
DEFAULT_UNREACHABLE_THRESHOLD = 3
DEFAULT_HANDSHAKE_MAX_AGE: float | None = 3600.0
DEFAULT_FRESHNESS_WINDOW = 300.0
DEFAULT_MAX_CONCURRENCY = 16
DEFAULT_PROGRESS_HARD_MAX = 300.0
DEFAULT_PROBE_SPREAD = 0.5
DEFAULT_PARK_AFTER = 60.0
DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
"""The largest message a server may send (8 MiB): one stdio line, one HTTP response body, one
event of an event stream."""

_NAME_RE = re.compile(NAME_PATTERN)


def _check_positive(
    value: float | None, key: str, *, allow_none: bool = False, allow_zero: bool = False
) -> None:
    if value is None:
        if allow_none:
            return
        raise ConfigError("must be a number", key=key)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigError(f"must be a number, got {quote(value)}", key=key)
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"must be {'>= 0' if allow_zero else '> 0'}, got {quote(value)}", key=key)


def _check_max_message_bytes(value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"must be an integer >= 1 (bytes), got {quote(value)}", key="max_message_bytes")


@dataclass(frozen=True, kw_only=True)
class ServerPolicy:
    """Timeouts, health probing, backoff and freshness for one server.

    Attributes:
        handshake_timeout: seconds the ``initialize`` / ``server/discover`` handshake may take.
        probe_timeout: seconds a health probe may take before it counts as a failure.
        call_timeout: default seconds one invocation attempt may take.
        health_interval: seconds between health probes of a connected server.
        unreachable_threshold: consecutive failures that turn ``degraded`` into ``unreachable``.
        handshake_max_age: seconds after which a handshake is stale and is re-run before use
            (``None``: never stale).
        freshness_window: seconds of inactivity after which a session counts as ``stale``.
        protocol: ``"auto"`` (``server/discover``, falling back to ``initialize``), ``"legacy"``
            (always ``initialize``) or ``"modern"`` (``server/discover`` only).
        probe: ``"auto"`` (``ping`` on legacy connections, ``server/discover`` on modern ones),
            ``"ping"``, ``"discover"``, ``"list_tools"`` or ``"none"``.
        backoff: the reconnect / retry schedule.
        connect_on_start: connect as soon as the server is registered (else on first use).
        max_concurrency: how many invocations may use this server at once (bulkhead).
        progress_hard_max: progress notifications extend an attempt's deadline, never past
            this many seconds after the attempt started.
        probe_spread: a connection's first probe comes between
            ``(1 - probe_spread) * health_interval`` and ``health_interval`` after it opened, at
            a point set by the server's name and the session's number, so servers that
            connected together (a fleet starting) do not probe together from then on
            (``0``: exactly at ``health_interval``).
        park_after: seconds without a call after which a 2026-07-28 connection over plain
            ``http://``, or any stdio connection, is parked: its SDK session is closed while
            its probes and its list-change stream go on (a stdio server's process with them),
            and the next call opens one again without a round trip (``None``: never parked). A
            connection borrowed with ``acquire`` is never parked.
    """

    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    probe_timeout: float = DEFAULT_PROBE_TIMEOUT
    call_timeout: float = DEFAULT_CALL_TIMEOUT
    health_interval: float = DEFAULT_HEALTH_INTERVAL
    unreachable_threshold: int = DEFAULT_UNREACHABLE_THRESHOLD
    handshake_max_age: float | None = DEFAULT_HANDSHAKE_MAX_AGE
    freshness_window: float = DEFAULT_FRESHNESS_WINDOW
    protocol: ProtocolMode = "auto"
    probe: ProbeKind = "auto"
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    connect_on_start: bool = True
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    progress_hard_max: float = DEFAULT_PROGRESS_HARD_MAX
    probe_spread: float = DEFAULT_PROBE_SPREAD
    park_after: float | None = DEFAULT_PARK_AFTER

    def __post_init__(self) -> None:
        if (
            isinstance(self.probe_spread, bool)
            or not isinstance(self.probe_spread, int | float)
            or not 0 <= self.probe_spread < 1
        ):
            raise ConfigError(f"must be in [0, 1), got {quote(self.probe_spread)}", key="probe_spread")
        for key in (
            "handshake_timeout",
            "probe_timeout",
            "call_timeout",
            "health_interval",
            "freshness_window",
        ):
            _check_positive(getattr(self, key), f"policy.{key}")
        _check_positive(self.handshake_max_age, "policy.handshake_max_age", allow_none=True)
        _check_positive(self.park_after, "policy.park_after", allow_none=True)
        _check_positive(self.progress_hard_max, "policy.progress_hard_max")
        if (
            isinstance(self.unreachable_threshold, bool)
            or not isinstance(self.unreachable_threshold, int)
            or self.unreachable_threshold < 1
        ):
            raise ConfigError("must be an integer >= 1", key="policy.unreachable_threshold")
        if (
            isinstance(self.max_concurrency, bool)
            or not isinstance(self.max_concurrency, int)
            or self.max_concurrency < 1
        ):
            raise ConfigError("must be an integer >= 1", key="policy.max_concurrency")
        if self.protocol not in ("auto", "legacy", "modern"):
            raise ConfigError(
                f"must be 'auto', 'legacy' or 'modern', got {quote(self.protocol)}", key="policy.protocol"
            )
        if self.probe not in ("auto", "ping", "discover", "list_tools", "none"):
            raise ConfigError(
                f"must be 'auto', 'ping', 'discover', 'list_tools' or 'none', got {quote(self.probe)}",
                key="policy.probe",
            )
        if not isinstance(self.backoff, BackoffPolicy):
            raise ConfigError("must be a BackoffPolicy", key="policy.backoff")


DEFAULT_POLICY = ServerPolicy()


@dataclass(frozen=True, kw_only=True)
class StdioTransport:
    """Launch ``command args...`` as a subprocess and speak MCP over its stdin/stdout.

    ``max_message_bytes``: the longest line the server may write to stdout; a longer one closes
    the connection (``protocol_error``).
    """

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = field(default=None, repr=False)  # values may be secrets
    cwd: str | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    kind: Literal["stdio"] = field(default="stdio", init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.command, str) or not self.command:
            raise ConfigError("must be a non-empty string", key="command")
        if isinstance(self.args, str) or not all(isinstance(a, str) for a in self.args):
            raise ConfigError("must be a list of strings", key="args")
        object.__setattr__(self, "args", tuple(self.args))
        if self.env is not None:
            if not isinstance(self.env, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()
            ):
                raise ConfigError("must map strings to strings", key="env")
            object.__setattr__(self, "env", dict(self.env))
        if self.cwd is not None and not isinstance(self.cwd, str):
            raise ConfigError("must be a string", key="cwd")
        _check_max_message_bytes(self.max_message_bytes)


@dataclass(frozen=True, kw_only=True)
class HttpTransport:
    """Speak MCP over streamable HTTP to ``url``, sending ``headers`` with every request.

    ``auth``: :class:`BearerAuth` (a static token), :class:`OAuthAuth` (OAuth 2.1 with PKCE),
    :class:`ClientCredentialsAuth`, :class:`PrivateKeyJwtAuth` (client credentials with a signed
    JWT) or :class:`IdentityAssertionAuth` (enterprise-managed authorization); ``None`` for none.
    It never appears in the ``repr``.

    ``max_message_bytes``: the largest response body (after content decoding) and the largest
    event of an event stream the server may send; a larger one closes the connection
    (``protocol_error``).

    ``public_only``: connect to public addresses only. Every connection resolves the host
    itself, is refused (``connect_error``) when it resolves to a loopback, private, link-local
    or otherwise internal address, and connects to the address it checked, so a name that
    resolves elsewhere later (DNS rebinding) and the URLs a server's answers name (redirects,
    OAuth discovery) are held to the same rule. The HTTP API sets it on registrations it
    receives unless it runs with ``--allow-private-urls``.
    """

    url: str
    headers: Mapping[str, str] | None = field(default=None, repr=False)  # values may be secrets
    auth: AuthConfig | None = field(default=None, repr=False)
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    public_only: bool = False
    kind: Literal["http"] = field(default="http", init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not re.match(r"^https?://[^/\s]+", self.url):
            raise ConfigError(f"must be an http:// or https:// URL, got {quote(self.url)}", key="url")
        try:
            httpx2.URL(self.url)
        except httpx2.InvalidURL as exc:
            raise ConfigError(f"is not a valid URL ({exc}), got {quote(self.url)}", key="url") from None
        if self.headers is not None:
            if not isinstance(self.headers, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.headers.items()
            ):
                raise ConfigError("must map strings to strings", key="headers")
            object.__setattr__(self, "headers", dict(self.headers))
        if self.auth is not None and not isinstance(self.auth, AUTH_TYPES):
            raise ConfigError(
                "must be a BearerAuth, OAuthAuth, ClientCredentialsAuth, PrivateKeyJwtAuth "
                "or IdentityAssertionAuth",
                key="auth",
            )
        _check_max_message_bytes(self.max_message_bytes)


@dataclass(frozen=True, kw_only=True, eq=False)
class MemoryTransport:
    """Run an SDK server object (``mcp.server.Server`` / ``MCPServer``, or a
    :class:`trio_mcp.testing.ScriptedServer`) in this trio process.

    A plain SDK server spoken to in the 2026-07-28 era is called directly, as the SDK's
    ``Client(server)`` calls it: each request runs the server's handler in the calling task,
    with no JSON-RPC framing between (about twice as fast as streams). A server of the test kit,
    the ``initialize`` era (``protocol="legacy"``) and ``direct=False`` speak JSON-RPC over
    in-memory streams, as over a real transport (what a test of the wire itself wants).

    Attributes:
        server: the SDK server object.
        direct: call a plain SDK server directly when it can be (default); ``False``: always
            over in-memory streams.
    """

    server: Any
    direct: bool = True
    kind: Literal["memory"] = field(default="memory", init=False)

    def __post_init__(self) -> None:
        from mcp.server import Server
        from mcp.server.mcpserver import MCPServer

        if not isinstance(self.server, Server | MCPServer) and not hasattr(self.server, "_trio_mcp_hooks"):
            raise ConfigError(
                f"must be an MCP SDK server object, got {type(self.server).__name__}", key="server"
            )


TransportConfig = StdioTransport | HttpTransport | MemoryTransport


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """One MCP server: its name, how to reach it, and its policy.

    Attributes:
        name: unique name in the manager.
        transport: :class:`StdioTransport`, :class:`HttpTransport` or :class:`MemoryTransport`.
        policy: timeouts, probing, backoff.
        idempotent: every tool on this server is safe to run twice (failover after an
            unknown outcome is allowed).
        idempotent_tools: names of tools on this server that are safe to run twice.
        trusted: the server's own ``readOnlyHint`` / ``idempotentHint`` annotations are believed.
    """

    name: str
    transport: TransportConfig
    policy: ServerPolicy = DEFAULT_POLICY
    idempotent: bool = False
    idempotent_tools: frozenset[str] = frozenset()
    trusted: bool = False
    secrets: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    """Values substituted from the environment (``${VAR}``): never shown, wherever they appear."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ConfigError(
                f"must be 1-128 characters of letters, digits, '_', '-' or '.', got {quote(self.name)}",
                key="name",
            )
        if not isinstance(self.transport, StdioTransport | HttpTransport | MemoryTransport):
            raise ConfigError("must be a StdioTransport, HttpTransport or MemoryTransport", key="transport")
        if not isinstance(self.policy, ServerPolicy):
            raise ConfigError("must be a ServerPolicy", key="policy")
        if isinstance(self.idempotent_tools, str):
            raise ConfigError("must be a collection of tool names", key="idempotent_tools")
        object.__setattr__(self, "idempotent_tools", frozenset(self.idempotent_tools))


# ---------------------------------------------------------------------------------------------
# mcpServers JSON (Claude Desktop / VS Code / Cursor)
# ---------------------------------------------------------------------------------------------


def _expand(value: Any, key: str, environ: Mapping[str, str], found: set[str]) -> Any:
    """``value`` with every ``${VAR}`` in its strings replaced from ``environ``; the values
    substituted are added to ``found`` (they are secrets as far as anyone can tell)."""
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                raise ConfigError(f"environment variable {name} is not set", key=key)
            if environ[name]:
                found.add(environ[name])
            return environ[name]

        return _VARIABLE.sub(lookup, value)
    if isinstance(value, list):
        return [_expand(item, f"{key}[{i}]", environ, found) for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {k: _expand(v, f"{key}.{k}", environ, found) for k, v in value.items()}
    return value


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NULL_MEANS_NEVER = frozenset({"handshake_max_age", "park_after"})
_POLICY_FIELDS = (
    "probe_spread",
    "park_after",
    "handshake_timeout",
    "probe_timeout",
    "call_timeout",
    "health_interval",
    "unreachable_threshold",
    "handshake_max_age",
    "freshness_window",
    "protocol",
    "probe",
    "connect_on_start",
    "max_concurrency",
)


def _auth(entry: AuthEntry | None) -> AuthConfig | None:
    if entry is None:
        return None
    try:
        return _auth_config(entry)
    except ConfigError as exc:
        # Name the key as the entry spells it (``auth.privateKey``, not ``auth.private_key``).
        if exc.key is None or not exc.key.startswith("auth."):
            raise
        field_name = exc.key.removeprefix("auth.")
        info = type(entry).model_fields.get(field_name)
        alias = info.alias if info is not None and info.alias else field_name
        raise ConfigError(str(exc).split(": ", 1)[-1], key=f"auth.{alias}") from None


def _auth_config(entry: AuthEntry) -> AuthConfig:
    if isinstance(entry, BearerEntry):
        return BearerAuth(token=entry.token)
    if isinstance(entry, PrivateKeyJwtEntry):
        if (entry.private_key is None) == (entry.private_key_file is None):
            raise ConfigError("give one of 'privateKey' and 'privateKeyFile'", key="auth.privateKey")
        return PrivateKeyJwtAuth(
            client_id=entry.client_id,
            private_key=entry.private_key,
            private_key_file=entry.private_key_file,
            signing_algorithm=entry.signing_algorithm,
            scope=entry.scope,
            issuer=entry.issuer,
        )
    if isinstance(entry, IdentityAssertionEntry):
        if (entry.id_token is None) == (entry.id_token_file is None):
            raise ConfigError("give one of 'idToken' and 'idTokenFile'", key="auth.idToken")
        id_token = entry.id_token if entry.id_token_file is None else file_text(entry.id_token_file)
        return IdentityAssertionAuth(
            client_id=entry.client_id,
            client_secret=entry.client_secret,
            issuer=entry.issuer,
            idp_token_endpoint=entry.idp_token_endpoint,
            idp_client_id=entry.idp_client_id,
            idp_client_secret=entry.idp_client_secret,
            id_token=id_token,
            scope=entry.scope,
            token_endpoint_auth_method=entry.token_endpoint_auth_method,
        )
    assert isinstance(entry, ClientCredentialsEntry)
    return ClientCredentialsAuth(
        client_id=entry.client_id,
        client_secret=entry.client_secret,
        scope=entry.scope,
        issuer=entry.issuer,
        token_endpoint_auth_method=entry.token_endpoint_auth_method,
    )


def _key(base: str, key: str) -> str:
    return f"{base}.{key}" if base else key


def refuse_unsupported(entry: Mapping[str, Any], base: str) -> None:
    """Refuse, with the reason, what an ``mcpServers`` entry may say and this client does not do."""
    if entry.get("type") == "sse":
        raise ConfigError(
            "the legacy SSE transport is not supported; use streamable HTTP", key=_key(base, "type")
        )
    auth = entry.get("auth")
    if isinstance(auth, Mapping) and auth.get("type") == "oauth":
        raise ConfigError(
            "interactive OAuth needs a browser redirect handler: configure it in code (OAuthAuth)",
            key=_key(base, "auth"),
        )


def entry_config(
    name: str, entry: StdioEntry | HttpEntry, *, base: str, secrets: frozenset[str] = frozenset()
) -> ServerConfig:
    """The :class:`ServerConfig` of a validated entry. ``base`` prefixes the keys of errors."""
    if entry.timeout is not None and entry.call_timeout is not None:
        raise ConfigError(
            "'timeout' and 'callTimeout' set the same thing: give one", key=_key(base, "timeout")
        )
    try:
        return _entry_config(name, entry, secrets)
    except ConfigError as exc:
        if exc.key and base and not exc.key.startswith(base):
            raise ConfigError(str(exc).split(": ", 1)[-1], key=_key(base, exc.key)) from None
        raise


def _entry_config(name: str, entry: StdioEntry | HttpEntry, secrets: frozenset[str]) -> ServerConfig:
    transport: TransportConfig
    bound = entry.max_message_bytes if entry.max_message_bytes is not None else DEFAULT_MAX_MESSAGE_BYTES
    if isinstance(entry, StdioEntry):
        transport = StdioTransport(
            command=entry.command,
            args=tuple(entry.args),
            env=entry.env,
            cwd=entry.cwd,
            max_message_bytes=bound,
        )
    else:
        transport = HttpTransport(
            url=entry.url, headers=entry.headers, auth=_auth(entry.auth), max_message_bytes=bound
        )
    # null means "the default", except where it means "never" (handshakeMaxAge, parkAfter).
    settings = {
        key: getattr(entry, key)
        for key in _POLICY_FIELDS
        if key in entry.model_fields_set and (getattr(entry, key) is not None or key in _NULL_MEANS_NEVER)
    }
    if entry.timeout is not None:
        settings["call_timeout"] = entry.timeout
    return ServerConfig(
        name=name,
        transport=transport,
        policy=ServerPolicy(**settings) if settings else DEFAULT_POLICY,
        idempotent=entry.idempotent,
        idempotent_tools=frozenset(entry.idempotent_tools),
        trusted=entry.trusted,
        secrets=secrets,
    )


def parse_server_entry(
    name: str, entry: Any, *, prefix: str = "mcpServers", environ: Mapping[str, str] | None = None
) -> ServerConfig | None:
    """Parse one ``mcpServers`` entry into a :class:`ServerConfig` (``None`` if ``disabled``).

    Unknown keys are errors (with the closest known key), ``${VAR}`` in strings is replaced
    from ``environ`` (default: the process environment), and ``auth`` takes
    ``{"type": "bearer", "token": ...}``, ``{"type": "client_credentials", "clientId": ...,
    "clientSecret": ...}``, ``{"type": "private_key_jwt", "clientId": ..., "privateKey" or
    "privateKeyFile": ...}`` or ``{"type": "identity_assertion", "clientId": ..., "clientSecret":
    ..., "issuer": ..., "idpTokenEndpoint": ..., "idpClientId": ..., "idToken": ...}``.
    """
    base = f"{prefix}.{name}"
    if not isinstance(entry, dict):
        raise ConfigError(f"must be an object, got {json_type(entry)}", key=base)
    if entry.get("disabled") is True:
        return None
    refuse_unsupported(entry, base)
    secrets: set[str] = set()
    expanded = _expand(entry, base, os.environ if environ is None else environ, secrets)
    try:
        model = SERVER_ENTRY.validate_python(expanded)
    except ValidationError as exc:
        path, message = entry_problem(exc)
        key = f"{base}{'' if path.startswith('[') or not path else '.'}{path}"
        raise ConfigError(message, key=key) from None
    return entry_config(name, model, base=base, secrets=frozenset(secrets))


def parse_mcp_servers(document: str | bytes | Mapping[str, Any]) -> list[ServerConfig]:
    """Parse an ``mcpServers`` document (Claude Desktop / Cursor) or a VS Code ``servers`` document.

    Accepts JSON text or an already-decoded mapping. Entries marked ``"disabled": true`` are
    skipped. Raises :class:`ConfigError` naming the offending key.
    """
    if isinstance(document, str | bytes):
        try:
            document = json.loads(document)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not valid JSON: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"not valid JSON: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    if not isinstance(document, Mapping):
        raise ConfigError("the document must be a JSON object with an 'mcpServers' key")
    if "mcpServers" in document:
        prefix = "mcpServers"
    elif "servers" in document:
        prefix = "servers"
    else:
        raise ConfigError("the document must have an 'mcpServers' (or VS Code 'servers') object")
    servers = document[prefix]
    if not isinstance(servers, Mapping):
        raise ConfigError("must be an object mapping names to servers", key=prefix)
    configs: list[ServerConfig] = []
    for name, entry in servers.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigError(
                "server names must be 1-128 letters, digits, '_', '-' or '.'", key=f"{prefix}.{name}"
            )
        parsed = parse_server_entry(name, entry, prefix=prefix)
        if parsed is not None:
            configs.append(parsed)
    return configs
