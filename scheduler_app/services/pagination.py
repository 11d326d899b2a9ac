"""Keyset pagination, newest first, with opaque cursors."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_
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
        return datetime.fromisoformat(at), uuid.UUID(row_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValidationFailed(
            "cursor is not valid", errors={"cursor": ["not a valid cursor"]}
        ) from exc


def keyset_page(
    sessions: sessionmaker[Session],
    query: Select,
    at: InstrumentedAttribute,
    key: InstrumentedAttribute,
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """One page of ``query`` ordered by (at desc, key desc), and the next page's cursor."""
    if cursor:
        after_at, after_key = decode_cursor(cursor)
        query = query.where(or_(at < after_at, and_(at == after_at, key < after_key)))
    query = query.order_by(at.desc(), key.desc()).limit(limit + 1)
    with sessions() as session:
        items = list(session.scalars(query))
    if len(items) <= limit:
        return items, None
    last = items[limit - 1]
    return items[:limit], encode_cursor(getattr(last, at.key), getattr(last, key.key))
