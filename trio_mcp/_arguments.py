"""Checking arguments against a server's own description of a tool or prompt (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema


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
        schema = item.input_schema
        if not isinstance(schema, dict):
            return None
        try:
            validator = jsonschema.validators.validator_for(schema)(schema)
            if validator.is_valid(args):
                return None
            error = jsonschema.exceptions.best_match(validator.iter_errors(args))
        except jsonschema.exceptions.SchemaError:
            return None  # a schema we cannot use is not the caller's fault
        if error is None:  # pragma: no cover - is_valid said there was one
            return None
        where = ".".join(str(p) for p in error.absolute_path)
        message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
        return f"argument {where!r}: {message}" if where else message
    return None
