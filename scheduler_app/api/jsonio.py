"""JSON responses through orjson, with Flask's own encoder for whatever orjson would write
differently.

A batch answer holds 1000 tasks; the standard library's encoder spent more time on it than the
database did. orjson writes the same JSON for the plain values the schemas dump (str, int,
float, bool, None, list, dict, UUID); anything else (a datetime Flask would write as an HTTP
date, a subclass, an int beyond 64 bits, a non-string key) makes it refuse, and Flask's encoder
answers instead.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

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
