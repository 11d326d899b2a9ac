"""JWT setup and the role guard every protected view goes through."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, current_app, g, request
from flask_jwt_extended import JWTManager, get_jwt, verify_jwt_in_request

from scheduler_app.api.problems import problem
from scheduler_app.services.clients.principal import Principal, Role

BEARER = [{"bearerAuth": []}]


def init_jwt(app: Flask) -> JWTManager:
    jwt = JWTManager(app)
    app.extensions["scheduler_tokens"] = VerifiedTokens()

    def _unauthorized(reason: str):
        return problem(
            401,
            "Authentication required",
            reason,
            code="unauthorized",
            headers={"WWW-Authenticate": "Bearer"},
        )

    @jwt.unauthorized_loader
    def _missing(reason: str):
        return _unauthorized(reason)

    @jwt.invalid_token_loader
    def _invalid(reason: str):
        return _unauthorized(f"invalid token: {reason}")

    @jwt.expired_token_loader
    def _expired(_header, _payload):
        return _unauthorized("the token has expired")

    @jwt.revoked_token_loader
    def _revoked(_header, _payload):
        return _unauthorized("the token has been revoked")

    @jwt.user_lookup_error_loader
    def _unknown(_header, _payload):
        return _unauthorized("the client no longer exists")

    @jwt.token_verification_failed_loader
    def _failed(_header, _payload):
        return _unauthorized("the token was not accepted")

    @jwt.token_in_blocklist_loader
    def _is_revoked(_header, payload: dict[str, Any]) -> bool:
        return current_app.extensions["scheduler"].clients.is_revoked(payload["jti"])

    return jwt


class VerifiedTokens:
    """Access tokens this process has verified, with their claims, for their remaining lifetime.

    A client sends the same token with every request: its signature and claims need checking
    once, not per request (that was a tenth of a submit's CPU). A token is only remembered after
    flask-jwt-extended accepted it; its expiry is checked on every use and its revocation too.
    """

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._claims: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> dict[str, Any] | None:
        claims = self._claims.get(token)
        if claims is None or claims["exp"] <= time.time():
            return None
        return claims

    def put(self, token: str, claims: dict[str, Any]) -> None:
        with self._lock:
            if len(self._claims) >= self.size:
                self._claims.clear()
            self._claims[token] = claims


def _bearer_token() -> str | None:
    kind, _, token = request.headers.get("Authorization", "").partition(" ")
    return token if kind == "Bearer" and token and " " not in token else None


def _verified_claims(refresh: bool) -> dict[str, Any] | Any:
    """The request's token claims, or the problem response that refuses it."""
    token = None if refresh else _bearer_token()
    verified: VerifiedTokens = current_app.extensions["scheduler_tokens"]
    claims = verified.get(token) if token else None
    if claims is not None:
        if current_app.extensions["scheduler"].clients.is_revoked(claims["jti"]):
            return problem(
                401,
                "Authentication required",
                "the token has been revoked",
                code="unauthorized",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return claims
    verify_jwt_in_request(refresh=refresh)  # full checks; raises what the loaders answer
    claims = get_jwt()
    if token:
        verified.put(token, claims)
    return claims


def require(role: Role = Role.SUBMITTER, *, refresh: bool = False) -> Callable:
    """Decorator: a valid token whose role is at least ``role``; sets ``g.principal``."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any):
            claims = _verified_claims(refresh)
            if not isinstance(claims, dict):
                return claims
            g.claims = claims
            try:
                principal = Principal(uuid.UUID(claims["sub"]), Role(claims.get("role")))
            except (KeyError, ValueError):
                return problem(
                    401, "Authentication required", "malformed token claims", code="unauthorized"
                )
            if not principal.at_least(role):
                return problem(403, "Forbidden", f"this needs the {role} role", code="forbidden")
            g.principal = principal
            return view(*args, **kwargs)

        return wrapper

    return decorate


def principal() -> Principal:
    return g.principal


def token_claims() -> dict[str, Any]:
    """The claims of the token the current request was authenticated with."""
    return g.claims
