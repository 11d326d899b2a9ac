"""/api/v1/dlq: inspect, replay and purge dead letters (operators)."""

from __future__ import annotations

import uuid

from flask import current_app, g, url_for
from flask.views import MethodView
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from scheduler_app import limits as L
from scheduler_app.api.blueprint import Blueprint
from scheduler_app.api.fields import StrictBoolean, Text, UtcDateTime
from scheduler_app.api.security import BEARER, require
from scheduler_app.api.task_schemas import TaskSchema
from scheduler_app.services.clients.principal import Role
from scheduler_app.services.pagination import CURSOR_PATTERN

blp = Blueprint("dlq", __name__, url_prefix="/api/v1/dlq", description="Dead-letter queue")


class DeadLetterFilterSchema(Schema):
    task = Text(validate=validate.Length(min=1, max=L.TASK_NAME_MAX))
    queue = Text(validate=validate.Length(min=1, max=L.QUEUE_NAME_MAX))
    error_type = Text(validate=validate.Length(min=1, max=L.ERROR_TYPE_MAX))
    since = UtcDateTime()
    before = UtcDateTime()
    replayed = StrictBoolean()


class DeadLetterQuerySchema(DeadLetterFilterSchema):
    replayed = fields.Boolean()  # a query string says "true" or "false"
    limit = fields.Integer(load_default=50, validate=validate.Range(1, L.PAGE_MAX))
    cursor = fields.String(
        validate=validate.Regexp(CURSOR_PATTERN),
        metadata={"description": "next_cursor of the previous page"},
    )


class DeadLetterSchema(Schema):
    id = fields.UUID()
    task_id = fields.UUID()
    task = fields.String()
    args = fields.Raw()
    kwargs = fields.Raw()
    queue = fields.String()
    error_type = fields.String(allow_none=True)
    error_message = fields.String(allow_none=True)
    traceback = fields.String(allow_none=True)
    attempts = fields.Integer()
    failed_at = fields.DateTime()
    worker = fields.String(allow_none=True)
    replayed_task_id = fields.UUID(allow_none=True)


class DeadLetterListSchema(Schema):
    items = fields.List(fields.Nested(DeadLetterSchema))
    next_cursor = fields.String(allow_none=True)


class BulkReplaySchema(Schema):
    ids = fields.List(fields.UUID(), validate=validate.Length(min=1, max=10_000))
    filter = fields.Nested(DeadLetterFilterSchema)
    dry_run = StrictBoolean(load_default=False)

    class Meta:
        # What _a_selector enforces, for the OpenAPI document.
        openapi = {"anyOf": [{"required": ["ids"]}, {"required": ["filter"]}]}

    @validates_schema
    def _a_selector(self, data, **_):
        if "ids" not in data and "filter" not in data:
            raise ValidationError("give ids, a filter, or both (the ids the filter matches)", "ids")


class ReplayResultSchema(Schema):
    count = fields.Integer()
    task_ids = fields.List(fields.UUID())
    dry_run = fields.Boolean()


class PurgeSchema(Schema):
    filter = fields.Nested(
        DeadLetterFilterSchema,
        required=True,
        metadata={"description": "{} purges every dead letter"},
    )


class CountSchema(Schema):
    count = fields.Integer()


def _service():
    return current_app.extensions["scheduler"].dead_letters


@blp.route("")
class DeadLetters(MethodView):
    @require(Role.OPERATOR)
    @blp.doc(security=BEARER)
    @blp.arguments(DeadLetterQuerySchema, location="query")
    @blp.response(200, DeadLetterListSchema)
    def get(self, query):
        """List dead letters, newest failure first"""
        limit = query.pop("limit")
        items, next_cursor = _service().list(query, limit, query.pop("cursor", None))
        return {"items": items, "next_cursor": next_cursor}


@blp.route("/<uuid:dead_letter_id>")
class DeadLetterById(MethodView):
    @require(Role.OPERATOR)
    @blp.doc(security=BEARER)
    @blp.response(200, DeadLetterSchema)
    def get(self, dead_letter_id: uuid.UUID):
        """Get a dead letter with its traceback"""
        return _service().get(dead_letter_id)

    @require(Role.OPERATOR)
    @blp.doc(security=BEARER)
    @blp.response(204)
    def delete(self, dead_letter_id: uuid.UUID):
        """Delete a dead letter"""
        _service().delete(dead_letter_id)


@blp.route("/<uuid:dead_letter_id>/replay")
class DeadLetterReplay(MethodView):
    @require(Role.OPERATOR)
    @blp.doc(security=BEARER)
    @blp.response(202, TaskSchema)
    @blp.alt_response(409, description="Already replayed")
    def post(self, dead_letter_id: uuid.UUID):
        """Run the failed task again as a new task linked by replay_of"""
        task = _service().replay_one(dead_letter_id, request_id=g.request_id)
        return task, 202, {"Location": url_for("tasks.TaskById", task_id=task.id)}


@blp.route("/replay")
class DeadLetterBulkReplay(MethodView):
    @require(Role.OPERATOR)
    @blp.doc(security=BEARER)
    @blp.arguments(BulkReplaySchema)
    @blp.response(200, ReplayResultSchema)
    def post(self, body):
        """Replay dead letters chosen by ids or filter (dry_run only counts them)"""
        result = _service().replay_many(
            body.get("ids"), body.get("filter"), body["dry_run"], request_id=g.request_id
        )
        return {"count": result.count, "task_ids": result.task_ids, "dry_run": body["dry_run"]}


@blp.route("/purge")
class DeadLetterPurge(MethodView):
    @require(Role.OPERATOR)
    @blp.doc(security=BEARER)
    @blp.arguments(PurgeSchema)
    @blp.response(200, CountSchema)
    def post(self, body):
        """Delete every dead letter matching the filter"""
        return {"count": _service().purge(body["filter"])}
