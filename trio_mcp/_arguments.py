"""Checking arguments against a server's own description of a tool or prompt (pure)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jsonschema

Check = Callable[[Mapping[str, Any] | None], str | None]
"""A compiled argument check: why the arguments do not fit (``None``: they do)."""


def argument_problem(kind: str, item: Any, arguments: Mapping[str, Any] | None) -> str | None:
    """Why ``arguments`` do not fit ``item`` (a ``Tool`` or a ``Prompt``), or ``None``.

    Tools are checked against their ``inputSchema`` (JSON Schema), prompts against their
    declared arguments (every required one present, every value a string).
    """
    args = dict(arguments or {})
    if kind == "prompts":
        for declared in item.arguments or ():
            if declared.required and declared.name not in args:
                return f"missing required argument {declared.name!r}"
        for name, value in args.items():
            if not isinstance(value, str):
                return f"argument {name!r} must be a string"
        return None
    if kind == "tools":
        check = compile_check(kind, item)
        return check(args) if check is not None else None
    return None


def compile_check(kind: str, item: Any) -> Check | None:
    """A check of arguments against ``item`` built once (a tool's JSON Schema validator is
    compiled here, not per call); ``None`` when there is nothing to check."""
    if kind == "prompts":
        return lambda arguments: argument_problem(kind, item, arguments)
    if kind != "tools":
        return None
    schema = item.input_schema
    if not isinstance(schema, dict):
        return None
    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        validator = cls(schema)
    except jsonschema.exceptions.SchemaError:
        return None  # a schema we cannot use is not the caller's fault

    def problem(args: Mapping[str, Any]) -> str | None:
        if validator.is_valid(args):
            return None
        error = jsonschema.exceptions.best_match(validator.iter_errors(args))
        if error is None:  # pragma: no cover - is_valid said there was one
            return None
        where = ".".join(str(p) for p in error.absolute_path)
        message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
        return f"argument {where!r}: {message}" if where else message

    if not _shape_decides(schema):
        return lambda arguments: problem(arguments if arguments is not None else {})

    # The schema constrains only which arguments are present and their JSON types, so the
    # verdict on one shape of arguments (names and types) holds for every value of that
    # shape: ask the validator once per shape (it is the slow part of a call's path).
    verdicts: dict[tuple[tuple[str, type, bool], ...], str | None] = {}

    def check(arguments: Mapping[str, Any] | None) -> str | None:
        args = arguments if arguments is not None else {}
        key = _shape_of(args)
        if key is None:
            return problem(args)
        if key not in verdicts:
            if len(verdicts) >= _MAX_SHAPES:
                verdicts.clear()
            verdicts[key] = problem(args)
        return verdicts[key]

    return check


_MAX_SHAPES = 64
_PRIMITIVE_TYPES = frozenset({"string", "integer", "number", "boolean", "null"})
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment"})
_OBJECT_KEYWORDS = frozenset({"type", "properties", "required", "additionalProperties", "$schema"})


def _shape_decides(schema: Mapping[str, Any]) -> bool:
    """Whether ``schema`` can only tell arguments apart by their names and primitive types."""
    if (
        not set(schema)
        <= {"type", "properties", "required", "additionalProperties", "$schema"} | _ANNOTATIONS
    ):
        return False
    if schema.get("type", "object") != "object" or not isinstance(
        schema.get("additionalProperties", True), bool
    ):
        return False
    properties = schema.get("properties", {})
    if not isinstance(properties, Mapping) or not isinstance(schema.get("required", []), list):
        return False
    for sub in properties.values():
        if not isinstance(sub, Mapping) or not set(sub) <= {"type"} | _ANNOTATIONS:
            return False
        types = sub.get("type")
        names = [types] if isinstance(types, str) else types
        if not isinstance(names, list) or not names or not set(names) <= _PRIMITIVE_TYPES:
            return False
    return True


def _shape_of(args: Mapping[str, Any]) -> tuple[tuple[str, type, bool], ...] | None:
    """Names and types of ``args`` (floats: whether integral, which JSON Schema's ``integer``
    accepts); ``None`` when a value is not a JSON primitive."""
    shape = []
    for name, value in args.items():
        kind = type(value)
        if kind is float:
            shape.append((name, kind, value.is_integer()))
        elif kind in (str, int, bool) or value is None:
            shape.append((name, kind, False))
        else:
            return None
    return tuple(shape)
