"""/api/v1/queues: depth, age and consumers of each configured queue; stored pauses (operators)."""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView

from scheduler_app import limits as L
from scheduler_app.api.blueprint import Blueprint
from scheduler_app.api.operation_schemas import QueueListSchema, QueueSchema
from scheduler_app.api.security import BEARER, principal, problem_response, require
from scheduler_app.services.clients.principal import Role

blp = Blueprint(
    "queues", __name__, url_prefix="/api/v1/queues", description="Queues: pause, resume"
)
NAME = f"<string(maxlength={L.QUEUE_NAME_MAX}):name>"


def _ext():
    return current_app.extensions["scheduler"]


def _one(view):
    view = problem_response(blp, 403, "Needs the operator role")(view)
    return problem_response(blp, 404, "No such queue in the configuration")(view)


@blp.route("")
class Queues(MethodView):
    @require(Role.OPERATOR)
    @blp.doc(security=BEARER)
    @blp.response(200, QueueListSchema)
    @problem_response(blp, 403, "Needs the operator role")
    def get(self):
        """Every configured queue: depth, scheduled, running, paused, oldest age, workers"""
        return {"items": _ext().operations.queues()}


@blp.route(f"/{NAME}/pause")
class QueuePause(MethodView):
    @require(Role.OPERATOR)
    @blp.doc(security=BEARER)
    @blp.response(200, QueueSchema)
    @_one
    def post(self, name: str):
        """Pause a queue cluster-wide: no worker takes its tasks (stored; submissions are
        still accepted)"""
        _ext().controls.pause_queue(name, str(principal().id))
        [queue] = _ext().operations.queues(name)
        return queue


@blp.route(f"/{NAME}/resume")
class QueueResume(MethodView):
    @require(Role.OPERATOR)
    @blp.doc(security=BEARER)
    @blp.response(200, QueueSchema)
    @_one
    def post(self, name: str):
        """Resume a queue: the tasks it held are published again"""
        _ext().controls.resume_queue(name)
        [queue] = _ext().operations.queues(name)
        return queue
