"""/api/v1/webhooks (owners' endpoints and signing key) and the delivery log."""

from __future__ import annotations

import uuid

from flask import current_app
from flask.views import MethodView
from marshmallow import Schema, fields, validate, validates

from scheduler_app import limits as L
from scheduler_app.api.blueprint import Blueprint
from scheduler_app.api.fields import StrictBoolean, Text
from scheduler_app.api.security import BEARER, principal, problem_response, require
from scheduler_app.api.task_schemas import check_webhook_url
from scheduler_app.models.notification import CHANNELS, DELIVERY_STATUSES
from scheduler_app.services.notifiers.announce import EVENT_TYPES

blp = Blueprint(
    "webhooks",
    __name__,
    url_prefix="/api/v1/webhooks",
    description="Webhook endpoints (Standard Webhooks) and the default signing key",
)
deliveries_blp = Blueprint(
    "deliveries", __name__, url_prefix="/api/v1", description="The delivery log of notifications"
)

URL_FIELD = {"pattern": L.HTTP_URL_PATTERN}


def _endpoints():
    return current_app.extensions["scheduler"].endpoints


def _deliveries():
    return current_app.extensions["scheduler"].deliveries


class _EndpointFields(Schema):
    url = fields.String(validate=validate.Length(max=L.URL_MAX), metadata=URL_FIELD)
    events = fields.List(
        fields.String(validate=validate.OneOf(EVENT_TYPES)),
        validate=validate.Length(min=1, max=len(EVENT_TYPES)),
        metadata={"description": "the events it receives (default: all)"},
    )
    description = Text(validate=validate.Length(max=L.WEBHOOK_DESCRIPTION_MAX))

    @validates("url")
    def _url_allowed(self, value, **_):
        check_webhook_url(value)


class WebhookEndpointCreateSchema(_EndpointFields):
    url = fields.String(required=True, validate=validate.Length(max=L.URL_MAX), metadata=URL_FIELD)


class WebhookEndpointUpdateSchema(_EndpointFields):
    enabled = StrictBoolean(
        metadata={"description": "true enables a disabled endpoint and clears its failures"}
    )


class WebhookEndpointSchema(Schema):
    id = fields.UUID()
    url = fields.String()
    events = fields.List(fields.String(), allow_none=True)
    description = fields.String(allow_none=True)
    enabled = fields.Boolean()
    consecutive_failures = fields.Integer()
    disabled_reason = fields.String(allow_none=True)
    disabled_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    owner = fields.UUID()
    secret = fields.String(metadata={"description": "whsec_…: verifies this endpoint's calls"})


class WebhookEndpointListSchema(Schema):
    items = fields.List(fields.Nested(WebhookEndpointSchema))


class SigningKeySchema(Schema):
    key = fields.String(metadata={"description": "whsec_…: signs notify.webhook calls"})


class DeliverySchema(Schema):
    id = fields.UUID()
    type = fields.String(metadata={"enum": list(EVENT_TYPES)})
    channel = fields.String(metadata={"enum": list(CHANNELS)})
    target = fields.String()
    endpoint_id = fields.UUID(allow_none=True)
    status = fields.String(metadata={"enum": list(DELIVERY_STATUSES)})
    attempts = fields.Integer()
    last_status_code = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)
    webhook_id = fields.String(metadata={"description": "the same on every attempt"})
    task_id = fields.UUID(allow_none=True)
    workflow_id = fields.UUID(allow_none=True)
    next_attempt_at = fields.DateTime(
        allow_none=True,
        metadata={"description": "while pending: not before this time (a retry's backoff)"},
    )
    created_at = fields.DateTime()
    last_attempt_at = fields.DateTime(allow_none=True)
    delivered_at = fields.DateTime(allow_none=True)


class DeliveryListSchema(Schema):
    items = fields.List(fields.Nested(DeliverySchema))


def with_body(view):
    view = problem_response(blp, 400, "The body is not valid JSON")(view)
    return problem_response(blp, 413, "The body is too large")(view)


