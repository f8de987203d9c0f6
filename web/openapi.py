"""A hand-written OpenAPI 3.1 description of the API (``GET /openapi.json``).

A test checks that every route in :data:`web.app.ROUTES` is described here and vice versa.
"""

from __future__ import annotations

from typing import Any

import trio_mcp

_P = "/api/v1/mcp"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR = _json(_ref("Error"), "Error")
_ERRORS: dict[str, Any] = {"401": _ERROR, "422": _ERROR}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_LIMIT = _q("limit", {"type": "integer", "minimum": 0}, "keep only the newest N (422 if negative)")
_SERVER_Q = _q("server", {"type": "string"}, "only this server")


def _op(
    summary: str,
    responses: dict[str, Any],
    *,
    params: list[dict[str, Any]] | None = None,
    body: str | None = None,
    public: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**responses, **({} if public else _ERRORS)}}
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
        op["responses"]["413"] = _ERROR
    if public:
        op["security"] = []
    return op


_SERVER = _json(_ref("Server"), "The server")
_SERVERS = _json(
    {"type": "object", "properties": {"servers": {"type": "array", "items": _ref("Server")}}}, ""
)
_NOT_FOUND = {"404": _ERROR}
_CATALOG = {"200": _json({"type": "object"}, "One entry per item, with the servers offering it")}
_INVOKED = {"200": _json(_ref("InvocationResult"), "Success"), "404": _ERROR, "503": _ERROR, "504": _ERROR}

PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/health": {
        "get": _op("Liveness (no auth)", {"200": _json({"type": "object"}, "Alive")}, public=True)
    },
    "/openapi.json": {"get": _op("This document", {"200": _json({"type": "object"}, "OpenAPI 3.1")})},
    f"{_P}/openapi.json": {"get": _op("This document", {"200": _json({"type": "object"}, "OpenAPI 3.1")})},
    f"{_P}/servers": {
        "get": _op("List servers", {"200": _SERVERS}),
        "post": _op(
            "Register an mcpServers-style entry",
            {"201": _SERVER, "403": _ERROR, "409": _ERROR},
            body="Registration",
        ),
    },
    f"{_P}/servers/health-check": {"post": _op("Probe every server now", {"200": _SERVERS})},
    f"{_P}/servers/initialize": {"post": _op("Handshake every server now", {"200": _SERVERS})},
    f"{_P}/servers/connect": {"post": _op("Connect and probe every server now", {"200": _SERVERS})},
    f"{_P}/servers/{{name}}": {
        "get": _op("One server", {"200": _SERVER, **_NOT_FOUND}, params=[_NAME]),
        "delete": _op(
            "Unregister a server (its session and process are closed)",
            {"204": {"description": "Removed"}, **_NOT_FOUND},
            params=[_NAME],
        ),
    },
    f"{_P}/servers/{{name}}/health-check": {
        "post": _op("Probe one server now", {"200": _SERVER, **_NOT_FOUND}, params=[_NAME])
    },
    f"{_P}/servers/{{name}}/initialize": {
        "post": _op("Handshake one server now", {"200": _SERVER, **_NOT_FOUND}, params=[_NAME])
    },
    f"{_P}/servers/{{name}}/connect": {
        "post": _op("Connect and probe one server now", {"200": _SERVER, **_NOT_FOUND}, params=[_NAME])
    },
    f"{_P}/servers/{{name}}/adapter/invalidate": {
        "post": _op(
            "Drop the session; the next use reconnects",
            {"200": _json({"type": "object"}, "Invalidated"), **_NOT_FOUND},
            params=[_NAME],
        )
    },
    f"{_P}/servers/{{name}}/adapter/refresh": {
        "post": _op(
            "Drop the session and open a new one now",
            {"200": _json({"type": "object"}, "Refreshed"), "409": _ERROR, "503": _ERROR, "504": _ERROR},
            params=[_NAME],
        )
    },
    f"{_P}/adapter-sessions": {
        "get": _op(
            "Session diagnostics",
            {"200": _json({"type": "object"}, "Sessions"), **_NOT_FOUND},
            params=[
                _SERVER_Q,
                _q("active_only", {"type": "boolean"}, "only live sessions"),
                _q("freshness", {"enum": [f.value for f in trio_mcp.Freshness]}, "only this freshness"),
                _LIMIT,
            ],
        )
    },
    f"{_P}/events": {
        "get": _op(
            "Connection status changes, oldest first",
            {"200": _json({"type": "object"}, "Events")},
            params=[_SERVER_Q, _q("correlation_id", {"type": "string"}, "one operation"), _LIMIT],
        )
    },
    f"{_P}/invocation-events": {
        "get": _op(
            "Invocation lifecycle events, oldest first",
            {"200": _json({"type": "object"}, "Events")},
            params=[
                _SERVER_Q,
                _q("method", {"type": "string"}, "e.g. tools/call"),
                _q("request_id", {"type": "string"}, "one invocation"),
                _q("correlation_id", {"type": "string"}, "same as request_id"),
                _LIMIT,
            ],
        )
    },
    f"{_P}/invoke/tool": {"post": _op("Call a tool with failover", _INVOKED, body="InvokeTool")},
    f"{_P}/invoke/resource": {"post": _op("Read a resource with failover", _INVOKED, body="InvokeResource")},
    f"{_P}/invoke/prompt": {"post": _op("Get a prompt with failover", _INVOKED, body="InvokePrompt")},
    f"{_P}/tools": {"get": _op("Tools across the fleet", _CATALOG)},
    f"{_P}/resources": {"get": _op("Resources across the fleet", _CATALOG)},
    f"{_P}/prompts": {"get": _op("Prompts across the fleet", _CATALOG)},
}

