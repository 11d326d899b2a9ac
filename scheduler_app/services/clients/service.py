"""API clients: creation with a hashed secret, authentication, management, token revocation."""

from __future__ import annotations

import contextlib
import logging
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.security import check_password_hash, generate_password_hash

from scheduler_app.config import Settings
from scheduler_app.errors import BadRequest, Conflict, NotFound, Unauthorized, ValidationFailed
from scheduler_app.models import Client, RevokedToken
from scheduler_app.models.base import utcnow
from scheduler_app.services.clients.principal import Principal, Role
from scheduler_app.services.clients.state import ClientState, ClientStates
from scheduler_app.services.clients.throttle import LoginThrottle
from scheduler_app.services.ledger.unit import unit_of_work

log = logging.getLogger(__name__)

# Revoked token ids are mirrored in Redis so that checking a token costs one Redis round trip, not
# a database transaction. PostgreSQL stays the record: the mirror counts only while its marker
# exists (a restarted or flushed Redis has none), and a missing marker reloads it from the ledger.
# The marker expires, so a mirror that missed a write (Redis failed just then) heals itself.
REVOKED_KEY = "scheduler:revoked:"
REVOKED_LOADED = "scheduler:revoked:loaded"
MIRROR_TTL = 300
REDIS_TIMEOUT = 1.0  # seconds: a Redis slower than this is taken as down (see _fail_fast)

HASH_METHOD = "pbkdf2:sha256:200000"
# Compared against when the client id is unknown, so timing does not tell which ids exist.
_DUMMY_HASH = generate_password_hash("not-a-secret", method=HASH_METHOD)
NAME_MAX = 200


@dataclass
class ClientService:
    sessions: sessionmaker[Session]
    redis: redis.Redis | None = None
    settings: Settings = field(default_factory=Settings)
    states: ClientStates = field(init=False)
    throttle: LoginThrottle = field(init=False)

    def __post_init__(self) -> None:
        if self.redis is not None:
            self.redis = _fail_fast(self.redis)
        self.states = ClientStates(self._load_state, self.settings.client_check_seconds)
        self.throttle = LoginThrottle(
            self.redis, self.settings.login_max_failures, self.settings.login_failure_window
        )

    def create(self, name: str, role: str) -> tuple[Client, str]:
        """Create a client; return it with its secret (shown once, stored only hashed).

        Raises ValidationFailed naming ``name`` or ``role``.
        """
        name = _checked_name(name)
        _checked_role(role)
        secret = secrets.token_urlsafe(32)
        client = Client(
            id=uuid.uuid4(),
            name=name,
            client_id="cl_" + secrets.token_hex(10),
            secret_hash=generate_password_hash(secret, method=HASH_METHOD),
            role=role,
            secret_generation=0,
        )
        with unit_of_work(self.sessions) as session:
            session.add(client)
        return client, secret

    def authenticate(self, client_id: str, secret: str, address: str | None = None) -> Client:
        """The active client with these credentials.

        Raises BadRequest for credentials that are not valid Unicode, TooManyRequests while
        the client id or the address has failed too often, Unauthorized otherwise.
        """
        if not (_encodable(client_id) and _encodable(secret)):
            raise BadRequest("client_id and client_secret must be valid Unicode text")
        self.throttle.check(client_id, address)  # before the hash: a limited caller costs no CPU
        with self.sessions() as session:
            client = session.scalar(
                select(Client).where(Client.client_id == client_id, Client.deleted_at.is_(None))
            )
        stored = client.secret_hash if client else _DUMMY_HASH
        if not check_password_hash(stored, secret) or client is None or client.disabled:
            self.throttle.failed(client_id, address)
            raise Unauthorized("unknown client or wrong secret")
        return client

    def get_enabled(self, client_uuid: uuid.UUID | str) -> Client:
        """The client behind a token; raises Unauthorized when it is gone or disabled."""
        with self.sessions() as session:
            client = session.get(Client, uuid.UUID(str(client_uuid)))
        if client is None or client.disabled or client.deleted_at is not None:
            raise Unauthorized("the client no longer exists or is disabled")
        return client

    def principal_for(self, subject: uuid.UUID, role: Role, generation: int) -> Principal:
        """Who a verified token acts as, given what its client is allowed now.

        The token's role counts only up to the client's stored one (a demotion applies to
        tokens already issued). Raises Unauthorized when the client is disabled, deleted or
        unknown, or its secret was rotated after the token was issued.
        """
        state = self.states.get(subject)
        if state is None or not state.active:
            raise Unauthorized("the client is disabled or no longer exists")
        if generation != state.generation:
            raise Unauthorized("the client's secret was rotated: request a new token")
        return Principal(subject, role if role.rank <= state.role.rank else state.role)

    def get(self, client_id: str) -> Client:
        """A client that is not deleted, by its client_id; raises NotFound."""
        with self.sessions() as session:
            return _existing(session, client_id)

    def update(self, client_id: str, changes: dict[str, Any], acting: uuid.UUID) -> Client:
        """Change a client's ``disabled``, ``role`` or ``name``.

        Raises NotFound, ValidationFailed naming the field, and Conflict when an admin would
        disable or demote the client it acts as (it would lock itself out).
        """
        values: dict[str, Any] = {}
        if "name" in changes:
            values["name"] = _checked_name(changes["name"])
        if "role" in changes:
            values["role"] = _checked_role(changes["role"])
        if "disabled" in changes:
            values["disabled"] = bool(changes["disabled"])
        with unit_of_work(self.sessions) as session:
            client = _existing(session, client_id, lock=True)
            if client.id == acting and (
                values.get("disabled") or values.get("role", client.role) != client.role
            ):
                raise Conflict("a client cannot disable or demote itself")
            for name, value in values.items():
                setattr(client, name, value)
        self.states.forget(client.id)
        return client

    def delete(self, client_id: str, acting: uuid.UUID) -> None:
        """Delete a client: it can no longer log in, its tokens stop working, its tasks stay.

        Raises NotFound, and Conflict for the client the caller acts as.
        """
        with unit_of_work(self.sessions) as session:
            client = _existing(session, client_id, lock=True)
            if client.id == acting:
                raise Conflict("a client cannot delete itself")
            client.deleted_at = utcnow()
        self.states.forget(client.id)

    def rotate_secret(self, client_id: str) -> tuple[Client, str]:
        """Give a client a new secret (returned once); the old one and the tokens issued with
        it stop working. Raises NotFound."""
        secret = secrets.token_urlsafe(32)
        secret_hash = generate_password_hash(secret, method=HASH_METHOD)
        with unit_of_work(self.sessions) as session:
            client = _existing(session, client_id, lock=True)  # locked: no rotation is lost
            client.secret_hash = secret_hash
            client.secret_generation += 1
        self.states.forget(client.id)
        return client, secret

    def _load_state(self, subject: uuid.UUID) -> ClientState | None:
        with self.sessions() as session:
            row = session.execute(
                select(
                    Client.role, Client.secret_generation, Client.disabled, Client.deleted_at
                ).where(Client.id == subject)
            ).first()
        if row is None:
            return None
        role, generation, disabled, deleted_at = row
        return ClientState(Role(role), generation, not disabled and deleted_at is None)

    def list(self) -> list[Client]:
        """Every client that is not deleted, oldest first."""
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Client).where(Client.deleted_at.is_(None)).order_by(Client.created_at)
                )
            )

    def revoke(self, jti: str, expires_at: datetime) -> bool:
        """Refuse this token from now on (kept until it would have expired anyway).

        Returns whether this call revoked it (False: it was revoked already), so a refresh
        token exchanged twice at once is honoured once.
        """
        with unit_of_work(self.sessions) as session:
            inserted = session.execute(
                insert(RevokedToken)
                .values(jti=jti, expires_at=expires_at)
                .on_conflict_do_nothing(index_elements=[RevokedToken.jti])
                .returning(RevokedToken.jti)
            ).first()
            session.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow()))
        if self.redis is None:
            return inserted is not None
        try:
            self.redis.set(REVOKED_KEY + jti, 1, ex=_seconds_left(expires_at))
        except redis.RedisError as exc:
            log.warning("revocation not mirrored in Redis", extra={"error": str(exc)})
            with contextlib.suppress(redis.RedisError):  # checks use the ledger while it fails
                self.redis.delete(REVOKED_LOADED)  # the next check reloads from the ledger
        return inserted is not None

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


