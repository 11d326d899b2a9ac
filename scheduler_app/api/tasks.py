"""/api/v1/tasks: submit, batch, read, list, timeline, cancel."""

from __future__ import annotations

import uuid

from flask import current_app, g, request, url_for
from flask.views import MethodView

from scheduler_app import limits as L
from scheduler_app.api.blueprint import Blueprint
from scheduler_app.api.operation_schemas import ExplainSchema
from scheduler_app.api.security import BEARER, principal, require
from scheduler_app.api.task_schemas import (
    EventSchema,
    TaskBatchResultSchema,
    TaskBatchSchema,
    TaskCreateSchema,
    TaskListSchema,
    TaskQuerySchema,
    TaskSchema,
)
from scheduler_app.errors import ValidationFailed
from scheduler_app.services.tasks.submission import request_hash

blp = Blueprint(
    "tasks", __name__, url_prefix="/api/v1/tasks", description="Submit and follow tasks"
)


def _service():
    return current_app.extensions["scheduler"].tasks


def _header_key(longest: int = L.IDEMPOTENCY_KEY_MAX) -> str | None:
    """The Idempotency-Key header, validated; None when absent."""
    header = request.headers.get("Idempotency-Key")
    if header is None:
        return None
    header = header.strip()
    if not header or len(header) > longest or any(ord(c) < 32 for c in header):
        raise ValidationFailed(
            errors={"Idempotency-Key": [f"must be 1 to {longest} printable characters"]}
        )
    return header


def _idempotency_key(body: dict) -> dict:
    header = _header_key()
    if header is None:
        return body
    if body.get("idempotency_key") not in (None, header):
        raise ValidationFailed(
            errors={"idempotency_key": ["differs from the Idempotency-Key header"]}
        )
    return {**body, "idempotency_key": header}


@blp.route("")
class Tasks(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.arguments(TaskCreateSchema())  # an instance: webargs would build one per request
    @blp.response(202, TaskSchema, description="Accepted: the task is committed to the ledger")
    @blp.alt_response(200, schema=TaskSchema, description="Idempotent replay of an earlier submit")
    @blp.alt_response(409, description="Idempotency key reused with another body")
    @blp.alt_response(422, description="Invalid field")
    def post(self, body):
        """Submit a task"""
        [accepted] = _service().submit(
            principal(), [_idempotency_key(body)], request_id=g.request_id
        )
        headers = {"Location": url_for("tasks.TaskById", task_id=accepted.task.id)}
        if accepted.replayed:
            headers["Idempotent-Replayed"] = "true"
            return accepted.task, 200, headers
        return accepted.task, 202, headers

    @require()
    @blp.doc(security=BEARER)
    @blp.arguments(TaskQuerySchema, location="query")
    @blp.response(200, TaskListSchema)
    def get(self, query):
        """List tasks, newest first, with cursor pagination"""
        limit = query.pop("limit")
        cursor = query.pop("cursor", None)
        items, next_cursor = _service().list(principal(), query, limit, cursor)
        return {"items": items, "next_cursor": next_cursor}


@blp.route("/batch")
class TaskBatch(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.arguments(TaskBatchSchema())
    @blp.response(202, TaskBatchResultSchema, description="All accepted (or none: see 422)")
    @blp.alt_response(
        200, schema=TaskBatchResultSchema, description="Idempotent replay of an earlier batch"
    )
    @blp.alt_response(409, description="Idempotency key reused with another batch")
    @blp.alt_response(422, description="Invalid field")
    def post(self, body):
        """Submit up to 1000 tasks in one transaction

        With an Idempotency-Key header the batch as a whole is idempotent: the same batch again
        answers 200 with the tasks of the first, another batch under the key 409.
        """
        bodies, extra = _batch_keys(body["tasks"])
        accepted = _service().submit(
            principal(), bodies, request_id=g.request_id, batch=True, extra=extra
        )
        items = {"items": [a.task for a in accepted]}
        if accepted and all(a.replayed for a in accepted):
            return items, 200, {"Idempotent-Replayed": "true"}
        return items, 202


def _batch_keys(bodies: list[dict]) -> tuple[list[dict], dict | None]:
    """A batch under an Idempotency-Key: task N gets the key ``<key>#N`` and every task carries
    the digest of the whole batch, so that replaying the same batch finds all of them and any
    other batch under the key conflicts on its first task (all or nothing)."""
    key = _header_key(L.IDEMPOTENCY_KEY_MAX - len(f"#{L.BATCH_MAX}"))
    if key is None:
        return bodies, None
    if any(b.get("idempotency_key") for b in bodies):
        raise ValidationFailed(
            errors={
                "Idempotency-Key": ["give the header or per-task idempotency_key values, not both"]
            }
        )
    keyed = [{**b, "idempotency_key": f"{key}#{n}"} for n, b in enumerate(bodies)]
    return keyed, {"batch_digest": request_hash({"tasks": bodies})}


@blp.route("/<uuid:task_id>")
class TaskById(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.response(200, TaskSchema)
    def get(self, task_id: uuid.UUID):
        """Get a task (404 when unknown or not yours)"""
        return _service().get(principal(), task_id)


@blp.route("/<uuid:task_id>/events")
class TaskEvents(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.response(200, EventSchema(many=True))
    def get(self, task_id: uuid.UUID):
        """The task's timeline, oldest first"""
        return _service().events(principal(), task_id)


@blp.route("/<uuid:task_id>/cancel")
class TaskCancel(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.response(200, TaskSchema)
    @blp.alt_response(409, description="The task is already terminal")
    def post(self, task_id: uuid.UUID):
        """Cancel a task: waiting ones never run, a running one is terminated"""
        return _service().cancel(principal(), task_id)


@blp.route("/<uuid:task_id>/explain")
class TaskExplain(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.response(200, ExplainSchema)
    def get(self, task_id: uuid.UUID):
        """Why the task is not running (or not finished) right now, with evidence"""
        return current_app.extensions["scheduler"].explainer.explain(principal(), task_id)
