"""API clients: creation with a hashed secret, authentication, token revocation."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.security import check_password_hash, generate_password_hash

from scheduler_app.db import transaction
from scheduler_app.errors import Unauthorized, ValidationFailed
from scheduler_app.models import Client, RevokedToken
from scheduler_app.models.base import utcnow
from scheduler_app.services.principal import Role

# Compared against when the client id is unknown, so timing does not tell which ids exist.
_DUMMY_HASH = generate_password_hash("not-a-secret", method="pbkdf2:sha256:200000")


@dataclass
class ClientService:
    sessions: sessionmaker[Session]

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
        with transaction(self.sessions) as session:
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
        with transaction(self.sessions) as session:
            session.execute(
                insert(RevokedToken)
                .values(jti=jti, expires_at=expires_at)
                .on_conflict_do_nothing(index_elements=[RevokedToken.jti])
            )
            session.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow()))

    def is_revoked(self, jti: str) -> bool:
        with self.sessions() as session:
            return (
                session.scalar(select(RevokedToken.jti).where(RevokedToken.jti == jti)) is not None
            )
