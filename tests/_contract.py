"""Checks an answer of the HTTP API against the generated OpenAPI document.

``tests/conftest.py`` runs :func:`check` on every response that any test receives from the API,
so an answer that drifts from the document (a field renamed or added, an undocumented status)
fails the test that saw it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from web.apidoc import openapi_document

_URI = "urn:trio-mcp:openapi"


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass
class Contract:
    """The document's operations, matched by method and path."""

    document: dict[str, Any]
    checked: int = 0
    operations: list[tuple[re.Pattern[str], str, dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for path, methods in self.document["paths"].items():
            pattern = re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(path)) + "$")
            for method in methods:
                self.operations.append((pattern, method, {"path": path}))
        resource = Resource.from_contents(self.document, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(_URI, resource)

    def operation(self, method: str, path: str) -> str | None:
        """The documented path template for ``method path`` (``None``: not an API route)."""
        for pattern, documented_method, info in self.operations:
            if documented_method == method.lower() and pattern.match(path):
                return str(info["path"])
        return None

    def check(self, method: str, path: str, status: int, body: bytes, content_type: str) -> None:
        """Raise ``AssertionError`` unless the answer is one the document describes."""
        template = self.operation(method, path)
        if template is None:
            return  # not an API operation (unknown route, or a method the route refuses)
        responses = self.document["paths"][template][method.lower()]["responses"]
        where = f"{method} {path} -> {status}"
        assert str(status) in responses, f"{where}: status not in the document ({sorted(responses)})"
        content = responses[str(status)].get("content")
        if content is None:
            assert not body, f"{where}: a body where the document says none"
            self.checked += 1
            return
        (media_type,) = content
        assert content_type.startswith(media_type), f"{where}: content-type {content_type}, not {media_type}"
        if media_type != "application/json":
            self.checked += 1
            return
        pointer = _pointer("paths", template, method.lower(), "responses", str(status), "content")
        schema = {"$ref": f"{_URI}#/{pointer}/application~1json/schema"}
        validator = jsonschema.Draft202012Validator(schema, registry=self._registry)
        errors = sorted(validator.iter_errors(json.loads(body)), key=lambda e: list(e.absolute_path))
        if errors:
            first = errors[0]
            at = "/".join(str(p) for p in first.absolute_path)
            raise AssertionError(f"{where}: the body does not match the document at /{at}: {first.message}")
        self.checked += 1


_contract: Contract | None = None


def contract() -> Contract:
    global _contract
    if _contract is None:
        _contract = Contract(openapi_document())
    return _contract
