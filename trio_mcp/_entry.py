"""One ``mcpServers`` entry as pydantic models, in the camelCase keys that Claude Desktop,
VS Code and Cursor write, and the translation of validation errors into readable messages.

The same models validate config files (:func:`trio_mcp.parse_mcp_servers`) and HTTP
registrations (``POST /api/v1/mcp/servers``), and describe them in the API's OpenAPI document.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import ErrorDetails

from ._exceptions import quote

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_H16 = r"[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join(
    [
        rf"(?:{_H16}:){{7}}{_H16}",
        rf"(?:{_H16}:){{1,7}}:",
        *(rf"(?:{_H16}:){{1,{7 - n}}}(?::{_H16}){{1,{n}}}" for n in range(1, 7)),
        rf":(?:(?::{_H16}){{1,7}}|:)",
    ]
)
_NAME = rf"(?:{_LABEL}\.)*[A-Za-z](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?"  # not all digits: not an IPv4
_HOST = rf"(?:\[(?:{_IPV6})\]|(?:{_OCTET}\.){{3}}{_OCTET}|{_NAME})"
# No ASCII controls or spaces: spelt out rather than \s, which means more in Python than in the
# ECMAScript regular expressions of the OpenAPI document.
_TEXT = r"[^\x00-\x20\x7f]"
URL_PATTERN = rf"^https?://(?:[^@/?#\x00-\x20\x7f\[\]]+@)?{_HOST}(?::[0-9]{{1,5}})?(?:[/?#]{_TEXT}*)?$"
"""An http(s) URL whose host is a DNS name, an IPv4 address or an IPv6 literal."""
TOKEN_PATTERN = r"^[^\r\n]+$"

PATTERN_MESSAGES = {
    NAME_PATTERN: "must be 1-128 characters of letters, digits, '_', '-' or '.'",
    URL_PATTERN: "must be an http:// or https:// URL with a host name or IP address",
    TOKEN_PATTERN: "must be a non-empty single-line string",
}
"""What a value that does not match one of our patterns must be, in words."""

STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

NonEmpty = Annotated[str, Field(min_length=1)]


def _whole(value: Any) -> Any:
    """JSON does not tell 3 from 3.0: a float with no fractional part is an integer."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Count = Annotated[int, Field(ge=1), BeforeValidator(_whole)]
Seconds = Annotated[float, Field(gt=0, description="seconds")]
HttpType = Literal["http", "streamable-http", "streamable_http", "streamableHttp", "streamablehttp"]

# -- auth --------------------------------------------------------------------------------------------


def _given(key: str) -> dict[str, Any]:
    """A JSON Schema saying that ``key`` is present and not null (for "give exactly one of")."""
    return {"required": [key], "properties": {key: {"type": "string"}}}


class BearerEntry(BaseModel):
    """A static token sent as ``Authorization: Bearer <token>``."""

    model_config = STRICT
    type: Literal["bearer"]
    token: Annotated[str, Field(pattern=TOKEN_PATTERN, min_length=1)]


class ClientCredentialsEntry(BaseModel):
    """OAuth client-credentials grant (machine to machine)."""

    model_config = STRICT
    type: Literal["client_credentials"]
    client_id: NonEmpty = Field(alias="clientId")
    client_secret: NonEmpty = Field(alias="clientSecret")
    scope: str | None = None
    issuer: Annotated[str, Field(pattern=URL_PATTERN)] | None = Field(
        None, description="the authorization server the credentials belong to"
    )
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post"] = Field(
        "client_secret_basic", alias="tokenEndpointAuthMethod"
    )


class PrivateKeyJwtEntry(BaseModel):
    """OAuth client-credentials grant authenticated with a JWT signed by the client's private
    key (``private_key_jwt``)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        frozen=True,
        json_schema_extra={"oneOf": [_given("privateKey"), _given("privateKeyFile")]},
    )
    type: Literal["private_key_jwt"]
    client_id: NonEmpty = Field(alias="clientId")
    private_key: NonEmpty | None = Field(None, alias="privateKey", description="a PEM private key")
    private_key_file: NonEmpty | None = Field(
        None, alias="privateKeyFile", description="a file holding the PEM private key, read for each token"
    )
    signing_algorithm: Literal[
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
    ] = Field("RS256", alias="signingAlgorithm")
    scope: str | None = None
    issuer: Annotated[str, Field(pattern=URL_PATTERN)] | None = Field(
        None, description="the authorization server the client is registered with"
    )


class IdentityAssertionEntry(BaseModel):
    """Enterprise-managed authorization: the user's ID token is exchanged at the enterprise
    identity provider for an identity assertion grant, which the MCP server's authorization
    server turns into an access token."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        frozen=True,
        json_schema_extra={"oneOf": [_given("idToken"), _given("idTokenFile")]},
    )
    type: Literal["identity_assertion"]
    client_id: NonEmpty = Field(alias="clientId")
    client_secret: NonEmpty = Field(alias="clientSecret")
    issuer: Annotated[str, Field(pattern=URL_PATTERN, description="the MCP server's authorization server")]
    idp_token_endpoint: Annotated[str, Field(pattern=URL_PATTERN)] = Field(alias="idpTokenEndpoint")
    idp_client_id: NonEmpty = Field(alias="idpClientId")
    idp_client_secret: NonEmpty | None = Field(None, alias="idpClientSecret")
    id_token: NonEmpty | None = Field(
        None, alias="idToken", description="the user's ID token from the identity provider"
    )
    id_token_file: NonEmpty | None = Field(
        None,
        alias="idTokenFile",
        description="a file holding the user's current ID token, read for each exchange",
    )
    scope: str | None = None
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post"] = Field(
        "client_secret_basic", alias="tokenEndpointAuthMethod"
    )


