"""Marshmallow fields shared by the API schemas: strings and JSON values Postgres can store."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from marshmallow import ValidationError, fields

from scheduler_app import limits

MAX_DEPTH = limits.JSON_DEPTH_MAX


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
    """A JSON array of any JSON values (``null`` included) that JSONB can store."""

    def __init__(self, **kwargs: Any):
        super().__init__(fields.Raw(allow_none=True), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list:
        result = super()._deserialize(value, attr, data, **kwargs)
        check_json_value(result)
        return result


class JsonObject(fields.Dict):
    """A JSON object of any JSON values (``null`` included) that JSONB can store."""

    def __init__(self, **kwargs: Any):
        super().__init__(keys=fields.String(), values=fields.Raw(allow_none=True), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict:
        result = super()._deserialize(value, attr, data, **kwargs)
        check_json_value(result)
        return result


class UtcDateTime(fields.AwareDateTime):
    """An ISO 8601 instant, normalised to UTC; naive values are taken as UTC.

    Python parses UTC offsets up to ±23:59 but PostgreSQL refuses those beyond ±15:59, so the
    value goes on in UTC; an instant a ``datetime`` cannot hold in UTC is a field error.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(default_timezone=UTC, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        parsed = super()._deserialize(value, attr, data, **kwargs)
        try:
            return parsed.astimezone(UTC)
        except OverflowError as exc:
            raise ValidationError("must be between years 1 and 9999 in UTC") from exc
