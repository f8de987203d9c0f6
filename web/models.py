"""Every request and response body of the API as a pydantic model.

Requests are validated through these models (strict types, unknown fields refused, finite
numbers only); responses are described by them, and the OpenAPI document
(:mod:`web.apidoc`) is generated from both. Every ``*_at`` is a Unix time in seconds.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import mcp_types as mcp
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from trio_mcp import ConnectionState, Freshness, ServerStatus
from trio_mcp._entry import NAME_PATTERN, STRICT, TRANSPORT_ERROR, HttpEntry, StdioEntry, _transport_tag
from trio_mcp._failure import ErrorCategory

MAX_REQUEST_ID_LENGTH = 128
FailoverMode = Literal["safe", "always", "never"]
NonEmpty = Annotated[str, Field(min_length=1)]
Seconds = Annotated[float, Field(gt=0)]


def _one_problem(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError:
        raise PydanticCustomError("hedge_after", "must be 'p95' or a number of seconds >= 0") from None


HedgeAfter = Annotated[Annotated[float, Field(ge=0)] | Literal["p95"] | None, WrapValidator(_one_problem)]
"""Said as one problem of the field, not one per member of the union."""
Timestamp = Annotated[float, Field(description="Unix time in seconds")]
ServerName = Annotated[str, Field(pattern=NAME_PATTERN)]

# ---------------------------------------------------------------------------------------------
# requests
# ---------------------------------------------------------------------------------------------


class InvokeOptions(BaseModel):
    model_config = STRICT

    preferred_servers: list[NonEmpty] = Field(
        default_factory=list, description="tried first, in this order; the rest of the fleet after them"
    )
    failover: FailoverMode = Field(
        "safe",
        description="safe: only where the request provably never ran, or the call is idempotent; "
        "always: on any failure; never: only the first candidate is tried",
    )
    timeout_seconds: Seconds | None = Field(None, description="deadline of the whole invocation")
    attempt_timeout_seconds: Seconds | None = Field(None, description="deadline of each attempt")
    hedge_after_seconds: HedgeAfter = Field(
        None,
        description="for a read or an idempotent call: when the first server has not answered "
        "after this many seconds ('p95': its recent 95th percentile latency), send the same "
        "request to the next candidate; the first answer wins, the other is cancelled",
    )
    request_id: Annotated[str, Field(min_length=1, max_length=MAX_REQUEST_ID_LENGTH)] | None = Field(
        None, description="correlates the invocation's events (generated when absent)"
    )


class InvokeTool(InvokeOptions):
    """``tools/call`` with failover."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"tool_name": "echo", "arguments": {"text": "hello"}}]}
    )
    tool_name: NonEmpty
    arguments: dict[str, Any] | None = None


class InvokeResource(InvokeOptions):
    """``resources/read`` with failover."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"uri": "demo://readme"}]})
    uri: NonEmpty


class InvokePrompt(InvokeOptions):
    """``prompts/get`` with failover."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "greet", "arguments": {"name": "Ada"}}]}
    )
    name: NonEmpty
    arguments: dict[str, str] | None = None


Enabled = Annotated[Literal[False], Field(description="a registered server is always enabled")]


class StdioRegistration(StdioEntry):
    """An ``mcpServers`` stdio entry and its name (needs ``--allow-stdio-registration``)."""

    name: ServerName
    disabled: Enabled = False


