"""Marshmallow fields shared by the API schemas: strings and JSON values Postgres can store."""

from __future__ import annotations

import math
from typing import Any

from marshmallow import ValidationError, fields

MAX_DEPTH = 64


def check_json_value(value: Any, depth: int = 0) -> None:
    """Raise ValidationError for what JSONB cannot hold (NUL characters, NaN/Infinity)."""
    if depth > MAX_DEPTH:
        raise ValidationError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValidationError("strings must not contain NUL characters")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError("numbers must be finite")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_json_value(key, depth + 1)
            check_json_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_json_value(item, depth + 1)


class Text(fields.String):
    """A string without NUL or other control characters."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if any(ord(ch) < 32 for ch in text):
            raise ValidationError("must not contain control characters")
        return text


class JsonList(fields.List):
    def __init__(self, **kwargs: Any):
        super().__init__(fields.Raw(), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list:
        result = super()._deserialize(value, attr, data, **kwargs)
        check_json_value(result)
        return result


class JsonObject(fields.Dict):
    def __init__(self, **kwargs: Any):
        super().__init__(keys=fields.String(), values=fields.Raw(), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict:
        result = super()._deserialize(value, attr, data, **kwargs)
        check_json_value(result)
        return result
