"""API clients: creation with a hashed secret, authentication, token revocation."""

from __future__ import annotations

import contextlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

import redis
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.security import check_password_hash, generate_password_hash

from scheduler_app.errors import Unauthorized, ValidationFailed
from scheduler_app.models import Client, RevokedToken
from scheduler_app.models.base import utcnow
from scheduler_app.services.clients.principal import Role
from scheduler_app.services.ledger.unit import unit_of_work

log = logging.getLogger(__name__)

# Revoked token ids are mirrored in Redis so that checking a token costs one Redis round trip, not
# a database transaction. PostgreSQL stays the record: the mirror counts only while its marker
# exists (a restarted or flushed Redis has none), and a missing marker reloads it from the ledger.
# The marker expires, so a mirror that missed a write (Redis failed just then) heals itself.
REVOKED_KEY = "scheduler:revoked:"
REVOKED_LOADED = "scheduler:revoked:loaded"
MIRROR_TTL = 300

# Compared against when the client id is unknown, so timing does not tell which ids exist.
_DUMMY_HASH = generate_password_hash("not-a-secret", method="pbkdf2:sha256:200000")


@dataclass
class ClientService:
    sessions: sessionmaker[Session]
    redis: redis.Redis | None = None

    def create(self, name: str, role: str) -> tuple[Client, str]:
        """Create a client; return it with its secret (shown once, stored only hashed)."""
        if role not in set(Role):
            raise ValidationFailed(errors={"role": [f"must be one of {[r.value for r in Role]}"]})
        name = name.strip()
        if not name or len(name) > 200:
            raise ValidationFailed(errors={"name": ["must be 1 to 200 characters"]})
        secret = secrets.token_urlsafe(32)
        client = Client(
            id=uuid.uuid4(),
            name=name,
            client_id="cl_" + secrets.token_hex(10),
            secret_hash=generate_password_hash(secret, method="pbkdf2:sha256:200000"),
            role=role,
        )
        with unit_of_work(self.sessions) as session:
            session.add(client)
        return client, secret

    def authenticate(self, client_id: str, secret: str) -> Client:
        """The enabled client with these credentials; raises Unauthorized otherwise."""
        with self.sessions() as session:
            client = session.scalar(select(Client).where(Client.client_id == client_id))
        stored = client.secret_hash if client else _DUMMY_HASH
        if not check_password_hash(stored, secret) or client is None or client.disabled:
            raise Unauthorized("unknown client or wrong secret")
        return client

    def get_enabled(self, client_uuid: uuid.UUID | str) -> Client:
        """The client behind a token; raises Unauthorized when it is gone or disabled."""
        with self.sessions() as session:
            client = session.get(Client, uuid.UUID(str(client_uuid)))
        if client is None or client.disabled:
            raise Unauthorized("the client no longer exists or is disabled")
        return client

    def list(self) -> list[Client]:
        with self.sessions() as session:
            return list(session.scalars(select(Client).order_by(Client.created_at)))

    def revoke(self, jti: str, expires_at: datetime) -> None:
        """Refuse this token from now on (kept until it would have expired anyway)."""
        with unit_of_work(self.sessions) as session:
            session.execute(
                insert(RevokedToken)
                .values(jti=jti, expires_at=expires_at)
                .on_conflict_do_nothing(index_elements=[RevokedToken.jti])
            )
            session.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow()))
        if self.redis is None:
            return
        try:
            self.redis.set(REVOKED_KEY + jti, 1, ex=_seconds_left(expires_at))
        except redis.RedisError as exc:
            log.warning("revocation not mirrored in Redis", extra={"error": str(exc)})
            with contextlib.suppress(redis.RedisError):  # checks use the ledger while it fails
                self.redis.delete(REVOKED_LOADED)  # the next check reloads from the ledger

    def is_revoked(self, jti: str) -> bool:
        """Whether the token was revoked: the Redis mirror when it is loaded, else the ledger."""
        if self.redis is not None:
            try:
                loaded, revoked = self.redis.mget(REVOKED_LOADED, REVOKED_KEY + jti)
                if loaded is not None:
                    return revoked is not None
                self._load_mirror()
            except redis.RedisError as exc:
                log.warning("revocation mirror unavailable", extra={"error": str(exc)})
        with self.sessions() as session:
            return (
                session.scalar(select(RevokedToken.jti).where(RevokedToken.jti == jti)) is not None
            )

    def _load_mirror(self) -> None:
        with self.sessions() as session:
            rows = session.execute(
                select(RevokedToken.jti, RevokedToken.expires_at).where(
                    RevokedToken.expires_at > utcnow()
                )
            ).all()
        pipe = self.redis.pipeline(transaction=False)
        for jti, expires_at in rows:
            pipe.set(REVOKED_KEY + jti, 1, ex=_seconds_left(expires_at))
        pipe.set(REVOKED_LOADED, 1, ex=MIRROR_TTL)
        pipe.execute()


def _seconds_left(expires_at: datetime) -> int:
    return max(1, int((expires_at - utcnow()).total_seconds()) + 1)