class HttpRegistration(HttpEntry):
    """An ``mcpServers`` streamable-HTTP entry and its name."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "docs", "url": "https://mcp.example.com/mcp", "callTimeout": 10}],
            "not": {"required": ["timeout", "callTimeout"]},
        }
    )
    name: ServerName
    disabled: Enabled = False


Registration = Annotated[
    Annotated[StdioRegistration, Tag("stdio")] | Annotated[HttpRegistration, Tag("http")],
    Discriminator(_transport_tag, custom_error_type="transport", custom_error_message=TRANSPORT_ERROR),
]
REGISTRATION: TypeAdapter[StdioRegistration | HttpRegistration] = TypeAdapter(Registration)

# -- query strings --------------------------------------------------------------------------------

_QUERY = ConfigDict(extra="ignore", frozen=True)
Limit = Annotated[int, Field(ge=0, le=1_000_000_000, description="keep only the newest N")]


class SessionQuery(BaseModel):
    model_config = _QUERY
    server: str | None = Field(None, description="only this server (404 if unknown)")
    active_only: bool = Field(False, description="only live sessions")
    freshness: Freshness | None = Field(None, description="only sessions this fresh")
    limit: Limit | None = None


class EventQuery(BaseModel):
    model_config = _QUERY
    server: str | None = Field(None, description="only this server (404 if it never existed)")
    correlation_id: str | None = Field(None, description="one operation")
    limit: Limit | None = None


class StreamQuery(BaseModel):
    model_config = _QUERY
    server: str | None = Field(None, description="only this server (404 if it never existed)")


class InvocationEventQuery(BaseModel):
    model_config = _QUERY
    server: str | None = Field(None, description="only this server (404 if it never existed)")
    method: str | None = Field(None, description="e.g. tools/call")
    request_id: str | None = Field(None, description="one invocation")
    correlation_id: str | None = Field(None, description="the same as request_id")
    limit: Limit | None = None


# ---------------------------------------------------------------------------------------------
# responses
# ---------------------------------------------------------------------------------------------

_OUT = ConfigDict(extra="forbid")


class Health(BaseModel):
    model_config = _OUT
    status: Literal["ok"]
    manager: Literal["running", "stopped"]
    replica: str | None = Field(
        description="this process's id: the host name and six random hex digits (every event it "
        "records carries it)"
    )


class Reloaded(BaseModel):
    """What a reload did, by server name."""

    model_config = _OUT
    added: list[str]
    removed: list[str]
    restarted: list[str]
    unchanged: list[str]


class Readiness(BaseModel):
    """200 when ready, 503 when not."""

    model_config = _OUT
    ready: bool
    usable: int = Field(description="servers that are healthy or recovered")
    ready_min: int
    servers: dict[str, int] = Field(description="how many servers have each status")


class StdioTransportView(BaseModel):
    """How a stdio server is launched; env values and secret-looking arguments are ``***``."""

    model_config = _OUT
    kind: Literal["stdio"]
    command: str
    args: list[str]
    env: dict[str, str] | None
    cwd: str | None


class BearerView(BaseModel):
    model_config = _OUT
    kind: Literal["bearer"]
    token: Literal["***"]


class ClientCredentialsView(BaseModel):
    model_config = _OUT
    kind: Literal["client_credentials"]
    client_id: str
    client_secret: Literal["***"]
    scope: str | None


class OAuthView(BaseModel):
    model_config = _OUT
    kind: Literal["oauth"]
    client_name: str | None
    client_id: str | None
    scope: str | None
    redirect_uri: str | None
    client_secret: Literal["***"] | None = None


class PrivateKeyJwtView(BaseModel):
    model_config = _OUT
    kind: Literal["private_key_jwt"]
    client_id: str
    private_key: Literal["***"] | None
    signing_algorithm: str | None
    scope: str | None
    issuer: str | None


class IdentityAssertionView(BaseModel):
    model_config = _OUT
    kind: Literal["identity_assertion"]
    client_id: str
    client_secret: Literal["***"]
    issuer: str
    scope: str | None
    idp_token_endpoint: str | None
    idp_client_id: str | None
    id_token: Literal["***"] | None


AuthView = Annotated[
    BearerView | ClientCredentialsView | OAuthView | PrivateKeyJwtView | IdentityAssertionView,
    Field(discriminator="kind"),
]


class HttpTransportView(BaseModel):
    """Where an HTTP server is; header values, URL passwords and query values are ``***``."""

    model_config = _OUT
    kind: Literal["http"]
    url: str
    headers: dict[str, str] | None
    auth: AuthView | None = None


class MemoryTransportView(BaseModel):
    model_config = _OUT
    kind: Literal["memory"]


TransportView = Annotated[
    StdioTransportView | HttpTransportView | MemoryTransportView, Field(discriminator="kind")
]


class ServerInfo(BaseModel):
    model_config = _OUT
    name: str | None
    version: str | None


class CapabilitySnapshot(BaseModel):
    """What the server said about itself in its last successful handshake."""

    model_config = _OUT
    protocol_version: str
    era: Literal["legacy", "modern"] = Field(description="legacy: initialize; modern: server/discover")
    server_info: ServerInfo
    capabilities: dict[str, Any]
    instructions: str | None
    captured_at: Timestamp


class AdapterSession(BaseModel):
    """One server's session."""

    model_config = _OUT
    server: str
    active: bool
    initialized: bool
    session_id: int | None = Field(description="changes every time a new session is opened")
    opened_at: Timestamp | None
    last_activity_at: Timestamp | None
    freshness: Freshness
    parked: bool = Field(
        description="connected without an open MCP session (not used since its handshake, or "
        "idle for park_after) while health probes go on; the next call opens one without a "
        "round trip to the server"
    )


