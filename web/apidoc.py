"""The OpenAPI 3.1 document, generated from the route table and the models of :mod:`web.models`.

Nothing here describes the API by hand: paths and methods come from :data:`web.app.ROUTES`,
what each operation takes and answers from its :class:`web.routes.Operation`, and every schema
from pydantic.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode
from starlette.routing import BaseRoute, Route

import trio_mcp

from . import models
from .routes import OPERATIONS, Endpoint, Link, Operation

REF = "#/components/schemas/{model}"
_PATH_PARAMETER = re.compile(r"{([^}:]+)(?::[^}]+)?}")
_ERROR_DESCRIPTIONS = {
    400: "The Host header names a host this API does not answer for",
    408: "The request body did not arrive in time",
    429: "Too many requests (Retry-After says when to retry)",
    401: "A valid bearer token is required",
    403: "Refused by this server's settings, or a page from another origin",
    404: "Unknown server, or nothing offers the target",
    409: "Conflicts with the server's current state",
    413: "The request body is too large",
    422: "A malformed body or query string, naming the field",
    503: "The manager is not running, too many invocations are in flight (Retry-After), or no "
    "candidate could answer",
    504: "A deadline passed",
}


def _statuses(op: Operation, path: str) -> list[int]:
    # 400: a Host this API does not answer for; 403: a page from another origin.
    statuses = {op.status, *op.errors, *op.answers, 400, 403}
    if not op.public:
        statuses |= {401, 429, 503}
    if op.body is not None:
        statuses |= {408, 413, 422}
    if op.query is not None:
        statuses.add(422)
    if "{name}" in path:
        statuses.add(404)
    return sorted(statuses)


def _strip_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema without its ``null`` branch (a query string has no null)."""
    branches = schema.get("anyOf")
    if branches and any(b.get("type") == "null" for b in branches):
        rest = [b for b in branches if b.get("type") != "null"]
        out = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
        if len(rest) == 1:
            out.update(rest[0])
        else:
            out["anyOf"] = rest
        return out
    return {k: v for k, v in schema.items() if k != "default" or v is not None}


def _query_parameters(query: type[BaseModel], schema: dict[str, Any]) -> list[dict[str, Any]]:
    properties = schema.get("properties", {})
    out = []
    for name in query.model_fields:
        prop = _strip_null(dict(properties[name]))
        description = prop.pop("description", None)
        prop.pop("title", None)
        param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": prop}
        if description:
            param["description"] = description
        out.append(param)
    return out


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


class _Schemas:
    """Every type the operations name, turned into JSON Schema in one pass (shared
    ``components/schemas``)."""

    def __init__(self, ops: Iterable[Operation]) -> None:
        inputs: list[tuple[Any, JsonSchemaMode, TypeAdapter[Any]]] = []
        seen: set[tuple[int, str]] = set()

        def add(kind: Any, mode: JsonSchemaMode) -> None:
            if kind is not None and (id(kind), mode) not in seen:
                seen.add((id(kind), mode))
                inputs.append((kind, mode, TypeAdapter(kind)))

        add(models.Error, "serialization")
        for op in ops:
            add(op.body, "validation")
            add(op.query, "validation")
            if op.media_type == "application/json":
                add(op.response, "serialization")
            for model in (*op.answers.values(), *op.events.values()):
                add(model, "serialization")
        keys, defs = TypeAdapter.json_schemas(
            [(id(kind), mode, adapter) for kind, mode, adapter in inputs], ref_template=REF
        )
        self._keys = keys
        self.components: dict[str, Any] = defs.get("$defs", {})

    def of(self, kind: Any, mode: JsonSchemaMode) -> dict[str, Any]:
        return dict(self._keys[(id(kind), mode)])

    def inline(self, kind: Any, mode: JsonSchemaMode) -> dict[str, Any]:
        """The schema itself rather than a reference to it."""
        schema = self.of(kind, mode)
        ref = schema.get("$ref")
        return dict(self.components[ref.rsplit("/", 1)[-1]]) if ref else schema


