"""Marshmallow fields shared by the API schemas: strings and JSON values Postgres can store."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from marshmallow import ValidationError, fields, validate
from werkzeug.exceptions import BadRequest

from scheduler_app import limits

MAX_DEPTH = limits.JSON_DEPTH_MAX
SURROGATES = "strings must be valid Unicode (no lone surrogates such as \\ud800)"


class LongInt:
    """A JSON integer with more digits than ``limits.INT_DIGITS_MAX``, kept unconverted.

    Python refuses to convert such digit strings (a denial-of-service guard), so the request
    parser hands this marker on and validation names the field that holds it.
    """

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"LongInt({self.digits} digits)"


def encodable(text: str) -> bool:
    """True if PostgreSQL can store ``text``: UTF-8 encodable (no lone surrogates)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def check_json_value(value: Any, depth: int = 0) -> None:
    """Raise ValidationError for what JSONB cannot hold (NUL characters, lone surrogates,
    NaN/Infinity, integers beyond the digit limit)."""
    if depth > MAX_DEPTH:
        raise ValidationError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValidationError("strings must not contain NUL characters")
        if not encodable(value):
            raise ValidationError(SURROGATES)
    elif isinstance(value, LongInt):
        raise ValidationError(
            f"integers must have at most {limits.INT_DIGITS_MAX} digits (this one has "
            f"{value.digits})"
        )
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
    """A string without NUL or other control characters (the document says so as a pattern)."""

    def __init__(self, **kwargs: Any):
        metadata = {"pattern": "^[^\\u0000-\\u001f]*$", **kwargs.pop("metadata", {})}
        super().__init__(metadata=metadata, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if any(ord(ch) < 32 for ch in text):
            raise ValidationError("must not contain control characters")
        if not encodable(text):
            self.not_unicode()
        return text

    def not_unicode(self) -> None:
        """Refuse text that is not valid Unicode: a field error (422) by default."""
        raise ValidationError(SURROGATES)


class Credential(Text):
    """A login credential: text that is not valid Unicode is a malformed request (400), as
    the token endpoint answers before it knows whose credentials they are."""

    def not_unicode(self) -> None:
        raise BadRequest("the credentials are not valid Unicode (a lone surrogate)")


class Matching(fields.String):
    """A string matching ``pattern``, which the document states as is (so both say the same)."""

    def __init__(self, pattern: str, longest: int, **kwargs: Any):
        self.regex = re.compile(pattern)
        metadata = {"pattern": pattern, **kwargs.pop("metadata", {})}
        super().__init__(validate=validate.Length(max=longest), metadata=metadata, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if not self.regex.fullmatch(text):
            raise ValidationError(f"must match {self.regex.pattern}")
        return text


def email_address(**kwargs: Any) -> Matching:
    """An email address (``limits.EMAIL_PATTERN``)."""
    return Matching(limits.EMAIL_PATTERN, 254, **kwargs)


class WholeNumber(fields.Integer):
    """A JSON integer: 5 or 5.0 (JSON Schema's "integer"), never 5.5, "5" or true."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if type(value) is float and value.is_integer():
            value = int(value)
        if type(value) is not int:
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class StrictBoolean(fields.Boolean):
    """A JSON ``true``/``false`` only (marshmallow's Boolean also takes 0, 1, "yes", "on")."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if type(value) is not bool:
            raise self.make_error("invalid")
        return value


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
    value goes on in UTC. An instant before year 1 or after 9999 in UTC (valid ISO 8601, e.g.
    ``0001-01-01T00:00:00+01:00``) is taken as the first or last instant a datetime holds.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(default_timezone=UTC, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        parsed = super()._deserialize(value, attr, data, **kwargs)
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            edge = datetime.min if parsed.year == 1 else datetime.max
            return edge.replace(tzinfo=UTC)
