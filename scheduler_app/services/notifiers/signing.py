"""Standard Webhooks signatures: ``whsec_`` keys, an owner's default key and its rotation."""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from scheduler_app.models.base import utcnow

KEY_PREFIX = "whsec_"
KEY_BYTES = 24


def new_secret() -> str:
    """A fresh random key in the spec's ``whsec_<base64>`` form."""
    return KEY_PREFIX + base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def signature_header(keys: Sequence[str], msg_id: str, at: datetime, body: str) -> str:
    """``webhook-signature``: one ``v1,<base64>`` per key, space-separated (the spec's form)."""
    return " ".join(Webhook(key).sign(msg_id, at, body) for key in keys)


def headers(keys: Sequence[str], msg_id: str, at: datetime, body: str) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt (timestamp: the attempt's time)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature_header(keys, msg_id, at, body),
    }


def default_key(session: Session, owner_id: uuid.UUID) -> str:
    """The owner's current default key, created on first use (race-safe: one per owner)."""
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('signing_keys'), hashtext(:owner))"),
        {"owner": str(owner_id)},
    )
    current = session.scalar(
        text(
            "SELECT secret FROM signing_keys WHERE owner_id = :owner AND expires_at IS NULL "
            "ORDER BY id DESC LIMIT 1"
        ),
        {"owner": str(owner_id)},
    )
    if current is not None:
        return current
    secret = new_secret()
    session.execute(
        text(
            "INSERT INTO signing_keys (owner_id, secret, created_at) VALUES (:owner, :secret, :now)"
        ),
        {"owner": str(owner_id), "secret": secret, "now": utcnow()},
    )
    return secret


def rotate(session: Session, owner_id: uuid.UUID, overlap: float) -> str:
    """Make a new default key; the previous one keeps signing for ``overlap`` seconds."""
    default_key(session, owner_id)  # takes the owner's lock and makes sure one exists
    now = utcnow()
    session.execute(
        text(
            "UPDATE signing_keys SET expires_at = :until WHERE owner_id = :owner "
            "AND expires_at IS NULL"
        ),
        {"owner": str(owner_id), "until": now + timedelta(seconds=overlap)},
    )
    session.execute(
        text("DELETE FROM signing_keys WHERE owner_id = :owner AND expires_at <= :now"),
        {"owner": str(owner_id), "now": now},
    )
    secret = new_secret()
    session.execute(
        text(
            "INSERT INTO signing_keys (owner_id, secret, created_at) VALUES (:owner, :secret, :now)"
        ),
        {"owner": str(owner_id), "secret": secret, "now": now},
    )
    return secret


def signing_keys(session: Session, owner_id: uuid.UUID) -> list[str]:
    """Every key that signs the owner's calls now: the default one, newest first, and the
    rotated ones still inside their overlap."""
    keys = list(
        session.scalars(
            text(
                "SELECT secret FROM signing_keys WHERE owner_id = :owner "
                "AND (expires_at IS NULL OR expires_at > clock_timestamp()) ORDER BY id DESC"
            ),
            {"owner": str(owner_id)},
        )
    )
    return keys or [default_key(session, owner_id)]
