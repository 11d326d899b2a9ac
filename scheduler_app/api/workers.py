"""/api/v1/workers: the workers' heartbeats, and their stored pauses and pool sizes (operators)."""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView

from scheduler_app import limits as L
from scheduler_app.api.blueprint import Blueprint
from scheduler_app.api.operation_schemas import ScaleSchema, WorkerListSchema, WorkerSchema
from scheduler_app.api.security import BEARER, principal, problem_response, require
from scheduler_app.services.clients.principal import Role

blp = Blueprint(
    "workers", __name__, url_prefix="/api/v1/workers", description="Workers: pause, resume, scale"
)
NAME = f"<string(maxlength={L.WORKER_NAME_MAX}):name>"


def _ext():
    return current_app.extensions["scheduler"]


def _one(view):
    view = problem_response(blp, 403, "Needs the operator role")(view)
    return problem_response(blp, 404, "No worker of that name has ever started")(view)


@blp.route("")
class Workers(MethodView):
    @require(Role.OPERATOR)
    @blp.doc(security=BEARER)
    @blp.response(200, WorkerListSchema)
    @problem_response(blp, 403, "Needs the operator role")
    def get(self):
        """Every worker name's newest instance: online, paused or offline"""
        return {"items": _ext().operations.workers()}


@blp.route(f"/{NAME}/pause")
class WorkerPause(MethodView):
    @require(Role.OPERATOR)
    @blp.doc(security=BEARER)
    @blp.response(200, WorkerSchema)
    @_one
    def post(self, name: str):
        """Pause a worker: it takes no task until resumed (stored: survives its restart)"""
        _ext().controls.pause_worker(name, str(principal().id))
        return _ext().operations.worker(name)


@blp.route(f"/{NAME}/resume")
class WorkerResume(MethodView):
    @require(Role.OPERATOR)
    @blp.doc(security=BEARER)
    @blp.response(200, WorkerSchema)
    @_one
    def post(self, name: str):
        """Let a paused worker take tasks again"""
        _ext().controls.resume_worker(name)
        return _ext().operations.worker(name)


@blp.route(f"/{NAME}/scale")
class WorkerScale(MethodView):
    @require(Role.OPERATOR)
    @blp.doc(security=BEARER)
    @blp.arguments(ScaleSchema)
    @blp.response(200, WorkerSchema)
    @blp.alt_response(422, description="Invalid concurrency")
    @_one
    def post(self, body, name: str):
        """Resize the worker's pool (applied live, and at its next start)"""
        _ext().controls.scale(name, body["concurrency"], str(principal().id))
        return _ext().operations.worker(name)