@blp.route("")
class WebhookEndpoints(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.arguments(WebhookEndpointCreateSchema)
    @blp.response(201, WebhookEndpointSchema)
    @blp.alt_response(409, description="The client has the most endpoints it may have")
    @blp.alt_response(422, description="Invalid field (a URL the outbound policy refuses)")
    @with_body
    def post(self, body):
        """Register a webhook endpoint; the response holds its secret"""
        return _endpoints().create(principal(), body)

    @require()
    @blp.doc(security=BEARER)
    @blp.response(200, WebhookEndpointListSchema)
    def get(self):
        """List your webhook endpoints (operators: everyone's)"""
        return {"items": _endpoints().list(principal())}


@blp.route("/<uuid:endpoint_id>")
class WebhookEndpointById(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.response(200, WebhookEndpointSchema)
    @problem_response(blp, 404, "No such endpoint, or not yours")
    def get(self, endpoint_id: uuid.UUID):
        """Get an endpoint (with its secret)"""
        return _endpoints().get(principal(), endpoint_id)

    @require()
    @blp.doc(security=BEARER)
    @blp.arguments(WebhookEndpointUpdateSchema, required=False)
    @blp.response(200, WebhookEndpointSchema)
    @problem_response(blp, 404, "No such endpoint, or not yours")
    @blp.alt_response(422, description="Invalid field")
    @with_body
    def patch(self, body, endpoint_id: uuid.UUID):
        """Change an endpoint's URL, events or description; enable or disable it"""
        return _endpoints().update(principal(), endpoint_id, body or {})

    @require()
    @blp.doc(security=BEARER)
    @blp.response(204)
    @problem_response(blp, 404, "No such endpoint, or not yours")
    def delete(self, endpoint_id: uuid.UUID):
        """Delete an endpoint; its pending deliveries fail"""
        _endpoints().delete(principal(), endpoint_id)


@blp.route("/default/secret")
class DefaultSecret(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.response(200, SigningKeySchema)
    def get(self):
        """Your key for notify.webhook callbacks (created on first use)"""
        return _endpoints().default_secret(principal())


@blp.route("/default/secret/rotate")
class DefaultSecretRotation(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.response(200, SigningKeySchema)
    def post(self):
        """A new default key; the old one keeps signing beside it for webhook_key_overlap (24 h)"""
        return _endpoints().rotate_secret(principal())


@deliveries_blp.route("/tasks/<uuid:task_id>/deliveries")
class TaskDeliveries(MethodView):
    @require()
    @deliveries_blp.doc(security=BEARER)
    @deliveries_blp.response(200, DeliveryListSchema)
    @problem_response(deliveries_blp, 404, "No such task, or not yours")
    def get(self, task_id: uuid.UUID):
        """The notifications of a task's events, oldest first"""
        return {"items": _deliveries().for_task(principal(), task_id)}


@deliveries_blp.route("/workflows/<uuid:workflow_id>/deliveries")
class WorkflowDeliveries(MethodView):
    @require()
    @deliveries_blp.doc(security=BEARER)
    @deliveries_blp.response(200, DeliveryListSchema)
    @problem_response(deliveries_blp, 404, "No such workflow, or not yours")
    def get(self, workflow_id: uuid.UUID):
        """The notifications of a workflow's events, oldest first"""
        return {"items": _deliveries().for_workflow(principal(), workflow_id)}


@deliveries_blp.route("/deliveries/<uuid:delivery_id>/redeliver")
class Redeliver(MethodView):
    @require()
    @deliveries_blp.doc(security=BEARER)
    @deliveries_blp.response(202, DeliverySchema)
    @problem_response(deliveries_blp, 404, "No such delivery, or not yours")
    @problem_response(deliveries_blp, 409, "The delivery is still pending")
    def post(self, delivery_id: uuid.UUID):
        """Send a delivery again, with the same webhook-id (owner or operator)"""
        return _deliveries().redeliver(principal(), delivery_id)