def _fail_fast(client: redis.Redis) -> redis.Redis:
    """The same Redis without redis-py's retries and with short timeouts.

    Every use of Redis here has a fallback (the ledger for revocations, no limit for logins);
    retrying a Redis that is down (up to 3 times, with backoff of seconds) would hold every
    request that checks a token, and every login, for longer than the fallback costs.
    """
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["retry"] = Retry(NoBackoff(), 0)
    for name in ("socket_timeout", "socket_connect_timeout"):
        kwargs[name] = min(kwargs.get(name) or REDIS_TIMEOUT, REDIS_TIMEOUT)
    return redis.Redis(connection_pool=type(pool)(connection_class=pool.connection_class, **kwargs))


def _seconds_left(expires_at: datetime) -> int:
    return max(1, int((expires_at - utcnow()).total_seconds()) + 1)


def _existing(session: Session, client_id: str, *, lock: bool = False) -> Client:
    # Client ids are printable ASCII; anything else (a NUL PostgreSQL refuses) names none.
    if not (client_id.isascii() and client_id.isprintable()):
        raise NotFound("no such client")
    query = select(Client).where(Client.client_id == client_id, Client.deleted_at.is_(None))
    client = session.scalar(query.with_for_update() if lock else query)
    if client is None:
        raise NotFound(f"no client {client_id}")
    return client


def _encodable(text: str) -> bool:
    """Whether the text is valid Unicode: JSON's lone surrogates (\\ud800) are not, and
    neither PostgreSQL nor a hash can take them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _checked_name(name: str) -> str:
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > NAME_MAX:
        raise ValidationFailed(errors={"name": [f"must be 1 to {NAME_MAX} characters"]})
    if not _encodable(name) or any(ord(ch) < 32 for ch in name):
        raise ValidationFailed(
            errors={"name": ["must be valid Unicode text without control characters"]}
        )
    return name


def _checked_role(role: str) -> str:
    if role not in set(Role):
        raise ValidationFailed(errors={"role": [f"must be one of {[r.value for r in Role]}"]})
    return role