def _event_schema(op: Operation, schemas: _Schemas) -> dict[str, Any]:
    """One server-sent event: its ``event`` name, ``id`` and JSON ``data`` (described by
    ``contentSchema``)."""
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "id": {"type": "string", "description": "the stream's seq: resume with Last-Event-ID"},
            "event": {"enum": list(op.events)},
            "data": {"type": "string", "contentMediaType": "application/json"},
        },
        "oneOf": [
            {
                "properties": {
                    "event": {"const": name},
                    "data": {"contentSchema": schemas.of(model, "serialization")},
                }
            }
            for name, model in op.events.items()
        ],
    }


def _link(target: str, link: Link) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": target, "description": link.description}
    if link.request_body is None:
        out["parameters"] = {"name": "$response.body#/name"}
    else:
        out["requestBody"] = link.request_body
    return out


def _operation(route: Route, op: Operation, schemas: _Schemas, operation_id: str) -> dict[str, Any]:
    path = route.path
    out: dict[str, Any] = {"operationId": operation_id, "summary": op.summary}
    parameters = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
        for p in _PATH_PARAMETER.findall(path)
    ]
    if op.query is not None:
        parameters += _query_parameters(op.query, schemas.inline(op.query, "validation"))
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas.of(op.body, "validation")}},
        }
    responses: dict[str, Any] = {}
    error = schemas.of(models.Error, "serialization")
    for status in _statuses(op, path):
        if status == op.status:
            if op.response is None:
                responses[str(status)] = {"description": "Done (no body)"}
            elif op.events:
                content = {op.media_type: {"schema": _event_schema(op, schemas)}}
                responses[str(status)] = {"description": "Success", "content": content}
            elif op.media_type != "application/json":
                content = {op.media_type: {"schema": {"type": "string"}}}
                responses[str(status)] = {"description": "Success", "content": content}
            else:
                responses[str(status)] = _json(schemas.of(op.response, "serialization"), "Success")
            if op.links:
                responses[str(status)]["links"] = {
                    target: _link(target, link) for target, link in op.links.items()
                }
        elif status in op.answers:
            responses[str(status)] = _json(schemas.of(op.answers[status], "serialization"), "See the body")
        else:
            responses[str(status)] = _json(error, _ERROR_DESCRIPTIONS.get(status, "Error"))
    out["responses"] = responses
    if op.public:
        out["security"] = []
    return out


def _endpoints(route: BaseRoute) -> dict[str, Endpoint]:
    """The endpoint of each method of ``route``."""
    endpoints: Mapping[str, Endpoint] | None = getattr(route, "endpoints", None)
    if endpoints is not None:
        return dict(endpoints)
    if isinstance(route, Route):
        return {m: route.endpoint for m in route.methods or () if m != "HEAD"}
    return {}


def build_document(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI document of ``routes`` (every endpoint must have an :class:`Operation`)."""
    described = [(route, _endpoints(route)) for route in routes if isinstance(route, Route)]
    missing = [r.path for r, endpoints in described for e in endpoints.values() if e not in OPERATIONS]
    if missing:
        raise LookupError(f"routes without an operation: {missing}")
    schemas = _Schemas(OPERATIONS[e] for _, endpoints in described for e in endpoints.values())
    paths: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    for route, endpoints in described:
        for method, endpoint in sorted(endpoints.items()):
            operation_id = endpoint.__name__
            if operation_id in used:  # the same endpoint under a second path
                operation_id = f"{operation_id}_{len(used)}"
            used.add(operation_id)
            described_op = _operation(route, OPERATIONS[endpoint], schemas, operation_id)
            paths.setdefault(route.path, {})[method.lower()] = described_op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "trio-mcp",
            "version": trio_mcp.__version__,
            "description": "Supervised connections to a fleet of MCP servers, with failover. "
            "Every *_at field is a Unix time in seconds.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The document of the application's own routes (built once)."""
    from .app import ROUTES

    return build_document(ROUTES)
