"""Schemas of the operators' endpoints: workers, queues, and a task's explanation."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from scheduler_app import limits as L
from scheduler_app.api.fields import WholeNumber


class WorkerSchema(Schema):
    name = fields.String()
    status = fields.String(metadata={"enum": ["online", "paused", "offline"]})
    queues = fields.List(fields.String())
    concurrency = fields.Integer(metadata={"description": "pool size, as of the last heartbeat"})
    concurrency_setting = fields.Integer(
        allow_none=True, metadata={"description": "the stored pool size (scale), if any"}
    )
    active = fields.Integer(metadata={"description": "tasks running, as of the last heartbeat"})
    processed = fields.Integer()
    started_at = fields.DateTime()
    last_heartbeat = fields.DateTime()
    paused_by = fields.String(allow_none=True)
    paused_at = fields.DateTime(allow_none=True)


class WorkerListSchema(Schema):
    items = fields.List(fields.Nested(WorkerSchema))


class ScaleSchema(Schema):
    concurrency = WholeNumber(required=True, validate=validate.Range(1, L.WORKER_CONCURRENCY_MAX))


class QueueSchema(Schema):
    name = fields.String()
    depth = fields.Integer(metadata={"description": "queued tasks (due, waiting for a worker)"})
    scheduled = fields.Integer(metadata={"description": "scheduled and retrying tasks (not due)"})
    running = fields.Integer()
    paused = fields.Boolean()
    paused_by = fields.String(allow_none=True)
    paused_at = fields.DateTime(allow_none=True)
    oldest_age_seconds = fields.Float(
        allow_none=True, metadata={"description": "seconds the oldest queued task has been due"}
    )
    workers = fields.Integer(metadata={"description": "online workers that consume the queue"})
    unpaused_workers = fields.Integer(metadata={"description": "of those, not paused"})


class QueueListSchema(Schema):
    items = fields.List(fields.Nested(QueueSchema))


class ParentSchema(Schema):
    node_id = fields.String()
    task_id = fields.UUID(allow_none=True)
    status = fields.String(allow_none=True)


class ReasonSchema(Schema):
    code = fields.String(
        metadata={
            "enum": [
                "finished",
                "running",
                "waiting_for_parents",
                "scheduled",
                "retry_backoff",
                "queue_paused",
                "workers_paused",
                "no_worker",
                "queued",
            ]
        }
    )
    message = fields.String()
    # evidence, as the code has it
    status = fields.String()
    finished_at = fields.DateTime(allow_none=True)
    error_type = fields.String(allow_none=True)
    worker = fields.String(allow_none=True)
    since = fields.DateTime(allow_none=True)
    attempt = fields.Integer()
    until = fields.DateTime()
    queue = fields.String()
    paused_by = fields.String(allow_none=True)
    workers = fields.List(fields.String())
    parents = fields.List(fields.Nested(ParentSchema))
    depth = fields.Integer()


class ExplainSchema(Schema):
    status = fields.String()
    reasons = fields.List(fields.Nested(ReasonSchema))
