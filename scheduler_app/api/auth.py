"""/api/v1/auth: client credentials for tokens; refresh; revoke. /api/v1/clients (admin)."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import current_app
from flask.views import MethodView
from flask_jwt_extended import create_access_token, create_refresh_token
from marshmallow import Schema, fields, validate

from scheduler_app.api.blueprint import Blueprint
from scheduler_app.api.fields import Text
from scheduler_app.api.security import BEARER, require, token_claims
from scheduler_app.services.clients.principal import Role

blp = Blueprint("auth", __name__, url_prefix="/api/v1", description="Authentication and clients")


class TokenRequestSchema(Schema):
    client_id = Text(required=True, validate=validate.Length(min=1, max=64))
    client_secret = Text(required=True, validate=validate.Length(min=1, max=200))


class TokenSchema(Schema):
    access_token = fields.String()
    refresh_token = fields.String()
    token_type = fields.String()
    expires_in = fields.Integer()


class RevokeSchema(Schema):
    token = fields.String(metadata={"description": "ignored; the bearer token is revoked"})


class ClientCreateSchema(Schema):
    name = Text(required=True, validate=validate.Length(min=1, max=200))
    role = fields.String(required=True, validate=validate.OneOf([r.value for r in Role]))


class ClientSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    client_id = fields.String()
    role = fields.String()
    disabled = fields.Boolean()
    created_at = fields.DateTime()


class ClientCreatedSchema(ClientSchema):
    client_secret = fields.String(metadata={"description": "shown in this response only"})


def _ext():
    return current_app.extensions["scheduler"]


def issue_tokens(client) -> dict:
    claims = {"role": client.role}
    identity = str(client.id)
    return {
        "access_token": create_access_token(identity, additional_claims=claims),
        "refresh_token": create_refresh_token(identity, additional_claims=claims),
        "token_type": "Bearer",
        "expires_in": _ext().settings.access_token_ttl,
    }


@blp.route("/auth/token")
class Token(MethodView):
    @blp.arguments(TokenRequestSchema)
    @blp.response(200, TokenSchema)
    @blp.alt_response(401, description="Unknown client or wrong secret")
    def post(self, body):
        """Exchange client credentials for an access and a refresh token"""
        client = _ext().clients.authenticate(body["client_id"], body["client_secret"])
        return issue_tokens(client)


@blp.route("/auth/refresh")
class Refresh(MethodView):
    @require(refresh=True)
    @blp.doc(security=BEARER)
    @blp.response(200, TokenSchema)
    def post(self):
        """Exchange a refresh token for new tokens (the old refresh token is revoked)"""
        claims = token_claims()
        client = _ext().clients.get_enabled(claims["sub"])
        _ext().clients.revoke(claims["jti"], datetime.fromtimestamp(claims["exp"], UTC))
        return issue_tokens(client)


@blp.route("/auth/revoke")
class Revoke(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.response(204)
    def post(self):
        """Revoke the bearer token"""
        claims = token_claims()
        _ext().clients.revoke(claims["jti"], datetime.fromtimestamp(claims["exp"], UTC))


@blp.route("/clients")
class Clients(MethodView):
    @require(Role.ADMIN)
    @blp.doc(security=BEARER)
    @blp.arguments(ClientCreateSchema)
    @blp.response(201, ClientCreatedSchema)
    def post(self, body):
        """Create an API client; its secret is shown once"""
        client, secret = _ext().clients.create(body["name"], body["role"])
        # Raw values: the response schema dumps them, and a second dump of a dumped created_at
        # (already a string) raised a 500.
        attributes = {name: getattr(client, name) for name in ClientSchema().fields}
        return {**attributes, "client_secret": secret}

    @require(Role.ADMIN)
    @blp.doc(security=BEARER)
    @blp.response(200, ClientSchema(many=True))
    def get(self):
        """List API clients"""
        return _ext().clients.list()