class Server(BaseModel):
    """The full view of one server."""

    model_config = _OUT
    name: str
    transport: TransportView | None = Field(description="null when removed while this was written")
    status: ServerStatus
    connection: ConnectionState
    last_error: str | None
    last_error_category: ErrorCategory | None
    consecutive_failures: int
    retry_count: int
    last_checked_at: Timestamp | None
    next_retry_at: Timestamp | None
    retry_window_open: bool
    initialized: bool = Field(description="handshaken and not past initialization_expires_at")
    initialized_at: Timestamp | None
    initialization_expires_at: Timestamp | None
    capability_snapshot: CapabilitySnapshot | None
    adapter_session: AdapterSession
    adapter_controls_available: bool
    in_flight: int = Field(description="invocations using this server now")
    max_concurrency: int = Field(description="how many may use it at once (more wait)")


class ServerList(BaseModel):
    model_config = _OUT
    servers: list[Server]


class Attempt(BaseModel):
    """One step of an invocation on one server."""

    model_config = _OUT
    server: str
    stage: Literal["select", "handshake", "invoke"]
    success: bool
    error: str | None
    error_category: ErrorCategory | None
    sent: bool = Field(description="the request was written to this server (it may have run)")
    started_at: Timestamp
    duration: float = Field(description="seconds")
    budget: Literal["server", "caller"] | None = Field(
        description="for a timeout: the server's own call_timeout, or a shorter deadline of the caller"
    )


class _Invocation(BaseModel):
    model_config = _OUT
    server: str
    method: str
    request_id: str
    attempts: list[Attempt]


class ToolInvocation(_Invocation):
    result: mcp.CallToolResult


class ResourceInvocation(_Invocation):
    result: mcp.ReadResourceResult


class PromptInvocation(_Invocation):
    result: mcp.GetPromptResult


class Invalidated(BaseModel):
    model_config = _OUT
    server: str
    invalidated: bool = Field(description="a live session was dropped")
    adapter_session: AdapterSession


class Refreshed(BaseModel):
    model_config = _OUT
    server: str
    adapter_session: AdapterSession


class SessionList(BaseModel):
    model_config = _OUT
    sessions: list[AdapterSession]


class ConnectionEvent(BaseModel):
    """One status change of one server."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    seq: int
    server: str
    from_: ServerStatus = Field(alias="from")
    to: ServerStatus
    reason: str
    category: ErrorCategory | None
    correlation_id: str | None
    at: float = Field(description="the manager's clock (seconds)")
    timestamp: Timestamp
    replica: str | None = Field(
        description="the replica (trio-mcp serve process, see /health) that recorded it"
    )


class ConnectionEventList(BaseModel):
    model_config = _OUT
    events: list[ConnectionEvent]


class InvocationEvent(BaseModel):
    """One step of an invocation on one server."""

    model_config = _OUT
    seq: int
    kind: Literal[
        "handshake_start",
        "handshake_success",
        "handshake_failure",
        "invoke_start",
        "invoke_success",
        "invoke_failure",
    ]
    server: str
    method: str
    request_id: str
    correlation_id: str
    target: str | None
    error: str | None
    category: ErrorCategory | None
    at: float = Field(description="the manager's clock (seconds)")
    timestamp: Timestamp
    replica: str | None = Field(
        description="the replica (trio-mcp serve process, see /health) that recorded it"
    )


class Dropped(BaseModel):
    """Events this stream's client lost because it read too slowly (re-read the state)."""

    model_config = _OUT
    dropped: int


class InvocationEventList(BaseModel):
    model_config = _OUT
    events: list[InvocationEvent]


_OFFERED_BY = Field(description="the servers whose catalogs list it")


class ToolEntry(mcp.Tool):
    servers: list[str] = _OFFERED_BY


class ResourceEntry(mcp.Resource):
    servers: list[str] = _OFFERED_BY


class PromptEntry(mcp.Prompt):
    servers: list[str] = _OFFERED_BY


class ToolList(BaseModel):
    tools: list[ToolEntry]


class ResourceList(BaseModel):
    resources: list[ResourceEntry]


class PromptList(BaseModel):
    prompts: list[PromptEntry]


class ErrorDetail(BaseModel):
    """What went wrong. ``error`` is a stable code; the other fields depend on it."""

    model_config = _OUT
    error: str
    message: str
    field: str | None = Field(None, description="the offending field, as a JSON path")
    server: str | None = None
    method: str | None = None
    target: str | None = None
    outcome: Literal["failed", "unknown"] | None = Field(
        None, description="failed: it ran nowhere; unknown: it may have run"
    )
    request_id: str | None = None
    attempts: list[Attempt] | None = None
    servers_checked: list[str] | None = None
    status: ServerStatus | None = None
    category: ErrorCategory | None = None


class Error(BaseModel):
    model_config = _OUT
    detail: ErrorDetail
