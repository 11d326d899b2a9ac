"""/api/v1/schedules: recurring firings of a task on cron or interval, owner-scoped."""

from __future__ import annotations

import uuid
from typing import Any

from flask import current_app, url_for
from flask.views import MethodView
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from scheduler_app import limits as L
from scheduler_app.api.blueprint import Blueprint
from scheduler_app.api.fields import (
    JsonList,
    JsonObject,
    StrictBoolean,
    Text,
    UtcDateTime,
    WholeNumber,
)
from scheduler_app.api.openapi import JSON_VALUE_REF, NO_NUL
from scheduler_app.api.security import BEARER, principal, problem_response, require
from scheduler_app.api.task_schemas import NAME, RetrySchema
from scheduler_app.models.schedule import CATCHUPS, OVERLAPS, RUN_KINDS, RUN_STATUSES
from scheduler_app.services.pagination import CURSOR_PATTERN
from scheduler_app.services.schedules.slots import CRON_MAX, CRON_PATTERN, zone_names
from scheduler_app.states import TaskStatus

blp = Blueprint(
    "schedules",
    __name__,
    url_prefix="/api/v1/schedules",
    description="Recurring schedules: cron or interval firings of a task",
)
INTERVAL_MAX = 366 * 86400.0
JITTER_MAX = 86400.0
SCHEDULE_NAME = validate.Length(min=1, max=200)
# cron xor interval, as the document states it (a PATCH may give neither).
ONE_TIMING = {"not": {"required": ["cron", "interval"]}}


def _service():
    return current_app.extensions["scheduler"].schedules


class _ScheduleFields(Schema):
    """Fields a schedule is made of; creation and change differ in what is required."""

    name = Text(validate=SCHEDULE_NAME)
    task = Text(validate=NAME, metadata={"example": "demo.echo"})
    args = JsonList()
    kwargs = JsonObject()
    # Checked by the service against CRON_PATTERN (its message says more than the pattern).
    cron = fields.String(
        metadata={
            "pattern": CRON_PATTERN,
            "maxLength": CRON_MAX,
            "description": "5 fields (minute hour day month weekday) or @hourly, @daily, …; "
            "evaluated in `timezone`",
            "example": "30 2 * * *",
        }
    )
    interval = fields.Float(
        validate=validate.Range(1, INTERVAL_MAX),
        allow_nan=False,
        metadata={"description": "seconds between slots (at least 1)"},
    )
    timezone = fields.String(metadata={"description": "IANA time zone of the cron expression"})
    queue = Text(validate=validate.Length(min=1, max=L.QUEUE_NAME_MAX))
    priority = WholeNumber(validate=validate.Range(L.PRIORITY_MIN, L.PRIORITY_MAX))
    enabled = StrictBoolean()
    overlap = fields.String(
        validate=validate.OneOf(OVERLAPS),
        metadata={"description": "when the previous task has not finished (default skip)"},
    )
    catchup = fields.String(
        validate=validate.OneOf(CATCHUPS),
        metadata={"description": "missed slots after downtime, within catchup_window"},
    )
    jitter = fields.Float(
        validate=validate.Range(0, JITTER_MAX),
        allow_nan=False,
        metadata={"description": "each firing is delayed by up to this many seconds"},
    )
    start_at = UtcDateTime()
    end_at = UtcDateTime(
        metadata={"description": "no slot after it; before start_at (given or stored): 422"}
    )
    retry = fields.Nested(RetrySchema)
    timeout = fields.Float(
        validate=validate.Range(0, L.TIMEOUT_MAX, min_inclusive=False),
        allow_nan=False,
        metadata={"exclusiveMinimum": 0, "description": "seconds"},
    )
    retention = fields.Float(
        validate=validate.Range(L.RETENTION_MIN, L.RETENTION_MAX),
        allow_nan=False,
        metadata={"description": "seconds each of its tasks is kept once finished"},
    )
    tags = fields.List(
        Text(validate=validate.Length(min=1, max=L.TAG_MAX)),
        validate=validate.Length(max=L.TAGS_MAX),
    )

    @validates_schema
    def _one_timing(self, data, **_):
        if data.get("cron") is not None and data.get("interval") is not None:
            raise ValidationError("give cron or interval, not both", "cron")


