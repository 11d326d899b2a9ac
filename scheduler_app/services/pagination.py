"""Keyset pagination, newest first, with opaque cursors."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, Text, and_, cast, func, or_
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from scheduler_app.errors import ValidationFailed


def encode_cursor(at: datetime, row_id: uuid.UUID) -> str:
    """An opaque position in a list ordered by (time desc, id desc)."""
    raw = f"{at.isoformat()}|{row_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Parse a cursor made by encode_cursor; raises ValidationFailed when it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, row_id = raw.partition("|")
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError("naive time")
        # PostgreSQL refuses offsets beyond ±15:59: compare in UTC.
        return when.astimezone(UTC), uuid.UUID(row_id)
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValidationFailed(
            "cursor is not valid", errors={"cursor": ["not a valid cursor"]}
        ) from exc


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
