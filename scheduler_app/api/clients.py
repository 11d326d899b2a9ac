"""/api/v1/clients: API clients, managed by admins."""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from scheduler_app.api.auth import CLIENT_ID_MAX
from scheduler_app.api.blueprint import Blueprint
from scheduler_app.api.fields import Text
from scheduler_app.api.security import BEARER, principal, problem_response, require
from scheduler_app.services.clients.principal import Role
from scheduler_app.services.clients.service import NAME_MAX

blp = Blueprint("clients", __name__, url_prefix="/api/v1/clients", description="API clients")

ROLES = [r.value for r in Role]
NAME_DESCRIPTION = "1 to 200 characters of valid Unicode, no control characters; trimmed"
CLIENT_PATH = f"/<string(maxlength={CLIENT_ID_MAX}):client_id>"


class StrictBoolean(fields.Boolean):
    """JSON true or false, nothing else (marshmallow also takes 1, "yes", "on"...)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class ClientCreateSchema(Schema):
    name = Text(
        required=True,
        validate=validate.Length(min=1, max=NAME_MAX),
        metadata={"description": NAME_DESCRIPTION},
    )
    role = fields.String(required=True, validate=validate.OneOf(ROLES))


class ClientUpdateSchema(Schema):
    disabled = StrictBoolean(
        metadata={"description": "a disabled client's tokens stop working within seconds"},
    )
    role = fields.String(
        validate=validate.OneOf(ROLES),
        metadata={"description": "tokens already issued act with at most this role"},
    )
    name = Text(
        validate=validate.Length(min=1, max=NAME_MAX), metadata={"description": NAME_DESCRIPTION}
    )


class ClientSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    client_id = fields.String()
    role = fields.String()
    disabled = fields.Boolean()
    created_at = fields.DateTime()


class ClientCreatedSchema(ClientSchema):
    client_secret = fields.String(metadata={"description": "shown in this response only"})


def _service():
    return current_app.extensions["scheduler"].clients


def _with_secret(client, secret: str) -> dict:
    # Raw values: the response schema dumps them, and a second dump of a dumped created_at
    # (already a string) raised a 500.
    attributes = {name: getattr(client, name) for name in ClientSchema().fields}
    return {**attributes, "client_secret": secret}


def with_body(view):
    """The errors of a view that reads a JSON body."""
    view = problem_response(blp, 400, "The body is not valid JSON")(view)
    return problem_response(blp, 413, "The body is too large")(view)


def admin_errors(view):
    """The errors every admin view can answer."""
    view = problem_response(blp, 401, "No valid access token")(view)
    view = problem_response(blp, 403, "The token's role is below admin")(view)
    return problem_response(blp, 503, "The database is not answering")(view)


@blp.route("")
class Clients(MethodView):
    @require(Role.ADMIN)
    @blp.doc(security=BEARER)
    @blp.arguments(ClientCreateSchema)
    @blp.response(201, ClientCreatedSchema)
    @with_body
    @admin_errors
    def post(self, body):
        """Create an API client; its secret is shown once"""
        client, secret = _service().create(body["name"], body["role"])
        return _with_secret(client, secret)

    @require(Role.ADMIN)
    @blp.doc(security=BEARER)
    @blp.response(200, ClientSchema(many=True))
    @admin_errors
    def get(self):
        """List API clients (deleted ones are not listed)"""
        return _service().list()


@blp.route(CLIENT_PATH)
class ClientById(MethodView):
    @require(Role.ADMIN)
    @blp.doc(security=BEARER)
    @blp.response(200, ClientSchema)
    @problem_response(blp, 404, "No such client (or it was deleted)")
    @admin_errors
    def get(self, client_id: str):
        """Get an API client"""
        return _service().get(client_id)

    @require(Role.ADMIN)
    @blp.doc(security=BEARER)
    @blp.arguments(ClientUpdateSchema, required=False)  # no body: nothing to change
    @blp.response(200, ClientSchema)
    @problem_response(blp, 404, "No such client (or it was deleted)")
    @problem_response(blp, 409, "An admin cannot disable or demote the client it acts as")
    @with_body
    @admin_errors
    def patch(self, body, client_id: str):
        """Disable or enable a client, change its role or name"""
        return _service().update(client_id, body, acting=principal().id)

    @require(Role.ADMIN)
    @blp.doc(security=BEARER)
    @blp.response(204)
    @problem_response(blp, 404, "No such client (or it was deleted already)")
    @problem_response(blp, 409, "An admin cannot delete the client it acts as")
    @admin_errors
    def delete(self, client_id: str):
        """Delete a client: it cannot log in, its tokens stop working; its tasks are kept"""
        _service().delete(client_id, acting=principal().id)


@blp.route(f"{CLIENT_PATH}/rotate-secret")
class ClientSecretRotation(MethodView):
    @require(Role.ADMIN)
    @blp.doc(security=BEARER)
    @blp.response(200, ClientCreatedSchema)
    @problem_response(blp, 404, "No such client (or it was deleted)")
    @admin_errors
    def post(self, client_id: str):
        """Give a client a new secret, shown once; the old one and its tokens stop working"""
        client, secret = _service().rotate_secret(client_id)
        return _with_secret(client, secret)
