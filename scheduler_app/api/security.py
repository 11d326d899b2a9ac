"""JWT setup and the role guard every protected view goes through."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, current_app, g
from flask_jwt_extended import JWTManager, get_jwt, verify_jwt_in_request

from scheduler_app.api.problems import problem
from scheduler_app.services.principal import Principal, Role

BEARER = [{"bearerAuth": []}]


def init_jwt(app: Flask) -> JWTManager:
    jwt = JWTManager(app)

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


def require(role: Role = Role.SUBMITTER, *, refresh: bool = False) -> Callable:
    """Decorator: a valid token whose role is at least ``role``; sets ``g.principal``."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any):
            verify_jwt_in_request(refresh=refresh)
            claims = get_jwt()
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