class ScheduleCreateSchema(_ScheduleFields):
    name = Text(required=True, validate=SCHEDULE_NAME)
    task = Text(required=True, validate=NAME, metadata={"example": "demo.echo"})

    class Meta:
        openapi = {**ONE_TIMING, "anyOf": [{"required": ["cron"]}, {"required": ["interval"]}]}

    @validates_schema
    def _has_timing(self, data, **_):
        if data.get("cron") is None and data.get("interval") is None:
            raise ValidationError("give cron or interval", "cron")


class ScheduleUpdateSchema(_ScheduleFields):
    # null clears them: its tasks then take their task type's timeout, and the retention
    # of their state, queue or type.
    timeout = fields.Float(
        allow_none=True,
        validate=validate.Range(0, L.TIMEOUT_MAX, min_inclusive=False),
        allow_nan=False,
        metadata={"exclusiveMinimum": 0, "description": "seconds; null: the type's"},
    )
    retention = fields.Float(
        allow_none=True,
        validate=validate.Range(L.RETENTION_MIN, L.RETENTION_MAX),
        allow_nan=False,
        metadata={"description": "seconds each of its tasks is kept once finished; null: clear"},
    )

    class Meta:
        openapi = ONE_TIMING


class ScheduleSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    task = fields.String()
    args = fields.Raw()
    kwargs = fields.Raw()
    cron = fields.String(allow_none=True)
    interval = fields.Float(allow_none=True)
    timezone = fields.String()
    queue = fields.String(allow_none=True)
    priority = fields.Integer(allow_none=True)
    enabled = fields.Boolean()
    overlap = fields.String(metadata={"enum": list(OVERLAPS)})
    catchup = fields.String(metadata={"enum": list(CATCHUPS)})
    jitter = fields.Float(allow_none=True)
    start_at = fields.DateTime(allow_none=True)
    end_at = fields.DateTime(allow_none=True)
    retry = fields.Raw(allow_none=True)
    timeout = fields.Float(allow_none=True)
    retention = fields.Float(allow_none=True)
    tags = fields.List(fields.String())
    next_run_at = fields.DateTime(allow_none=True, metadata={"description": "the next slot"})
    last_run_at = fields.DateTime(allow_none=True, metadata={"description": "the last fired slot"})
    last_task_id = fields.UUID(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    owner = fields.UUID(attribute="owner_id")


class ScheduleListSchema(Schema):
    items = fields.List(fields.Nested(ScheduleSchema))
    next_cursor = fields.String(allow_none=True)


class ScheduleQuerySchema(Schema):
    enabled = fields.Boolean(truthy={"true"}, falsy={"false"})
    task = Text(validate=NAME)
    limit = fields.Integer(load_default=50, validate=validate.Range(1, L.PAGE_MAX))
    cursor = fields.String(
        validate=validate.Regexp(CURSOR_PATTERN),
        metadata={"description": "next_cursor of the previous page"},
    )


class ScheduleRunSchema(Schema):
    slot = fields.DateTime(metadata={"description": "the time the firing was for (its run_at)"})
    status = fields.String(metadata={"enum": list(RUN_STATUSES)})
    kind = fields.String(metadata={"enum": list(RUN_KINDS)})
    task_id = fields.UUID(allow_none=True)
    task_status = fields.String(
        allow_none=True, metadata={"enum": [*(s.value for s in TaskStatus), None]}
    )
    detail = fields.String(allow_none=True)
    created_at = fields.DateTime()


class ScheduleRunListSchema(Schema):
    items = fields.List(fields.Nested(ScheduleRunSchema))


class RunQuerySchema(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(1, L.PAGE_MAX))


def document(spec: Any, settings: Any, types: Any) -> None:
    """Constrain the schedule bodies to this deployment: queues, task types, time zones."""
    components = spec.components.schemas
    for name in ("ScheduleCreate", "ScheduleUpdate"):
        properties = components[name]["properties"]
        properties["queue"] = {**properties["queue"], "enum": list(settings.queues)}
        properties["task"] = {**properties["task"], "enum": sorted(types)}
        properties["timeout"] = {**properties["timeout"], "maximum": settings.max_task_timeout}
        properties["timezone"] = {**properties["timezone"], "enum": sorted(zone_names())}
    # A change's args and kwargs: JSON values PostgreSQL can store (the stored task type's
    # signature joins them with stored values: a 409, see the service).
    update = components["ScheduleUpdate"]["properties"]
    update["args"] = {"type": "array", "items": JSON_VALUE_REF}
    update["kwargs"] = {
        "type": "object",
        "additionalProperties": JSON_VALUE_REF,
        "propertyNames": NO_NUL,
    }


def _errors(view):
    view = problem_response(blp, 401, "No valid access token")(view)
    return problem_response(blp, 503, "The database is not answering")(view)


def _one(view):
    return problem_response(blp, 404, "No such schedule (or not yours)")(_errors(view))


@blp.route("")
class Schedules(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.arguments(ScheduleCreateSchema())
    @blp.response(201, ScheduleSchema, description="Created; next_run_at is its first slot")
    @problem_response(blp, 422, "Invalid field")
    @_errors
    def post(self, body):
        """Create a schedule"""
        schedule = _service().create(principal(), body)
        location = url_for("schedules.ScheduleById", schedule_id=schedule.id)
        return schedule, 201, {"Location": location}

    @require()
    @blp.doc(security=BEARER)
    @blp.arguments(ScheduleQuerySchema, location="query")
    @blp.response(200, ScheduleListSchema)
    @_errors
    def get(self, query):
        """List schedules, newest first, with cursor pagination"""
        limit = query.pop("limit")
        cursor = query.pop("cursor", None)
        items, next_cursor = _service().list(principal(), query, limit, cursor)
        return {"items": items, "next_cursor": next_cursor}


@blp.route("/<uuid:schedule_id>")
class ScheduleById(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.response(200, ScheduleSchema)
    @_one
    def get(self, schedule_id: uuid.UUID):
        """Get a schedule"""
        return _service().get(principal(), schedule_id)

    @require()
    @blp.doc(security=BEARER)
    @blp.arguments(ScheduleUpdateSchema(), required=False)  # no body: nothing to change
    @blp.response(200, ScheduleSchema, description="Changed; next_run_at recomputed")
    @problem_response(blp, 409, "The change does not fit the stored schedule (errors name it)")
    @problem_response(blp, 422, "Invalid field")
    @_one
    def patch(self, body, schedule_id: uuid.UUID):
        """Change a schedule (cron replaces interval and the other way round); applies at once"""
        return _service().update(principal(), schedule_id, body or {})

    @require()
    @blp.doc(security=BEARER)
    @blp.response(204)
    @_one
    def delete(self, schedule_id: uuid.UUID):
        """Delete a schedule: it fires no more; the tasks it created are kept"""
        _service().delete(principal(), schedule_id)


@blp.route("/<uuid:schedule_id>/pause")
class SchedulePause(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.response(200, ScheduleSchema)
    @_one
    def post(self, schedule_id: uuid.UUID):
        """Pause a schedule: no slot fires until it is resumed"""
        return _service().set_enabled(principal(), schedule_id, False)


@blp.route("/<uuid:schedule_id>/resume")
class ScheduleResume(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.response(200, ScheduleSchema)
    @_one
    def post(self, schedule_id: uuid.UUID):
        """Resume a schedule from its next slot after now (the pause is not caught up)"""
        return _service().set_enabled(principal(), schedule_id, True)


@blp.route("/<uuid:schedule_id>/trigger")
class ScheduleTrigger(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.response(202, ScheduleRunSchema, description="Fired: the task is committed")
    @problem_response(blp, 422, "The schedule's task type or queue is no longer known")
    @_one
    def post(self, schedule_id: uuid.UUID):
        """Fire once now, paused or not (a manual firing; overlap does not apply)"""
        run = _service().trigger(principal(), schedule_id)
        return run, 202, {"Location": url_for("tasks.TaskById", task_id=run.task_id)}


@blp.route("/<uuid:schedule_id>/runs")
class ScheduleRuns(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.arguments(RunQuerySchema, location="query")
    @blp.response(200, ScheduleRunListSchema)
    @_one
    def get(self, query, schedule_id: uuid.UUID):
        """The schedule's recent slots, newest first: fired (with the task), skipped, buffered"""
        return {"items": _service().runs(principal(), schedule_id, query["limit"])}
