"""JWT setup and the guard every protected view goes through: token, client, role."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import Flask, Response, current_app, g, request
from flask_jwt_extended import JWTManager, get_jwt, verify_jwt_in_request

from scheduler_app.api.problems import ProblemSchema, problem
from scheduler_app.errors import Unauthorized
from scheduler_app.services.clients.principal import Principal, Role

BEARER = [{"bearerAuth": []}]
TOKEN_TYPES = ("access", "refresh")
JTI_MAX = 64  # revoked_tokens.jti
FOREIGN_KEY_VIOLATION = "23503"
EXP_MAX = 253_402_300_799  # 9999-12-31T23:59:59Z: the last instant a datetime holds


def _unauthorized(reason: str) -> Response:
    return problem(
        401,
        "Authentication required",
        reason,
        code="unauthorized",
        headers={"WWW-Authenticate": "Bearer"},
    )


def init_jwt(app: Flask) -> JWTManager:
    """flask-jwt-extended with every refusal answered as a 401 problem."""
    jwt = JWTManager(app)
    app.extensions["scheduler_tokens"] = VerifiedTokens()

    @jwt.unauthorized_loader
    def _missing(reason: str):
        return _unauthorized(reason)

    @jwt.invalid_token_loader
    def _invalid(reason: str):
        return _unauthorized(f"invalid token: {reason}")

    @jwt.expired_token_loader
    def _expired(_header, _payload):
        return _unauthorized("the token has expired")

    @jwt.token_verification_failed_loader
    def _failed(_header, _payload):
        return _unauthorized("the token was not accepted")

    # Revocation, the token's client and its claims are checked in require(), for tokens
    # verified just now and remembered ones alike.
    return jwt


@dataclass(frozen=True)
class VerifiedToken:
    """A token whose signature and claims were checked, with the claims parsed."""

    claims: dict[str, Any]
    subject: uuid.UUID
    role: Role
    generation: int

    @property
    def kind(self) -> str:
        return self.claims["type"]


def parse_claims(claims: dict[str, Any]) -> VerifiedToken:
    """The token of correctly signed claims; raises Unauthorized for claims we never issue.

    A correctly signed token is still not trusted to be well formed (a secret shared with
    another service, an older release): a claim missing or of the wrong type is a 401, not a
    500 further on.
    """
    jti, exp = claims.get("jti"), claims.get("exp")
    if not isinstance(jti, str) or not 0 < len(jti) <= JTI_MAX:
        raise Unauthorized("invalid token: no valid jti claim")
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not 0 < exp <= EXP_MAX:
        raise Unauthorized("invalid token: no valid exp claim")
    if claims.get("type") not in TOKEN_TYPES:
        raise Unauthorized("invalid token: unknown token type")
    generation = claims.get("gen", 0)
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
        raise Unauthorized("invalid token: malformed gen claim")
    try:
        subject = uuid.UUID(claims["sub"]) if isinstance(claims.get("sub"), str) else None
        role = Role(claims.get("role"))
    except ValueError:
        subject = None
    if subject is None:
        raise Unauthorized("invalid token: malformed token claims")
    return VerifiedToken(claims, subject, role, generation)


class VerifiedTokens:
    """Tokens this process has verified, with their claims, for their remaining lifetime.

    A client sends the same token with every request: its signature and claims need checking
    once, not per request (that was a tenth of a submit's CPU). A token is only remembered after
    flask-jwt-extended accepted it and its claims parsed; its expiry is checked on every use,
    and its revocation and its client too.
    """

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._tokens: dict[str, VerifiedToken] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> VerifiedToken | None:
        verified = self._tokens.get(token)
        if verified is None or verified.claims["exp"] <= time.time():
            return None
        return verified

    def put(self, token: str, verified: VerifiedToken) -> None:
        with self._lock:
            if len(self._tokens) >= self.size:
                self._tokens.clear()
            self._tokens[token] = verified


def _bearer_token() -> str | None:
    kind, _, token = request.headers.get("Authorization", "").partition(" ")
    return token if kind == "Bearer" and token and " " not in token else None


def _verified_token() -> VerifiedToken:
    """The request's token, verified now or remembered; raises what refuses it."""
    token = _bearer_token()
    remembered: VerifiedTokens = current_app.extensions["scheduler_tokens"]
    verified = remembered.get(token) if token else None
    if verified is None:
        # Full checks of either type (require() checks the type, for remembered tokens too);
        # raises what the loaders answer.
        verify_jwt_in_request(verify_type=False)
        verified = parse_claims(get_jwt())
        if token:
            remembered.put(token, verified)
    return verified


def _authenticate(kind: str) -> tuple[VerifiedToken, Principal]:
    """The request's token and the principal it acts as; raises Unauthorized."""
    verified = _verified_token()
    if kind != "any" and verified.kind != kind:
        raise Unauthorized(f"{kind} token required, got a {verified.kind} token")
    clients = current_app.extensions["scheduler"].clients
    acting = clients.principal_for(verified.subject, verified.role, verified.generation)
    if clients.is_revoked(verified.claims["jti"]):
        raise Unauthorized("the token has been revoked")
    return verified, acting


def require(role: Role = Role.SUBMITTER, *, token: str = "access") -> Callable:
    """Decorator: a valid ``token`` ("access", "refresh" or "any") of an active client whose
    role is at least ``role``; sets ``g.principal`` and ``g.claims``."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any):
            try:
                verified, acting = _authenticate(token)
            except Unauthorized as exc:
                return _unauthorized(exc.detail)
            if not acting.at_least(role):
                return problem(403, "Forbidden", f"this needs the {role} role", code="forbidden")
            g.claims = verified.claims
            g.principal = acting
            try:
                return view(*args, **kwargs)
            except Exception as exc:
                if not _client_row_missing(exc):
                    raise
                # Deleted from the database (not through the API, which keeps the row) since
                # this process last looked: the foreign key noticed before the cache did.
                current_app.extensions["scheduler"].clients.states.forget(acting.id)
                return _unauthorized("the client no longer exists")

        return wrapper

    return decorate


def _client_row_missing(exc: BaseException) -> bool:
    """Whether a statement failed on a foreign key to ``clients`` (fk_<table>_<column>_clients)."""
    error = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    if getattr(error, "pgcode", None) != FOREIGN_KEY_VIOLATION:
        return False
    constraint = getattr(getattr(error, "diag", None), "constraint_name", None) or ""
    return constraint.endswith("_clients")


def problem_response(blp: Any, status: int, description: str, **kwargs: Any) -> Callable:
    """Document an error response of a view as the problem+json it is sent as."""
    return blp.alt_response(
        status,
        schema=ProblemSchema,
        content_type="application/problem+json",
        description=description,
        **kwargs,
    )


def principal() -> Principal:
    """The principal the current request acts as."""
    return g.principal


def token_claims() -> dict[str, Any]:
    """The claims of the token the current request was authenticated with."""
    return g.claims