AuthEntry = Annotated[
    BearerEntry | ClientCredentialsEntry | PrivateKeyJwtEntry | IdentityAssertionEntry,
    Field(discriminator="type"),
]
AUTH_TAGS = frozenset({"bearer", "client_credentials", "private_key_jwt", "identity_assertion"})

# -- servers -----------------------------------------------------------------------------------------


class _Entry(BaseModel):
    """What every entry may say besides how the server is reached."""

    model_config = STRICT

    disabled: bool = False
    idempotent: bool = Field(False, description="every tool on this server is safe to run twice")
    trusted: bool = Field(False, description="believe the server's readOnlyHint / idempotentHint annotations")
    idempotent_tools: list[str] = Field(default_factory=list, alias="idempotentTools")
    handshake_timeout: Seconds | None = Field(None, alias="handshakeTimeout")
    probe_timeout: Seconds | None = Field(None, alias="probeTimeout")
    call_timeout: Seconds | None = Field(None, alias="callTimeout")
    timeout: Seconds | None = Field(None, description="the same as callTimeout (give one of them)")
    health_interval: Seconds | None = Field(None, alias="healthInterval")
    unreachable_threshold: Count | None = Field(None, alias="unreachableThreshold")
    handshake_max_age: Seconds | None = Field(None, alias="handshakeMaxAge")
    freshness_window: Seconds | None = Field(None, alias="freshnessWindow")
    protocol: Literal["auto", "legacy", "modern"] | None = None
    probe: Literal["auto", "ping", "discover", "list_tools", "none"] | None = None
    connect_on_start: bool | None = Field(None, alias="connectOnStart")
    max_concurrency: Count | None = Field(None, alias="maxConcurrency")
    probe_spread: Annotated[float, Field(ge=0, lt=1)] | None = Field(
        None,
        alias="probeSpread",
        description="the first probe comes between (1 - probeSpread) and 1 health intervals after "
        "connecting (default 0.5; 0: exactly one)",
    )
    park_after: Seconds | None = Field(
        None,
        alias="parkAfter",
        description="seconds without a call after which a 2026-07-28 plain-http connection closes "
        "its MCP session while its probes go on (default 60; null: never)",
    )
    max_message_bytes: Count | None = Field(
        None,
        alias="maxMessageBytes",
        description="the largest message the server may send, in bytes (default 8 MiB): "
        "a larger one closes the connection",
    )
    # Keys other MCP clients keep in the same file: accepted, and they mean nothing here.
    description: str | None = None
    always_allow: list[str] | None = Field(None, alias="alwaysAllow")
    auto_approve: list[str] | None = Field(None, alias="autoApprove")


_ONE_CALL_TIMEOUT: dict[str, Any] = {"not": {"required": ["timeout", "callTimeout"]}}


class StdioEntry(_Entry):
    """A server launched as ``command args...``, speaking MCP over its stdin/stdout."""

    model_config = ConfigDict(json_schema_extra=_ONE_CALL_TIMEOUT)
    type: Literal["stdio"] | None = None
    command: NonEmpty
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] | None = None
    cwd: str | None = None


class HttpEntry(_Entry):
    """A server reached over streamable HTTP."""

    model_config = ConfigDict(json_schema_extra=_ONE_CALL_TIMEOUT)
    type: HttpType | None = None
    url: Annotated[str, Field(pattern=URL_PATTERN, max_length=8192)]
    headers: dict[str, str] | None = None
    auth: AuthEntry | None = None


def _transport_tag(value: Any) -> str | None:
    if isinstance(value, Mapping) and ("command" in value) != ("url" in value):
        return "stdio" if "command" in value else "http"
    return None


