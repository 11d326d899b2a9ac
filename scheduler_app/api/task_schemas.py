"""Schemas of the tasks resource: the single source of validation and of the OpenAPI spec."""

from __future__ import annotations

import re

from flask import current_app, has_app_context
from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema
from webargs.fields import DelimitedList

from scheduler_app import limits as L
from scheduler_app.api.fastpath import load_task_body, present_task
from scheduler_app.api.fields import (
    JsonList,
    JsonObject,
    StrictBoolean,
    Text,
    UtcDateTime,
    WholeNumber,
    email_address,
)
from scheduler_app.services.outbound.policy import OutboundRefusedError, policy_for
from scheduler_app.services.pagination import CURSOR_PATTERN
from scheduler_app.states import TaskStatus

NAME = validate.Length(min=1, max=L.TASK_NAME_MAX)
HTTP_URL = re.compile(L.HTTP_URL_PATTERN)
NOTIFY_EVENTS = ["succeeded", "failed", "cancelled"]


class RetrySchema(Schema):
    max_retries = WholeNumber(validate=validate.Range(0, L.MAX_RETRIES_MAX))
    backoff = fields.Float(validate=validate.Range(0, L.BACKOFF_MAX), allow_nan=False)
    backoff_max = fields.Float(validate=validate.Range(0, L.BACKOFF_CAP_MAX), allow_nan=False)
    jitter = StrictBoolean()
    # A backoff_max below backoff is raised to backoff (services/tasks/submission.py).
    strategy = fields.String(
        validate=validate.OneOf(L.RETRY_STRATEGIES),
        metadata={
            "description": "delay after failed attempt n: exponential (default) backoff*2^(n-1), "
            "linear backoff*n, both capped at backoff_max; fixed backoff"
        },
    )
    max_retry_duration = fields.Float(
        validate=validate.Range(0, L.RETRY_DURATION_MAX, min_inclusive=False),
        allow_nan=False,
        allow_none=True,
        metadata={
            "exclusiveMinimum": 0,
            "description": "seconds since the first attempt started after which a failure is "
            "not retried (null: no limit)",
        },
    )


class NotifySchema(Schema):
    # The pattern is checked after the outbound policy (whose refusal says more): _webhook_allowed.
    webhook = fields.String(
        validate=validate.Length(max=L.URL_MAX), metadata={"pattern": L.HTTP_URL_PATTERN}
    )
    email = email_address()
    on = fields.List(
        fields.String(validate=validate.OneOf(NOTIFY_EVENTS)),
        load_default=lambda: list(NOTIFY_EVENTS),
    )

    class Meta:
        openapi = {"anyOf": [{"required": ["webhook"]}, {"required": ["email"]}]}

    @validates_schema
    def _has_target(self, data, **_):
        if not data.get("webhook") and not data.get("email"):
            raise ValidationError("give a webhook URL or an email address", "webhook")

    @validates("webhook")
    def _webhook_allowed(self, value, **_):
        check_webhook_url(value)


def check_webhook_url(value: str) -> None:
    """Raise ValidationError unless a webhook URL passes the serving app's outbound policy
    (the strict one outside an app) and is an absolute http(s) URL."""
    settings = current_app.extensions["scheduler"].settings if has_app_context() else None
    try:
        policy_for(settings).check_url(value)
    except (OutboundRefusedError, ValueError) as exc:
        raise ValidationError(str(exc)) from None
    if not HTTP_URL.fullmatch(value):
        raise ValidationError(
            "must be an absolute http(s) URL of a host name or an IP address, without user info"
        )


class TaskCreateSchema(Schema):
    task = Text(required=True, validate=NAME, metadata={"example": "demo.echo"})
    args = JsonList(load_default=list)
    kwargs = JsonObject(load_default=dict)
    queue = Text(validate=validate.Length(min=1, max=L.QUEUE_NAME_MAX))
    priority = WholeNumber(
        load_default=L.PRIORITY_DEFAULT,
        validate=validate.Range(L.PRIORITY_MIN, L.PRIORITY_MAX),
        metadata={"description": "0..9, higher runs first"},
    )
    delay = fields.Float(
        validate=validate.Range(0, L.DELAY_MAX),
        allow_nan=False,
        metadata={"description": "seconds from now"},
    )
    run_at = UtcDateTime()
    retry = fields.Nested(RetrySchema)
    timeout = fields.Float(
        validate=validate.Range(0, L.TIMEOUT_MAX, min_inclusive=False),
        allow_nan=False,
        metadata={"exclusiveMinimum": 0, "description": "seconds"},
    )
    expires_at = UtcDateTime()
    idempotency_key = Text(validate=validate.Length(min=1, max=L.IDEMPOTENCY_KEY_MAX))
    notify = fields.Nested(NotifySchema)
    tags = fields.List(
        Text(validate=validate.Length(min=1, max=L.TAG_MAX)),
        validate=validate.Length(max=L.TAGS_MAX),
        load_default=list,
    )
    retention = fields.Float(
        validate=validate.Range(L.RETENTION_MIN, L.RETENTION_MAX),
        allow_nan=False,
        metadata={
            "description": "seconds it is kept once finished (default: its type's, its queue's "
            "or its final state's; a workflow node is kept at least as long as its workflow)"
        },
    )

    class Meta:
        openapi = {"not": {"required": ["delay", "run_at"]}}

    @validates_schema
    def _one_time(self, data, **_):
        if data.get("delay") is not None and data.get("run_at") is not None:
            raise ValidationError("give delay or run_at, not both", "delay")

    def load(self, data, *, many=None, partial=None, unknown=None):
        if not (many or self.many or partial or unknown):
            fast = load_task_body(data)
            if fast is not None:
                return fast
        return super().load(data, many=many, partial=partial, unknown=unknown)


