"""Request parsing and response serialization.

Parsers raise :class:`web.errors.ValidationFailedError` naming the offending field, so every
malformed input is a readable 422. Serializers turn library objects into JSON-ready dicts;
timestamps are Unix seconds derived from the manager's clock anchor.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import trio
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from trio_mcp import (
    CatalogEntry,
    ConfigError,
    HttpTransport,
    InvocationResult,
    Manager,
    ServerConfig,
    ServerSnapshot,
    SessionInfo,
    StdioTransport,
)
from trio_mcp._auth import describe_auth
from trio_mcp._config import entry_config, refuse_unsupported
from trio_mcp._entry import ENTRY_KEYS, NESTED_KEYS, first_problem, json_type
from trio_mcp._events import ConnectionEvent, InvocationEvent

from . import models
from .errors import PayloadTooLargeError, ValidationFailedError

REDACTED = "***"

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
        raise ValidationFailedError(f"must be a JSON object, got {json_type(body)}", field="body")
    return body


M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], body: Mapping[str, Any]) -> M:
    """``body`` validated by ``model``.

    Raises:
        ValidationFailedError: naming the first bad field by its JSON path.
    """
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        path, message = first_problem(exc, _keys(model))
        raise ValidationFailedError(message, field=path or "body") from None


def _keys(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


_REGISTRATION_KEYS = ["name", *ENTRY_KEYS]


def parse_registration(body: Mapping[str, Any]) -> ServerConfig:
    """Parse ``{"name": ..., <mcpServers entry>}`` into a :class:`ServerConfig`.

    ``${VAR}`` is not expanded: the environment of this process is not the caller's to read.

    Raises:
        ValidationFailedError: naming the field relative to the request body.
    """
    if "name" not in body:
        raise ValidationFailedError("is required", field="name")
    if body.get("disabled") is True:
        raise ValidationFailedError("a disabled server cannot be registered", field="disabled")
    try:
        refuse_unsupported(body, "")
        entry = models.REGISTRATION.validate_python(body)
        return entry_config(entry.name, entry, base="")
    except ValidationError as exc:
        path, message = first_problem(exc, _REGISTRATION_KEYS, nested=NESTED_KEYS)
        raise ValidationFailedError(message, field=path or "body") from None
    except ConfigError as exc:
        key = exc.key or ""
        message = str(exc).removeprefix(f"{key}: ") if key else str(exc)
        raise ValidationFailedError(message, field=key or "body") from None


def parse_query(model: type[M], request: Request) -> M:
    """The query string validated by ``model``."""
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        path, message = first_problem(exc)
        raise ValidationFailedError(message, field=path) from None


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


def hide_secrets(text: str | None, secrets: frozenset[str]) -> str | None:
    """``text`` with every value substituted from the environment (``${VAR}``) replaced."""
    if text is None or not secrets:
        return text
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def transport_dict(config: ServerConfig) -> dict[str, Any]:
    """How the server is reached, with header values, env values, URL passwords, auth secrets
    and every value that came from an environment variable redacted."""
    transport = config.transport
    secrets = config.secrets
    if isinstance(transport, StdioTransport):
        return {
            "kind": "stdio",
            "command": hide_secrets(transport.command, secrets),
            "args": [hide_secrets(a, secrets) for a in _redact_args(transport.args)],
            "env": {k: REDACTED for k in transport.env} if transport.env is not None else None,
            "cwd": hide_secrets(transport.cwd, secrets),
        }
    if isinstance(transport, HttpTransport):
        out: dict[str, Any] = {
            "kind": "http",
            "url": hide_secrets(_redact_url(transport.url), secrets),
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
        config = manager.config(snap.name)
        limiter = manager.supervisor(snap.name).limiter
    except LookupError:  # removed between the snapshot and now
        transport, secrets, in_flight, limit = None, frozenset[str](), 0, 0
    else:
        transport, secrets = transport_dict(config), config.secrets
        limit = config.policy.max_concurrency
        in_flight = limit - limiter.value
    return {
        "name": snap.name,
        "transport": transport,
        "status": snap.status.value,
        "connection": snap.connection.value,
        "last_error": hide_secrets(snap.last_error, secrets),
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
        "in_flight": in_flight,
        "max_concurrency": limit,
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


def replica_of(app: Any) -> str | None:
    """This process's id (``None`` before the state is attached)."""
    replica: str | None = getattr(app.state, "replica", None)
    return replica


def event_dict(event: ConnectionEvent | InvocationEvent, replica: str | None) -> dict[str, Any]:
    """An event as the API shows it: one read from this process's own log says this replica."""
    data = event.to_dict()
    if data.get("replica") is None:
        data["replica"] = replica
    return data