TRANSPORT_ERROR = "needs 'command' (stdio) or 'url' (streamable HTTP), not both"

ServerEntry = Annotated[
    Annotated[StdioEntry, Tag("stdio")] | Annotated[HttpEntry, Tag("http")],
    Discriminator(_transport_tag, custom_error_type="transport", custom_error_message=TRANSPORT_ERROR),
]
SERVER_ENTRY: TypeAdapter[StdioEntry | HttpEntry] = TypeAdapter(ServerEntry)
TRANSPORT_TAGS = frozenset({"stdio", "http"})

# -- error messages ------------------------------------------------------------------------------------


def json_type(value: Any) -> str:
    """The JSON name of ``value``'s type, as an error message says what it got."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "an empty string" if value == "" else "string"
    if isinstance(value, list | tuple):
        return "array"
    return "object"


_WANTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "dict_type": "an object",
    "list_type": "an array",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


_PARSED = {"int_parsing": "an integer", "float_parsing": "a number", "bool_parsing": "true or false"}
"""Query-string values, which arrive as text and are parsed."""


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    value = error.get("input")
    if kind == "missing":
        return "is required"
    if kind in _WANTED:
        return f"must be {_WANTED[kind]}, got {json_type(value)}"
    if kind in _PARSED:
        return f"must be {_PARSED[kind]}, got {quote(value)}"
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return f"must be a non-empty string, got {json_type(value)}"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters, got {len(value)}"
    if kind == "string_pattern_mismatch":
        wanted = PATTERN_MESSAGES.get(str(ctx.get("pattern")), f"must match {ctx.get('pattern')}")
        return f"{wanted}, got {quote(value)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
        limit = next(iter(ctx.values()), "?")
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)
        return f"must be {op[kind]} {limit}, got {quote(value)}"
    if kind == "finite_number":
        return "must be a finite number"
    if kind in ("literal_error", "enum"):
        return f"must be {ctx.get('expected')}, got {quote(value)}"
    if kind == "union_tag_invalid":
        expected = str(ctx.get("expected_tags", "")).rsplit(", ", 1)
        return f"must be {' or '.join(expected)}, got {quote(ctx.get('tag'))}"
    if kind == "union_tag_not_found":
        return f"'{ctx.get('discriminator', 'type')}' is required".replace("''", "'")
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    return str(error["msg"])


def error_path(loc: Sequence[int | str]) -> str:
    """A pydantic error location as a JSON path (``args[1]``, ``auth.token``), without the
    tags of the tagged unions (``stdio``/``http``, the auth ``type``)."""
    parts: list[str] = []
    previous: int | str | None = None
    for i, part in enumerate(loc):
        tag = (i == 0 and part in TRANSPORT_TAGS) or (previous == "auth" and part in AUTH_TAGS)
        previous = part
        if tag:
            continue
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            text = str(part)
            if len(text) > 60:
                text = text[:60] + "..."
            parts.append(("." if parts else "") + text)
    return "".join(parts)


def _known_keys(models: Iterable[type[BaseModel]]) -> list[str]:
    keys = {info.alias or name for model in models for name, info in model.model_fields.items()}
    return sorted(keys)


_AUTH_KEYS = _known_keys([BearerEntry, ClientCredentialsEntry, PrivateKeyJwtEntry, IdentityAssertionEntry])


def first_problem(
    exc: ValidationError, known: Iterable[str] = (), *, nested: Mapping[str, Iterable[str]] | None = None
) -> tuple[str, str]:
    """The first error of ``exc`` as ``(json path, message)``.

    ``known`` are the keys allowed at the top level, ``nested`` the keys allowed under a
    top-level key: an unknown key is said with the closest known one.
    """
    errors = exc.errors()
    # An unknown key first: a misspelt key explains the "required" error that comes with it.
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    path = error_path(error["loc"])
    if error["type"] == "union_tag_invalid":
        path = f"{path}.type" if path else "type"
    if error["type"] == "extra_forbidden":
        parent = path.rsplit(".", 1)[0] if "." in path else ""
        key = str(error["loc"][-1])
        candidates = list((nested or {}).get(parent, ())) if parent else list(known)
        close = difflib.get_close_matches(key, candidates, n=1)
        return path, f"unknown key; did you mean {close[0]!r}?" if close else "unknown key"
    return path, _message(error)


ENTRY_KEYS = _known_keys([StdioEntry, HttpEntry])
NESTED_KEYS: Mapping[str, list[str]] = {"auth": _AUTH_KEYS}


def entry_problem(exc: ValidationError) -> tuple[str, str]:
    """The first problem of an ``mcpServers`` entry, as ``(path in the entry, message)``."""
    return first_problem(exc, ENTRY_KEYS, nested=NESTED_KEYS)
