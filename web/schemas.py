"""Request parsing and response serialization.

Parsers raise :class:`web.errors.ValidationFailedError` naming the offending field, so every
malformed input is a readable 422. Serializers turn library objects into JSON-ready dicts;
timestamps are Unix seconds derived from the manager's clock anchor.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import urlsplit, urlunsplit

import trio
from starlette.requests import Request

import trio_mcp
from trio_mcp import (
    CatalogEntry,
    ConfigError,
    Freshness,
    HttpTransport,
    InvocationResult,
    Manager,
    ServerConfig,
    ServerSnapshot,
    SessionInfo,
    StdioTransport,
)
from trio_mcp._auth import describe_auth
from trio_mcp._exceptions import quote

from .errors import PayloadTooLargeError, ValidationFailedError

REDACTED = "***"
FAILOVER_MODES = ("safe", "always", "never")
FailoverMode = Literal["safe", "always", "never"]

# ---------------------------------------------------------------------------------------------
# request bodies
# ---------------------------------------------------------------------------------------------


async def read_json_object(request: Request, max_body_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object.

    Raises:
        PayloadTooLargeError: the body is larger than ``max_body_bytes``.
        ValidationFailedError: the body is not a JSON object.
    """
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_body_bytes:
        raise PayloadTooLargeError(f"the request body is larger than {max_body_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body_bytes:
            raise PayloadTooLargeError(f"the request body is larger than {max_body_bytes} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ValidationFailedError("a JSON object is required", field="body")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ValidationFailedError(f"malformed JSON: {exc}", field="body") from None
    if not isinstance(body, dict):
        raise ValidationFailedError(f"must be a JSON object, got {_json_type(body)}", field="body")
    return body


def _json_type(value: Any) -> str:
    if value == "":
        return "an empty string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _str(body: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise ValidationFailedError("is required", field=key)
        return None
    if not isinstance(value, str) or not value:
        raise ValidationFailedError(f"must be a non-empty string, got {_json_type(value)}", field=key)
    return value


MAX_REQUEST_ID_LENGTH = 128


def _request_id(body: Mapping[str, Any]) -> str | None:
    value = _str(body, "request_id", required=False)
    if value is not None and len(value) > MAX_REQUEST_ID_LENGTH:
        raise ValidationFailedError(
            f"must be at most {MAX_REQUEST_ID_LENGTH} characters, got {len(value)}", field="request_id"
        )
    return value


def _object(body: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationFailedError(f"must be an object, got {_json_type(value)}", field=key)
    return value


def _str_list(body: Mapping[str, Any], key: str) -> list[str]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationFailedError(f"must be an array of strings, got {_json_type(value)}", field=key)
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise ValidationFailedError(
                f"must be a non-empty string, got {_json_type(item)}", field=f"{key}[{i}]"
            )
    return list(value)


def _positive(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationFailedError(f"must be a number, got {_json_type(value)}", field=key)
    if not math.isfinite(value) or value <= 0:
        raise ValidationFailedError(f"must be a positive number of seconds, got {quote(value)}", field=key)
    return float(value)


@dataclass(frozen=True, kw_only=True)
class InvokeRequest:
    """The common part of ``POST /invoke/{tool,resource,prompt}``."""

    target: str
    arguments: dict[str, Any] | None
    preferred: list[str]
    failover: FailoverMode
    timeout: float | None
    attempt_timeout: float | None
    request_id: str | None


_INVOKE_KEYS = {
    "arguments",
    "preferred_servers",
    "failover",
    "timeout_seconds",
    "attempt_timeout_seconds",
    "request_id",
}


def parse_invoke(
    body: Mapping[str, Any], target_key: str, *, string_arguments: bool = False
) -> InvokeRequest:
    """Parse an invocation body whose target (tool name, URI, prompt name) is ``target_key``."""
    allowed = {target_key, *_INVOKE_KEYS}
    if target_key == "uri":
        allowed.discard("arguments")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValidationFailedError("unknown field", field=unknown[0])
    target = _str(body, target_key)
    assert target is not None
    arguments = _object(body, "arguments")
    if string_arguments and arguments is not None:
        for key, value in arguments.items():
            if not isinstance(value, str):
                raise ValidationFailedError(
                    f"prompt arguments must be strings, got {_json_type(value)}", field=f"arguments.{key}"
                )
    failover = body.get("failover", "safe")
    if failover not in FAILOVER_MODES:
        raise ValidationFailedError(f"must be one of {', '.join(FAILOVER_MODES)}", field="failover")
    return InvokeRequest(
        target=target,
        arguments=arguments,
        preferred=_str_list(body, "preferred_servers"),
        failover=cast(FailoverMode, failover),
        timeout=_positive(body, "timeout_seconds"),
        attempt_timeout=_positive(body, "attempt_timeout_seconds"),
        request_id=_request_id(body),
    )


def parse_registration(body: Mapping[str, Any]) -> ServerConfig:
    """Parse ``{"name": ..., <mcpServers entry>}`` into a :class:`ServerConfig`.

    Raises:
        ValidationFailedError: naming the field relative to the request body.
    """
    name = _str(body, "name")
    assert name is not None
    entry = {k: v for k, v in body.items() if k != "name"}
    base = f"servers.{name}"
    try:
        config = trio_mcp.parse_server_entry(name, entry, prefix="servers")
    except ConfigError as exc:
        key = exc.key or ""
        message = str(exc).removeprefix(f"{key}: ") if key else str(exc)
        field = key.removeprefix(base).lstrip(".") or "body"
        raise ValidationFailedError(message, field=field) from None
    if config is None:
        raise ValidationFailedError("a disabled server cannot be registered", field="disabled")
    return config


# ---------------------------------------------------------------------------------------------
# query parameters
# ---------------------------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def query_str(request: Request, key: str) -> str | None:
    value = request.query_params.get(key)
    return value if value else None


def query_bool(request: Request, key: str) -> bool:
    value = request.query_params.get(key)
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValidationFailedError(f"must be true or false, got {quote(value)}", field=key)


def query_limit(request: Request, key: str = "limit") -> int | None:
    value = request.query_params.get(key)
    if value is None or value == "":
        return None
    try:
        limit = int(value)
    except ValueError:
        raise ValidationFailedError(f"must be an integer, got {quote(value)}", field=key) from None
    if limit < 0:
        raise ValidationFailedError(f"must be >= 0, got {limit}", field=key)
    return limit


def query_freshness(request: Request, key: str = "freshness") -> Freshness | None:
    value = query_str(request, key)
    if value is None:
        return None
    try:
        return Freshness(value)
    except ValueError:
        allowed = ", ".join(f.value for f in Freshness)
        raise ValidationFailedError(f"must be one of {allowed}, got {quote(value)}", field=key) from None


# ---------------------------------------------------------------------------------------------
# responses
# ---------------------------------------------------------------------------------------------


def dump_model(value: Any) -> Any:
    """An SDK (pydantic) model, or a list of them, as JSON-ready data (wire names)."""
    if isinstance(value, list | tuple):
        return [dump_model(v) for v in value]
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return dump(mode="json", by_alias=True, exclude_none=True)
    return value


def _redact_url(url: str) -> str:
    """The URL with its password and every query value replaced (tokens often travel there)."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        parts = parts._replace(netloc=f"{parts.username or ''}:{REDACTED}@{host}")
    if parts.query:
        query = "&".join(
            f"{pair.split('=', 1)[0]}={REDACTED}" if "=" in pair else pair for pair in parts.query.split("&")
        )
        parts = parts._replace(query=query)
    return urlunsplit(parts)


_SECRET_FLAG = re.compile(r"(key|token|secret|passw|auth|credential)", re.IGNORECASE)


def _redact_args(args: Sequence[str]) -> list[str]:
    """Command-line arguments with the values of secret-looking flags replaced
    (``--api-key=X``, ``--token X``)."""
    out: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
        elif arg.startswith("-") and "=" in arg and _SECRET_FLAG.search(arg.split("=", 1)[0]):
            out.append(f"{arg.split('=', 1)[0]}={REDACTED}")
        else:
            out.append(arg)
            hide_next = arg.startswith("-") and bool(_SECRET_FLAG.search(arg))
    return out


def transport_dict(config: ServerConfig) -> dict[str, Any]:
    """How the server is reached, with header values, env values, URL passwords and auth secrets
    redacted."""
    transport = config.transport
    if isinstance(transport, StdioTransport):
        return {
            "kind": "stdio",
            "command": transport.command,
            "args": _redact_args(transport.args),
            "env": {k: REDACTED for k in transport.env} if transport.env is not None else None,
            "cwd": transport.cwd,
        }
    if isinstance(transport, HttpTransport):
        out: dict[str, Any] = {
            "kind": "http",
            "url": _redact_url(transport.url),
            "headers": {k: REDACTED for k in transport.headers} if transport.headers is not None else None,
        }
        if transport.auth is not None:
            # Tokens and client secrets never leave the process: only their kind and public parts.
            out["auth"] = describe_auth(transport.auth)
        return out
    return {"kind": transport.kind}


def session_dict(manager: Manager, info: SessionInfo) -> dict[str, Any]:
    return info.to_dict(manager.anchor.timestamp)


def server_dict(manager: Manager, snap: ServerSnapshot) -> dict[str, Any]:
    """The full view of one server, in the field names of the system this API implements.
    Every ``*_at`` is a Unix time in seconds."""
    ts = manager.anchor.timestamp
    now = trio.current_time()
    try:
        transport = transport_dict(manager.config(snap.name))
    except LookupError:  # removed between the snapshot and now
        transport = None
    return {
        "name": snap.name,
        "transport": transport,
        "status": snap.status.value,
        "connection": snap.connection.value,
        "last_error": snap.last_error,
        "last_error_category": snap.last_error_category,
        "consecutive_failures": snap.consecutive_failures,
        "retry_count": snap.retry_count,
        "last_checked_at": ts(snap.last_checked_at),
        "next_retry_at": ts(snap.retry_at),
        "retry_window_open": snap.retry_at is None or now >= snap.retry_at,
        "initialized": snap.handshaken_at is not None and not snap.handshake_stale(now),
        "initialized_at": ts(snap.handshaken_at),
        "initialization_expires_at": ts(snap.handshake_expires_at),
        "capability_snapshot": snap.capabilities.to_dict() if snap.capabilities is not None else None,
        "adapter_session": session_dict(manager, snap.session),
        "adapter_controls_available": snap.session.controls_available,
    }


def invocation_dict(outcome: InvocationResult[Any]) -> dict[str, Any]:
    return {
        "server": outcome.server,
        "method": outcome.method,
        "request_id": outcome.request_id,
        "result": dump_model(outcome.result),
        "attempts": [a.to_dict() for a in outcome.attempts],
    }


def catalog_entry_dict(entry: CatalogEntry) -> dict[str, Any]:
    data: dict[str, Any] = dump_model(entry.item)
    data["servers"] = list(entry.servers)
    return data
