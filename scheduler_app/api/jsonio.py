"""JSON responses through orjson (with Flask's own encoder for whatever orjson would write
differently), and request bodies read within our limits.

A batch answer holds 1000 tasks; the standard library's encoder spent more time on it than the
database did. orjson writes the same JSON for the plain values the schemas dump (str, int,
float, bool, None, list, dict, UUID); anything else (a datetime Flask would write as an HTTP
date, a subclass, an int beyond 64 bits, a non-string key) makes it refuse, and Flask's encoder
answers instead.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

from scheduler_app import limits
from scheduler_app.api.fields import LongInt

_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
_COMPACT = {"separators": (",", ":")}


def _refuse(value: Any) -> Any:
    raise TypeError(type(value).__name__)


def dumps_fast(obj: Any) -> bytes:
    """orjson's encoding of ``obj``, or TypeError when it holds more than plain JSON values."""
    return orjson.dumps(obj, default=_refuse, option=_OPTIONS)


class FastJSONProvider(DefaultJSONProvider):
    """Flask's provider (sorted keys, its types) with orjson's speed for plain values."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if not kwargs or kwargs == _COMPACT:
            try:
                return dumps_fast(obj).decode()
            except TypeError:
                pass
        return super().dumps(obj, **kwargs)


def _bounded_int(digits: str) -> int | LongInt:
    if len(digits.lstrip("-")) > limits.INT_DIGITS_MAX:
        return LongInt(len(digits.lstrip("-")))
    return int(digits)


def loads_body(data: bytes | str) -> Any:
    """A request body's JSON, read by the standard library (as webargs would).

    Not orjson: it reads integers beyond 64 bits as floats (precision silently lost) and refuses
    lone surrogates, which validation must see to name the field (422, not a 400 for the whole
    body). An integer past Python's conversion limit becomes a :class:`LongInt` marker for the
    same reason. Raises ``json.JSONDecodeError`` for what is not JSON (bytes that are not UTF-8
    included).
    """
    if isinstance(data, bytes):
        try:
            data = data.decode()
        except UnicodeDecodeError as exc:
            # doc must not be "": webargs reads an empty doc as "no body"
            raise json.JSONDecodeError(f"not UTF-8: {exc.reason}", "<bytes>", exc.start) from exc
    try:
        return json.loads(data)
    except json.JSONDecodeError:
        raise
    except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
        return json.loads(data, parse_int=_bounded_int)
