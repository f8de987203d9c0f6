"""The JSON-RPC messages our transports send by themselves, outside an SDK session (a health
probe, a list-change stream, the handshake of a connection that starts parked), and what their
answers mean: what the streamable-HTTP and the stdio transports share."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

INTERNAL_ERROR = -32603
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
CONNECTION_CLOSED = -32000
REQUEST_TIMEOUT = -32001

REPEATABLE_METHODS = frozenset(
    {
        "initialize",
        "server/discover",
        "ping",
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "prompts/list",
        "resources/read",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "resources/subscribe",
        "resources/unsubscribe",
        "subscriptions/listen",
    }
)
"""Requests that do the same whether the server receives them once or twice: the only ones sent
again when a pooled connection breaks before their answer (see ``http._LinkedHttpTransport._send``
and ``http_probe.PlainCalls``). A ``tools/call`` is never among them: the transport cannot know
whether the tool may run twice."""


def envelope(version: str) -> dict[str, Any]:
    """The ``_meta`` every 2026-07-28 request of ours carries: its protocol version, and no
    client capabilities."""
    from mcp_types import CLIENT_CAPABILITIES_META_KEY, PROTOCOL_VERSION_META_KEY

    return {PROTOCOL_VERSION_META_KEY: version, CLIENT_CAPABILITIES_META_KEY: {}}


def discover_message(request_id: str, version: str) -> dict[str, Any]:
    """A ``server/discover`` at ``version`` (a probe)."""
    return request_message(request_id, "server/discover", {"_meta": envelope(version)})


def discover_body(request_id: str, version: str) -> bytes:
    return json.dumps(discover_message(request_id, version)).encode()


def request_message(request_id: str, method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """A JSON-RPC request of ours (``params`` left out when ``None``)."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = dict(params)
    return message


def result_of(answer: dict[str, Any], method: str = "server/discover") -> dict[str, Any]:
    """The result of ``answer`` (to a ``method`` request); raises the ``MCPError`` it holds
    instead, or one saying it holds no result."""
    error = answer.get("error")
    if error is not None:
        raise rpc_error(error)
    result = answer.get("result")
    if not isinstance(result, dict):
        raise rpc_error({"code": INVALID_REQUEST, "message": f"{method} answered without a result"})
    return result


def check_answer(answer: dict[str, Any]) -> None:
    """Whether a probe's ``server/discover`` was answered with a result (else raises)."""
    result_of(answer)


def rpc_error(error: Any) -> Exception:
    from mcp.shared.exceptions import MCPError

    if not isinstance(error, dict) or not isinstance(error.get("code"), int):
        return MCPError(INVALID_REQUEST, f"not a JSON-RPC error: {str(error)[:200]}")
    return MCPError(error["code"], str(error.get("message", "")), error.get("data"))


SESSIONLESS_METHODS = frozenset(
    {"server/discover", "tools/list", "resources/list", "resources/templates/list", "prompts/list"}
)
"""What the dispatcher of a session that is never entered sends (``Link.sessionless``):
requests that need no session and may be sent twice (over HTTP, a reused socket that turns
out closed under one is tried again on another)."""


LISTEN = "subscriptions/listen"

_ACKNOWLEDGED = "notifications/subscriptions/acknowledged"
_LIST_CHANGED = {
    "notifications/tools/list_changed": "tools",
    "notifications/prompts/list_changed": "prompts",
    "notifications/resources/list_changed": "resources",
}
_FILTER_KEYS = {
    "tools": "toolsListChanged",
    "prompts": "promptsListChanged",
    "resources": "resourcesListChanged",
}


class ListenLostError(Exception):
    """The stream ended without the server's answer to the listen request (its graceful close):
    changes may have been missed."""


def stream_event(message: Mapping[str, Any], subscription_id: str) -> str | None:
    """What a message read on the listen stream ``subscription_id`` says: ``"acknowledged"``,
    the kind whose list changed (``"tools"``, ``"prompts"``, ``"resources"``), or ``None``
    (anything else, or a message stamped for another subscription)."""
    method = message.get("method")
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    from mcp.shared.subscriptions import SUBSCRIPTION_ID_META_KEY

    if not isinstance(meta, dict) or meta.get(SUBSCRIPTION_ID_META_KEY) != subscription_id:
        return None
    if method == _ACKNOWLEDGED:
        return "acknowledged" if isinstance(params, dict) and "notifications" in params else None
    return _LIST_CHANGED.get(method) if isinstance(method, str) else None


def listen_body(request_id: str, version: str, kinds: tuple[str, ...]) -> bytes:
    params = {"notifications": {_FILTER_KEYS[kind]: True for kind in kinds}, "_meta": envelope(version)}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": LISTEN, "params": params}).encode()
