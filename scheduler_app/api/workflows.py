"""/api/v1/workflows: submit a DAG of tasks, follow it, cancel, retry, draw it."""

from __future__ import annotations

import uuid

from flask import Response, current_app, g, url_for
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from scheduler_app import limits as L
from scheduler_app.api.blueprint import Blueprint
from scheduler_app.api.fields import Text, UtcDateTime
from scheduler_app.api.security import BEARER, principal, require
from scheduler_app.api.task_schemas import NotifySchema, TaskCreateSchema
from scheduler_app.models.workflow import TRIGGER_RULES, WORKFLOW_STATUSES
from scheduler_app.services.pagination import CURSOR_PATTERN
from scheduler_app.states import TaskStatus

blp = Blueprint(
    "workflows",
    __name__,
    url_prefix="/api/v1/workflows",
    description="Workflows: DAGs of tasks, each node released when its parents allow",
)

NODE_ID = validate.Length(min=1, max=L.NODE_ID_MAX)


def _service():
    return current_app.extensions["scheduler"].workflows


class WorkflowNodeSchema(TaskCreateSchema):
    """A node: a task (the per-task options of POST /tasks, without timing or keys) and its
    place in the graph."""

    id = Text(required=True, validate=NODE_ID, metadata={"example": "extract"})
    depends_on = fields.List(
        Text(validate=NODE_ID),
        load_default=list,
        validate=validate.Length(max=L.WORKFLOW_NODES_MAX),
        metadata={"description": "ids of the nodes it waits for"},
    )
    trigger_rule = fields.String(load_default="all_success", validate=validate.OneOf(TRIGGER_RULES))

    class Meta:
        # A node starts when its parents allow: no delay, run_at or idempotency key of its own;
        # notifications are the workflow's (its notify), not each node's.
        exclude = ("delay", "run_at", "idempotency_key", "notify")
        openapi: dict = {}

    def load(self, data, *, many=None, partial=None, unknown=None):
        # Not the task body's fast path: it knows no node fields.
        return super(TaskCreateSchema, self).load(data, many=many, partial=partial, unknown=unknown)


class WorkflowCreateSchema(Schema):
    name = Text(required=True, validate=validate.Length(min=1, max=L.WORKFLOW_NAME_MAX))
    nodes = fields.List(
        fields.Nested(WorkflowNodeSchema),
        required=True,
        validate=validate.Length(min=1, max=L.WORKFLOW_NODES_MAX),
    )
    tags = fields.List(
        Text(validate=validate.Length(min=1, max=L.TAG_MAX)),
        validate=validate.Length(max=L.TAGS_MAX),
        load_default=list,
    )
    notify = fields.Nested(
        NotifySchema,
        metadata={
            "description": "announce the workflow's end (workflow.succeeded|failed|cancelled)"
        },
    )
    retention = fields.Float(
        validate=validate.Range(L.RETENTION_MIN, L.RETENTION_MAX),
        allow_nan=False,
        metadata={
            "description": "seconds the workflow and its nodes are kept once it finished "
            "(default: its final state's); a node's own retention can only lengthen it"
        },
    )


class WorkflowNodeStateSchema(Schema):
    task_id = fields.UUID()
    status = fields.String(metadata={"enum": [s.value for s in TaskStatus]})


class WorkflowSummarySchema(Schema):
    id = fields.UUID()
    name = fields.String()
    status = fields.String(metadata={"enum": list(WORKFLOW_STATUSES)})
    created_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)
    tags = fields.List(fields.String())
    owner = fields.UUID(attribute="owner_id")


class WorkflowSchema(WorkflowSummarySchema):
    nodes = fields.Dict(keys=fields.String(), values=fields.Nested(WorkflowNodeStateSchema))


class WorkflowListSchema(Schema):
    items = fields.List(fields.Nested(WorkflowSummarySchema))
    next_cursor = fields.String(allow_none=True)


class WorkflowQuerySchema(Schema):
    status = fields.List(
        fields.String(validate=validate.OneOf(WORKFLOW_STATUSES)),
        metadata={"description": "one or more statuses"},
    )
    tag = Text(validate=validate.Length(min=1, max=L.TAG_MAX))
    created_after = UtcDateTime(metadata={"description": "created strictly after this instant"})
    created_before = UtcDateTime(metadata={"description": "created strictly before this instant"})
    limit = fields.Integer(load_default=50, validate=validate.Range(1, L.PAGE_MAX))
    cursor = fields.String(
        validate=validate.Regexp(CURSOR_PATTERN),
        metadata={"description": "next_cursor of the previous page"},
    )


@blp.route("")
class Workflows(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.arguments(WorkflowCreateSchema())
    @blp.response(202, WorkflowSchema, description="Accepted: every node task is committed")
    @blp.alt_response(422, description="Invalid field, a cycle, an unknown or duplicate node")
    def post(self, body):
        """Submit a workflow (a DAG of tasks)"""
        workflow = _service().submit(principal(), body, request_id=g.request_id)
        headers = {"Location": url_for("workflows.WorkflowById", workflow_id=workflow["id"])}
        return workflow, 202, headers

    @require()
    @blp.doc(security=BEARER)
    @blp.arguments(WorkflowQuerySchema, location="query")
    @blp.response(200, WorkflowListSchema)
    def get(self, query):
        """List workflows, newest first, with cursor pagination"""
        limit = query.pop("limit")
        cursor = query.pop("cursor", None)
        items, next_cursor = _service().list(principal(), query, limit, cursor)
        return {"items": items, "next_cursor": next_cursor}


@blp.route("/<uuid:workflow_id>")
class WorkflowById(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.response(200, WorkflowSchema)
    def get(self, workflow_id: uuid.UUID):
        """Get a workflow and its nodes (404 when unknown or not yours)"""
        return _service().get(principal(), workflow_id)


@blp.route("/<uuid:workflow_id>/cancel")
class WorkflowCancel(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.response(200, WorkflowSchema)
    @blp.alt_response(409, description="The workflow has finished")
    def post(self, workflow_id: uuid.UUID):
        """Cancel a workflow: waiting nodes never run, running ones are terminated"""
        return _service().cancel(principal(), workflow_id)


@blp.route("/<uuid:workflow_id>/retry")
class WorkflowRetry(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.response(200, WorkflowSchema)
    @blp.alt_response(409, description="The workflow is running, or nothing failed")
    def post(self, workflow_id: uuid.UUID):
        """Run again what failed (new tasks), keep what succeeded"""
        return _service().retry(principal(), workflow_id)


@blp.route("/<uuid:workflow_id>/graph")
class WorkflowGraph(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.response(
        200,
        {"type": "string"},
        content_type="text/plain",
        description="A Mermaid flowchart, nodes coloured by status",
    )
    def get(self, workflow_id: uuid.UUID):
        """The workflow as a Mermaid flowchart"""
        return Response(_service().graph(principal(), workflow_id), mimetype="text/plain")
