"""/healthz (the process lives), /readyz (Postgres and Redis answer), /api/v1/task-types."""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView
from marshmallow import Schema, fields
from sqlalchemy import text

from scheduler_app.api.blueprint import Blueprint
from scheduler_app.api.problems import problem
from scheduler_app.api.security import BEARER, require

blp = Blueprint("health", __name__, description="Health and discovery")


class TaskTypeSchema(Schema):
    name = fields.String()
    description = fields.String()
    queue = fields.String(allow_none=True)
    max_retries = fields.Integer(allow_none=True)
    timeout = fields.Float(allow_none=True, metadata={"description": "default time limit, s"})
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
    @blp.alt_response(503, description="A dependency is down")
    def get(self):
        """Readiness: Postgres and Redis answer"""
        ext = current_app.extensions["scheduler"]
        checks = {}
        try:
            with ext.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["postgres"] = "ok"
        except Exception as exc:
            checks["postgres"] = f"down: {type(exc).__name__}"
        try:
            ext.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"down: {type(exc).__name__}"
        if all(v == "ok" for v in checks.values()):
            return {"status": "ok", "checks": checks}
        return problem(
            503,
            "Service unavailable",
            "a dependency is down",
            errors=checks,
            code="service-unavailable",
        )


@blp.route("/api/v1/task-types")
class TaskTypes(MethodView):
    @require()
    @blp.doc(security=BEARER)
    @blp.response(200, TaskTypeSchema(many=True))
    def get(self):
        """The registered task types"""
        types = current_app.extensions["scheduler"].types
        return [types[name].describe() for name in sorted(types)]
