"""Keyset pagination, newest first, with cursors that name a position."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, Text, and_, cast, func, or_
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from scheduler_app.errors import ValidationFailed

# A cursor is a position: microseconds since the epoch and the row id, "<micros>_<hex id>".
# Every string of this pattern is a valid position (the page after it), so the OpenAPI
# document can say exactly which cursors the API takes.
CURSOR_PATTERN = r"^[0-9]{1,17}_[0-9a-f]{32}$"
_CURSOR = re.compile(CURSOR_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_cursor(at: datetime, row_id: uuid.UUID) -> str:
    """The position of a row in a list ordered by (time desc, id desc)."""
    micros = (at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}_{row_id.hex}"


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position a cursor names; raises ValidationFailed when it does not match the pattern."""
    if not _CURSOR.fullmatch(cursor):
        raise ValidationFailed(
            "cursor is not valid",
            errors={"cursor": ["not a cursor of this API (use next_cursor as given)"]},
        )
    micros, _, hex_id = cursor.partition("_")
    return _EPOCH + timedelta(microseconds=int(micros)), uuid.UUID(hex_id)


def text_bytes(*columns: Any) -> ColumnElement[int]:
    """The bytes the columns take as text: what an item of a page weighs in the response."""
    parts = [func.coalesce(func.octet_length(cast(c, Text)), 0) for c in columns]
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def keyset_page(
    sessions: sessionmaker[Session],
    query: Select,
    at: InstrumentedAttribute,
    key: InstrumentedAttribute,
    limit: int,
    cursor: str | None,
    *,
    size: ColumnElement[int] | None = None,
    max_bytes: int | None = None,
) -> tuple[list[Any], str | None]:
    """One page of ``query`` ordered by (at desc, key desc), and the next page's cursor.

    With ``size`` (the bytes an item's large columns take as text) and ``max_bytes``, the page
    also ends before its items pass ``max_bytes`` (it always holds one item): the positions and
    sizes are read first, so large items are never loaded beyond the page.
    """
    if cursor:
        after_at, after_key = decode_cursor(cursor)
        query = query.where(or_(at < after_at, and_(at == after_at, key < after_key)))
    order = (at.desc(), key.desc())
    with sessions() as session:
        if size is not None and max_bytes is not None:
            sized = query.with_only_columns(key, size).order_by(*order).limit(limit + 1)
            rows = session.execute(sized).all()
            fits, total = 0, 0
            for _, item_bytes in rows[:limit]:
                total += item_bytes or 0
                if fits and total > max_bytes:
                    break
                fits += 1
            wanted = [row[0] for row in rows[: fits + 1]]
            query = query.where(key.in_(wanted))
            limit = fits
        items = list(session.scalars(query.order_by(*order).limit(limit + 1)))
    if len(items) <= limit:
        return items, None
    last = items[limit - 1]
    return items[:limit], encode_cursor(getattr(last, at.key), getattr(last, key.key))