_INVOKE_COMMON: dict[str, Any] = {
    "preferred_servers": {"type": "array", "items": {"type": "string"}},
    "failover": {"enum": ["safe", "always", "never"], "default": "safe"},
    "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "description": "the whole invocation"},
    "attempt_timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "description": "each attempt"},
    "request_id": {"type": "string"},
}
_ATTEMPT = {
    "type": "object",
    "properties": {
        "server": {"type": "string"},
        "stage": {"enum": ["handshake", "invoke"]},
        "success": {"type": "boolean"},
        "error": {"type": ["string", "null"]},
        "error_category": {"enum": [*trio_mcp.ERROR_CATEGORIES, None]},
        "sent": {"type": "boolean"},
        "started_at": {"type": "number"},
        "duration": {"type": "number"},
    },
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["detail"],
        "properties": {
            "detail": {
                "type": "object",
                "required": ["error", "message"],
                "properties": {
                    "error": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": "string"},
                    "method": {"type": "string"},
                    "outcome": {"enum": ["failed", "unknown"]},
                    "request_id": {"type": "string"},
                    "attempts": {"type": "array", "items": _ref("Attempt")},
                },
            }
        },
    },
    "Attempt": _ATTEMPT,
    "Registration": {
        "type": "object",
        "required": ["name"],
        "description": "An mcpServers entry plus its name: url/headers (HTTP) or command/args/env (stdio).",
        "properties": {
            "name": {"type": "string"},
            "url": {"type": "string"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "command": {"type": "string"},
            "args": {"type": "array", "items": {"type": "string"}},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "InvokeTool": {
        "type": "object",
        "required": ["tool_name"],
        "properties": {"tool_name": {"type": "string"}, "arguments": {"type": "object"}, **_INVOKE_COMMON},
    },
    "InvokeResource": {
        "type": "object",
        "required": ["uri"],
        "properties": {"uri": {"type": "string"}, **_INVOKE_COMMON},
    },
    "InvokePrompt": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "arguments": {"type": "object", "additionalProperties": {"type": "string"}},
            **_INVOKE_COMMON,
        },
    },
    "InvocationResult": {
        "type": "object",
        "properties": {
            "server": {"type": "string"},
            "method": {"type": "string"},
            "request_id": {"type": "string"},
            "result": {"type": "object", "description": "the MCP result, as on the wire"},
            "attempts": {"type": "array", "items": _ref("Attempt")},
        },
    },
    "Server": {
        "type": "object",
        "description": "every *_at is a Unix time in seconds",
        "properties": {
            "name": {"type": "string"},
            "transport": {"type": "object", "description": "header and env values are redacted as ***"},
            "status": {"enum": [s.value for s in trio_mcp.ServerStatus]},
            "connection": {"enum": [s.value for s in trio_mcp.ConnectionState]},
            "last_error": {"type": ["string", "null"]},
            "last_error_category": {"type": ["string", "null"]},
            "consecutive_failures": {"type": "integer"},
            "retry_count": {"type": "integer"},
            "last_checked_at": {"type": ["number", "null"]},
            "next_retry_at": {"type": ["number", "null"]},
            "retry_window_open": {"type": "boolean"},
            "initialized": {"type": "boolean"},
            "initialized_at": {"type": ["number", "null"]},
            "initialization_expires_at": {"type": ["number", "null"]},
            "capability_snapshot": {
                "type": ["object", "null"],
                "description": "protocol_version, era, server_info, capabilities, instructions, captured_at",
            },
            "adapter_session": _ref("AdapterSession"),
            "adapter_controls_available": {"type": "boolean"},
        },
    },
    "AdapterSession": {
        "type": "object",
        "properties": {
            "server": {"type": "string"},
            "active": {"type": "boolean"},
            "initialized": {"type": "boolean"},
            "session_id": {"type": ["integer", "null"]},
            "opened_at": {"type": ["number", "null"]},
            "last_activity_at": {"type": ["number", "null"]},
            "freshness": {"enum": [f.value for f in trio_mcp.Freshness]},
        },
    },
}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "trio-mcp", "version": trio_mcp.__version__},
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