class TaskBatchSchema(Schema):
    tasks = fields.List(
        fields.Nested(TaskCreateSchema),
        required=True,
        validate=validate.Length(min=1, max=L.BATCH_MAX),
    )

    def load(self, data, *, many=None, partial=None, unknown=None):
        if not (many or self.many or partial or unknown) and type(data) is dict and len(data) == 1:
            bodies = data.get("tasks")
            if type(bodies) is list and 0 < len(bodies) <= L.BATCH_MAX:
                fast = [load_task_body(body) for body in bodies]
                if None not in fast:
                    return {"tasks": fast}
        return super().load(data, many=many, partial=partial, unknown=unknown)


class ErrorSchema(Schema):
    type = fields.String()
    message = fields.String()


class TaskSchema(Schema):
    id = fields.UUID()
    task = fields.String()
    args = fields.Raw()
    kwargs = fields.Raw()
    queue = fields.String()
    priority = fields.Integer()
    status = fields.String(metadata={"enum": [s.value for s in TaskStatus]})
    attempts = fields.Integer()
    max_retries = fields.Integer()
    retry = fields.Method("_retry")
    timeout = fields.Float(allow_none=True)
    run_at = fields.DateTime()
    expires_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    result = fields.Raw(allow_none=True)
    error = fields.Method("_error", allow_none=True)
    owner = fields.UUID(attribute="owner_id")
    idempotency_key = fields.String(allow_none=True)
    notify = fields.Raw(allow_none=True)
    workflow_id = fields.UUID(allow_none=True)
    node_id = fields.String(allow_none=True)
    schedule_id = fields.UUID(allow_none=True)
    replay_of = fields.UUID(allow_none=True)
    tags = fields.List(fields.String())
    retention = fields.Float(allow_none=True)

    def dump(self, obj, *, many=None):
        many = self.many if many is None else many
        if self.only is not None or self.exclude:
            return super().dump(obj, many=many)
        return [present_task(task) for task in obj] if many else present_task(obj)

    def _error(self, task):
        if not task.error_type:
            return None
        return {"type": task.error_type, "message": task.error_message}

    def _retry(self, task):
        return {
            "max_retries": task.max_retries,
            "backoff": task.backoff,
            "backoff_max": task.backoff_max,
            "jitter": task.jitter,
            "strategy": task.retry_strategy,
            "max_retry_duration": task.max_retry_duration,
        }


class TaskListSchema(Schema):
    items = fields.List(fields.Nested(TaskSchema))
    next_cursor = fields.String(allow_none=True)


class TaskBatchResultSchema(Schema):
    items = fields.List(fields.Nested(TaskSchema))


class TaskQuerySchema(Schema):
    status = DelimitedList(fields.String(validate=validate.OneOf([s.value for s in TaskStatus])))
    task = Text(validate=NAME)
    queue = Text(validate=validate.Length(min=1, max=L.QUEUE_NAME_MAX))
    tag = Text(validate=validate.Length(min=1, max=L.TAG_MAX))
    workflow_id = fields.UUID()
    schedule_id = fields.UUID()
    created_after = UtcDateTime()
    created_before = UtcDateTime()
    limit = fields.Integer(load_default=50, validate=validate.Range(1, L.PAGE_MAX))
    cursor = fields.String(
        validate=validate.Regexp(CURSOR_PATTERN),
        metadata={"description": "next_cursor of the previous page"},
    )


class EventSchema(Schema):
    at = fields.DateTime()
    status = fields.String()
    attempt = fields.Integer()
    worker = fields.String(allow_none=True)
    detail = fields.String(allow_none=True)
