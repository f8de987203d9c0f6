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

    def check(arguments: Mapping[str, Any] | None) -> str | None:
        args = arguments if arguments is not None else {}
        if validator.is_valid(args):
            return None
        error = jsonschema.exceptions.best_match(validator.iter_errors(args))
        if error is None:  # pragma: no cover - is_valid said there was one
            return None
        where = ".".join(str(p) for p in error.absolute_path)
        message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
        return f"argument {where!r}: {message}" if where else message

    return check
