"""Checking arguments against a server's own description of a tool or prompt (pure)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
import referencing.jsonschema

Check = Callable[[Mapping[str, Any] | None], str | None]
"""A compiled argument check: why the arguments do not fit (``None``: they do)."""


def argument_problem(kind: str, item: Any, arguments: Mapping[str, Any] | None) -> str | None:
    """Why ``arguments`` do not fit ``item`` (a ``Tool`` or a ``Prompt``), or ``None``.

    Tools are checked against their ``inputSchema`` (JSON Schema), prompts against their
    declared arguments (every required one present, every value a string). A tool parameter
    the schema declares but does not require may be given as ``null``: that says "no value"
    (as SEP-2243 reads it too), and the server gets the arguments as given.
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
        key = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError):
        return _compile_schema(schema)
    # Servers of one fleet often describe a tool with the same schema: compile it (checking
    # the schema itself is the slow part, milliseconds) once for all of them.
    return _compile_schema_once(key)


@functools.lru_cache(maxsize=1024)
def _compile_schema_once(key: str) -> Check | None:
    schema: dict[str, Any] = json.loads(key)
    return _compile_schema(schema)


def _validator(
    schema: dict[str, Any], registry: referencing.Registry[Any]
) -> jsonschema.protocols.Validator | None:
    """The validator of ``schema``'s own draft, ``$ref`` resolved through ``registry``;
    ``None`` when ``schema`` is no valid JSON Schema."""
    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except jsonschema.exceptions.SchemaError:
        return None
    return cls(schema, registry=registry)


def _compile_schema(schema: dict[str, Any]) -> Check | None:
    validator = _validator(schema, _LOCAL_ONLY)
    if validator is None:
        return None  # a schema we cannot use is not the caller's fault
    optional = _optional_properties(schema)

    def problem(args: Mapping[str, Any]) -> str | None:
        args = _without_null_optionals(args, optional)
        try:
            if validator.is_valid(args):
                return None
            error = jsonschema.exceptions.best_match(validator.iter_errors(args))
        except referencing.exceptions.Unresolvable:
            return None  # a reference to nowhere in the schema: the server checks what we cannot
        if error is None:  # pragma: no cover - is_valid said there was one
            return None
        where = ".".join(str(p) for p in error.absolute_path)
        message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
        return f"argument {where!r}: {message}" if where else message

    if not _shape_decides(schema):
        return lambda arguments: problem(arguments if arguments is not None else {})

    # The schema constrains only which arguments are present and their JSON types, so the
    # verdict on one shape of arguments (names and types) holds for every value of that
    # shape: ask the validator once per shape (it is the slow part of a call's path). Only
    # the verdict is kept: the reason for a refusal names the value, so it is built anew.
    verdicts = _Verdicts()

    def check(arguments: Mapping[str, Any] | None) -> str | None:
        args = arguments if arguments is not None else {}
        key = _shape_key(args, optional)
        if key is None:
            return problem(args)
        fits = verdicts.of(key, lambda: bool(validator.is_valid(_without_null_optionals(args, optional))))
        return None if fits else problem(args)

    return check


def _never_retrieve(uri: str) -> referencing.Resource[Any]:
    # Whatever another document would say is the server's to check: it accepts anything here.
    return referencing.jsonschema.DRAFT202012.create_resource({})


_LOCAL_ONLY: referencing.Registry[Any] = referencing.Registry(retrieve=_never_retrieve)  # type: ignore[call-arg]
"""Where a schema's ``$ref`` resolves: within the schema itself (and the JSON Schema
meta-schemas). A reference to any other URI is never fetched (SEP-2106): the part of the
arguments it describes is left to the server."""


def _optional_properties(schema: Mapping[str, Any]) -> frozenset[str]:
    """The top-level properties ``schema`` declares and does not require."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return frozenset()
    required = schema.get("required")
    needed = {name for name in required if isinstance(name, str)} if isinstance(required, list) else set()
    return frozenset(name for name in properties if name not in needed)


def _without_null_optionals(args: Mapping[str, Any], optional: frozenset[str]) -> Mapping[str, Any]:
    """``args`` checked as if its ``null`` optional parameters were not given."""
    if not optional or not any(value is None for value in args.values()):
        return args
    return {name: value for name, value in args.items() if value is not None or name not in optional}


_MAX_SHAPES = 64
_PLAIN_TYPES = frozenset({str, int, bool})
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


def _shape_key(args: Mapping[str, Any], optional: frozenset[str]) -> Hashable | None:
    """What one verdict on ``args`` is kept under: the usual arguments (strings, integers,
    booleans) are told apart by their names and types alone, the others by their shape
    (floats, nulls; see :func:`_shape_of`); ``None``: not by a shape at all."""
    kinds = tuple(map(type, args.values()))
    return (tuple(args), kinds) if _PLAIN_TYPES.issuperset(kinds) else _shape_of(args, optional)


class _Verdicts:
    """Verdicts kept by shape, :data:`_MAX_SHAPES` at most (then forgotten, all at once)."""

    __slots__ = ("_kept",)

    def __init__(self) -> None:
        self._kept: dict[Hashable, bool] = {}

    def of(self, key: Hashable, judge: Callable[[], bool]) -> bool:
        """The verdict kept under ``key``, or ``judge()``'s, kept."""
        verdict = self._kept.get(key)
        if verdict is None:
            if len(self._kept) >= _MAX_SHAPES:
                self._kept.clear()
            verdict = self._kept[key] = judge()
        return verdict


def _shape_of(args: Mapping[str, Any], optional: frozenset[str]) -> tuple[tuple[str, type, bool], ...] | None:
    """Names and types of ``args``, leaving out optional parameters given as ``null`` (floats:
    whether integral, which JSON Schema's ``integer`` accepts); ``None`` when a value is not a
    JSON primitive."""
    shape = []
    for name, value in args.items():
        kind = type(value)
        if kind is str or kind is int or kind is bool:
            shape.append((name, kind, False))
        elif kind is float:
            shape.append((name, kind, value.is_integer()))
        elif value is None:
            if name not in optional:
                shape.append((name, kind, False))
        else:
            return None
    return tuple(shape)


Fits = Callable[[Any], bool]
"""A compiled check of a tool's structured content against its output schema."""


def output_check(schema: Mapping[str, Any]) -> Fits | None:
    """A check that structured content fits ``schema`` (a tool's ``outputSchema``), built once
    for every schema alike; ``None`` when the schema is no schema we can compile.

    It says ``True`` exactly where the SDK's own output validation finds no error (the same
    validator class, and ``$ref`` resolved within the schema only), and ``False`` otherwise,
    also for a reference that does not resolve: the SDK then says why."""
    try:
        key = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError):
        return None
    return _output_check_once(key)


@functools.lru_cache(maxsize=1024)
def _output_check_once(key: str) -> Fits | None:
    schema: dict[str, Any] = json.loads(key)
    validator = _validator(schema, referencing.Registry())
    if validator is None:
        return None

    def fits(content: Any) -> bool:
        try:
            return bool(validator.is_valid(content))
        except referencing.exceptions.Unresolvable:
            return False

    if not _shape_decides(schema):
        return fits
    # As for arguments: only names and JSON types can tell contents apart, so one verdict per
    # shape holds for every value of that shape.
    verdicts = _Verdicts()

    def fits_by_shape(content: Any) -> bool:
        if type(content) is not dict:
            return fits(content)
        key = _shape_key(content, frozenset())
        if key is None:
            return fits(content)
        return verdicts.of(key, lambda: fits(content))

    return fits_by_shape
