"""/healthz (the process lives), /readyz (Postgres and Redis answer), /api/v1/task-types."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
from flask import current_app
from flask.views import MethodView
from marshmallow import Schema, fields

from scheduler_app.api.blueprint import Blueprint
from scheduler_app.api.problems import problem
from scheduler_app.api.security import BEARER, require
from scheduler_app.db import probe_database

blp = Blueprint("health", __name__, description="Health and discovery")
# Redis gets at least this long even when the database check used the whole budget.
MIN_REDIS_WAIT = 0.2


class TaskTypeSchema(Schema):
    name = fields.String()
    description = fields.String()
    queue = fields.String(allow_none=True)
    max_retries = fields.Integer(allow_none=True)
    timeout = fields.Float(allow_none=True, metadata={"description": "default time limit, s"})
    retention = fields.Float(
        allow_none=True, metadata={"description": "seconds its tasks are kept once finished"}
    )
    retry = fields.Dict(metadata={"description": "default retry policy of the type"})
    parameters = fields.Dict(keys=fields.String(), values=fields.String())


@blp.route("/healthz")
class Health(MethodView):
    @blp.response(200)
    def get(self):
        """Liveness: the process answers"""
        return {"status": "ok"}


@blp.route("/readyz")
class Ready(MethodView):
    @blp.response(200)
    @blp.alt_response(503, description="A dependency is down or did not answer in time")
    def get(self):
        """Readiness: Postgres and Redis answer, within readyz_timeout seconds in all"""
        ext = current_app.extensions["scheduler"]
        budget = ext.settings.readyz_timeout
        started = time.monotonic()
        checks = {"postgres": _check(probe_database, ext.engine, ext.settings, budget)}
        left = budget - (time.monotonic() - started)
        # A hung database took the whole budget: the answer is 503 either way, and a healthy
        # Redis still answers within the little that is left.
        checks["redis"] = _check(_ping_redis, ext.settings.broker_url, max(left, MIN_REDIS_WAIT))
        if all(v == "ok" for v in checks.values()):
            return {"status": "ok", "checks": checks}
        return problem(
            503,
            "Service unavailable",
            "a dependency is down",
            errors=checks,
            code="service-unavailable",
        )


def _check(probe: Callable[..., None], *args: Any) -> str:
    try:
        probe(*args)
    except Exception as exc:
        return f"down: {type(exc).__name__}"
    return "ok"


def _ping_redis(url: str, timeout: float) -> None:
    # A client of its own: the shared one's timeouts are longer than readiness may wait.
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()


@blp.route("/api/v1/task-types")
class TaskTypes(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.response(200, TaskTypeSchema(many=True))
    def get(self):
        """The registered task types"""
        types = current_app.extensions["scheduler"].types
        return [types[name].describe() for name in sorted(types)]
