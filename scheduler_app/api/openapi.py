"""The OpenAPI document says what the API enforces, including what marshmallow fields cannot.

Two additions to what flask-smorest derives from the schemas:

- :class:`SchemaRules`: a schema's ``Meta.openapi`` (the JSON Schema of its cross-field rules,
  e.g. "ids or filter") is merged into its component;
- :func:`document_registry`: what depends on this deployment — the known queues, the registered
  task types, and for each type the calls that bind its signature (how many ``args``, which
  ``kwargs`` are required, allowed or taken), so that a request valid per the document is one
  the API accepts, and the other way round (``schemathesis -c all`` holds both sides).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

from apispec import APISpec, BasePlugin

from scheduler_app.task_types import RESERVED_KWARGS, TaskType

# Any JSON value PostgreSQL's jsonb can hold (no NUL character in a string or a key).
JSON_VALUE = "JsonValue"
_ANY: dict[str, Any] = {"$ref": f"#/components/schemas/{JSON_VALUE}"}
_NO_NUL = {"pattern": "^[^\\u0000]*$"}
JSON_VALUE_REF, NO_NUL = _ANY, _NO_NUL  # for other modules' documents
JSON_VALUE_SCHEMA: dict[str, Any] = {
    "description": "any JSON value without NUL characters (PostgreSQL jsonb cannot store them)",
    "anyOf": [
        {"type": "null"},
        {"type": "boolean"},
        {"type": "number"},
        {"type": "string", **_NO_NUL},
        {"type": "array", "items": _ANY},
        {"type": "object", "additionalProperties": _ANY, "propertyNames": _NO_NUL},
    ],
}
_P = inspect.Parameter


class SchemaRules(BasePlugin):
    """apispec plugin: merge ``Meta.openapi`` of a marshmallow schema into its component."""

    def schema_helper(self, name: str, definition: dict, **kwargs: Any) -> dict | None:
        schema = kwargs.get("schema")
        meta = getattr(schema, "Meta", None) or getattr(type(schema), "Meta", None)
        return dict(getattr(meta, "openapi", None) or {}) or None


def call_variants(ttype: TaskType, settings: Any = None) -> list[dict[str, Any]]:
    """JSON Schemas of ``{task, args, kwargs}`` for every way a call binds the type's signature.

    One variant per number of positional ``args``: the parameters they fill may not be named in
    ``kwargs`` again, the required ones after them must be, and without ``**kwargs`` no other
    name is allowed. ``parents`` (a workflow's input) is always allowed, ``ctx`` never.
    """
    params = [p for p in ttype.signature.parameters.values() if p.name != "ctx"]
    positional = [p for p in params if p.kind in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)]
    # kwargs never bind "parents" (it is the platform's input, allowed to every call)
    named = [
        p
        for p in params
        if p.kind in (_P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY) and p.name not in RESERVED_KWARGS
    ]
    var_args = any(p.kind is _P.VAR_POSITIONAL for p in params)
    var_kwargs = any(p.kind is _P.VAR_KEYWORD for p in params)
    documented = {
        name: schema(settings) if callable(schema) else schema
        for name, schema in ttype.param_schemas.items()
    }
    variants = []
    for count in range(len(positional) + 1):
        taken = {p.name for p in positional[:count]}
        if any(p.kind is _P.POSITIONAL_ONLY and p.default is _P.empty for p in positional[count:]):
            continue  # a required positional-only parameter left out: never binds
        required = [p.name for p in named if p.name not in taken and p.default is _P.empty]
        kwargs: dict[str, Any] = {"type": "object", "propertyNames": _NO_NUL}
        if var_kwargs:
            kwargs["additionalProperties"] = _ANY
            props = {n: documented.get(n, _ANY) for n in (p.name for p in named) if n not in taken}
            if props:
                kwargs["properties"] = props
        else:
            kwargs["properties"] = {
                **{p.name: documented.get(p.name, _ANY) for p in named if p.name not in taken},
                "parents": _ANY,
            }
            kwargs["additionalProperties"] = False
        refused = [*(taken - RESERVED_KWARGS), *(RESERVED_KWARGS - {"parents"})]
        kwargs["not"] = {"anyOf": [{"required": [name]} for name in sorted(refused)]}
        if required:
            kwargs["required"] = required
        if ttype.kwargs_schema:
            kwargs["allOf"] = [ttype.kwargs_schema]
        args: dict[str, Any] = {"type": "array", "items": _ANY, "minItems": count}
        if count:
            args["prefixItems"] = [documented.get(p.name, _ANY) for p in positional[:count]]
        if not (var_args and count == len(positional)):
            args["maxItems"] = count
        variant: dict[str, Any] = {
            "properties": {"task": {"enum": [ttype.name]}, "args": args, "kwargs": kwargs}
        }
        needed = [key for key, needs in (("args", count > 0), ("kwargs", bool(required))) if needs]
        if needed:
            variant["required"] = needed
        variants.append(variant)
    return variants


def document_registry(
    spec: APISpec, settings: Any, types: Mapping[str, TaskType], schemas: Iterable[str]
) -> None:
    """Constrain the named task-submission components to this deployment's settings (queues,
    time limits) and task types."""
    components = spec.components.schemas
    components.setdefault(JSON_VALUE, JSON_VALUE_SCHEMA)
    variants = [v for name in sorted(types) for v in call_variants(types[name], settings)]
    for name in schemas:
        definition = components.get(name)
        if definition is None:
            continue
        properties = definition["properties"]
        properties["queue"] = {**properties["queue"], "enum": list(settings.queues)}
        properties["timeout"] = {**properties["timeout"], "maximum": settings.max_task_timeout}
        properties["task"] = {**properties["task"], "enum": sorted(types)}
        properties["args"] = {"type": "array", "items": _ANY}
        properties["kwargs"] = {
            "type": "object",
            "additionalProperties": _ANY,
            "propertyNames": _NO_NUL,
        }
        if variants:
            definition["oneOf"] = variants
