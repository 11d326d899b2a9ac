"""/api/v1/auth: client credentials for tokens; refresh; revoke."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import current_app, request
from flask.views import MethodView
from flask_jwt_extended import create_access_token, create_refresh_token
from marshmallow import Schema, fields, validate

from scheduler_app.api.blueprint import Blueprint
from scheduler_app.api.fields import Credential
from scheduler_app.api.security import BEARER, problem_response, require, token_claims
from scheduler_app.errors import Unauthorized

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth", description="Authentication")

CLIENT_ID_MAX = 64  # clients.client_id
SECRET_MAX = 200


RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds until a login is accepted again",
        "schema": {"type": "integer", "minimum": 1},
    }
}


class TokenRequestSchema(Schema):
    client_id = Credential(
        required=True,
        validate=validate.Length(min=1, max=CLIENT_ID_MAX),
        metadata={"description": "valid Unicode (a lone surrogate is a 400)"},
    )
    client_secret = Credential(
        required=True,
        validate=validate.Length(min=1, max=SECRET_MAX),
        metadata={"description": "valid Unicode (a lone surrogate is a 400)"},
    )


class TokenSchema(Schema):
    access_token = fields.String()
    refresh_token = fields.String()
    token_type = fields.String()
    expires_in = fields.Integer()


def _ext():
    return current_app.extensions["scheduler"]


def issue_tokens(client) -> dict:
    """An access and a refresh token of the client, with its current role and secret."""
    claims = {"role": client.role, "gen": client.secret_generation}
    identity = str(client.id)
    return {
        "access_token": create_access_token(identity, additional_claims=claims),
        "refresh_token": create_refresh_token(identity, additional_claims=claims),
        "token_type": "Bearer",
        "expires_in": _ext().settings.access_token_ttl,
    }


def _expiry(claims: dict) -> datetime:
    return datetime.fromtimestamp(claims["exp"], UTC)


@blp.route("/token")
class Token(MethodView):
    @blp.arguments(TokenRequestSchema)
    @blp.response(200, TokenSchema)
    @problem_response(blp, 400, "Not JSON, or credentials that are not valid Unicode")
    @problem_response(blp, 413, "The body is too large")
    @problem_response(blp, 401, "Unknown client or wrong secret")
    @problem_response(
        blp,
        429,
        "Too many failed logins for this client id or from this address",
        headers=RETRY_AFTER,
    )
    @problem_response(blp, 503, "The database is not answering")
    def post(self, body):
        """Exchange client credentials for an access and a refresh token"""
        client = _ext().clients.authenticate(
            body["client_id"], body["client_secret"], request.remote_addr
        )
        return issue_tokens(client)


@blp.route("/refresh")
class Refresh(MethodView):
    @require(token="refresh")
    @blp.doc(security=BEARER)
    @blp.response(200, TokenSchema)
    @problem_response(blp, 401, "No valid refresh token, or its client is disabled or deleted")
    @problem_response(blp, 503, "The database is not answering")
    def post(self):
        """Exchange a refresh token for new tokens (the old refresh token is revoked)"""
        claims = token_claims()
        client = _ext().clients.get_enabled(claims["sub"])
        if not _ext().clients.revoke(claims["jti"], _expiry(claims)):
            raise Unauthorized("the token has been revoked")  # exchanged by a concurrent call
        return issue_tokens(client)


@blp.route("/revoke")
class Revoke(MethodView):
    @require(token="any")
    @blp.doc(security=BEARER)
    @blp.response(204)
    @problem_response(blp, 401, "No valid token")
    @problem_response(blp, 503, "The database is not answering")
    def post(self):
        """Revoke the bearer token, an access or a refresh token"""
        claims = token_claims()
        _ext().clients.revoke(claims["jti"], _expiry(claims))
