"""The Flask application factory."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
from flask import Flask, g, request
from flask.sessions import SessionInterface
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from scheduler_app.api import (
    auth,
    clients,
    content,
    dead_letters,
    docs,
    health,
    queues,
    schedules,
    tasks,
    webhooks,
    workers,
    workflows,
)
from scheduler_app.api.body_limit import BodyLimit, refuse_large_bodies
from scheduler_app.api.jsonio import FastJSONProvider
from scheduler_app.api.metrics import init_metrics
from scheduler_app.api.openapi import SchemaRules, document_registry
from scheduler_app.api.problems import ProblemApi, problem, register_error_handlers
from scheduler_app.api.security import init_jwt
from scheduler_app.config import Settings, load_settings
from scheduler_app.db import bound_waits, make_engine, make_session_factory
from scheduler_app.logs import bind_context, configure_logging
from scheduler_app.services.broker.dispatcher import Dispatcher, make_producer_app
from scheduler_app.services.clients.service import ClientService
from scheduler_app.services.dead_letters.service import DeadLetterService
from scheduler_app.services.notifiers.deliveries import DeliveryService
from scheduler_app.services.notifiers.endpoints import EndpointService
from scheduler_app.services.schedules.firing import ScheduleRunner
from scheduler_app.services.schedules.service import ScheduleService
from scheduler_app.services.tasks.explain import TaskExplainer
from scheduler_app.services.tasks.service import TaskService
from scheduler_app.services.workers.controls import ControlService
from scheduler_app.services.workers.overview import OperationsView
from scheduler_app.services.workflows.advance import bind_dispatcher
from scheduler_app.services.workflows.service import WorkflowService
from scheduler_app.task_types import TaskType, load_task_modules, submittable

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,100}$")


@dataclass
class Extension:
    """Everything the views reach through ``current_app.extensions["scheduler"]``."""

    settings: Settings
    engine: Engine
    redis: redis.Redis
    types: dict[str, TaskType]
    tasks: TaskService
    clients: ClientService
    dead_letters: DeadLetterService
    dispatcher: Dispatcher
    schedules: ScheduleService
    workflows: WorkflowService
    controls: ControlService
    operations: OperationsView
    explainer: TaskExplainer
    endpoints: EndpointService
    deliveries: DeliveryService


def create_app(settings: Settings | None = None, **overrides: Any) -> Flask:
    """Build the API app; nothing connects until the first request."""
    settings = settings or load_settings(overrides or None)
    configure_logging(settings)
    app = Flask("scheduler_app")
    app.json = FastJSONProvider(app)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        JWT_SECRET_KEY=settings.jwt_secret,
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=settings.access_token_ttl),
        JWT_REFRESH_TOKEN_EXPIRES=timedelta(seconds=settings.refresh_token_ttl),
        JWT_TOKEN_LOCATION=["headers"],
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE="Job Scheduler API",
        API_VERSION="v1",
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH=docs.SWAGGER_UI_PATH,
        OPENAPI_SWAGGER_UI_URL=docs.ASSETS_URL,  # served by the app: docs work offline
        OPENAPI_SWAGGER_UI_CONFIG=docs.SWAGGER_UI_CONFIG,
        API_SPEC_OPTIONS={
            "components": {
                "securitySchemes": {
                    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
                }
            }
        },
    )
    # A hung database costs a request a bounded wait and a 503, never a stuck worker.
    bound_waits(settings.db_connect_timeout, settings.db_statement_timeout)
    engine = make_engine(settings, statement_timeout=settings.db_statement_timeout)
    sessions = make_session_factory(engine)
    dispatcher = Dispatcher(make_producer_app(settings))
    # The platform's own types (internal=True) run on workers; the API neither lists nor takes
    # them.
    types = submittable(load_task_modules(settings.task_modules))
    task_service = TaskService(sessions, dispatcher, settings, types)
    operations = OperationsView(sessions, settings)
    broker = redis.Redis.from_url(settings.broker_url, socket_timeout=5, socket_connect_timeout=5)
    app.extensions["scheduler"] = Extension(
        settings=settings,
        engine=engine,
        redis=broker,
        types=types,
        tasks=task_service,
        clients=ClientService(sessions, broker, settings),
        dead_letters=DeadLetterService(sessions, task_service),
        dispatcher=dispatcher,
        schedules=ScheduleService(ScheduleRunner(task_service, settings)),
        workflows=WorkflowService(task_service),
        controls=ControlService(sessions, dispatcher, settings),
        operations=operations,
        explainer=TaskExplainer(sessions, task_service, operations),
        endpoints=EndpointService(sessions, settings),
        deliveries=DeliveryService(sessions, settings),
    )
    bind_dispatcher(dispatcher)  # workflow nodes this process releases

    init_jwt(app)
    api = ProblemApi(app, spec_kwargs={"extra_plugins": [SchemaRules()]})
    for module in (
        health,
        auth,
        clients,
        tasks,
        dead_letters,
        schedules,
        workflows,
        workers,
        queues,
        webhooks,
    ):
        api.register_blueprint(module.blp)
    api.register_blueprint(webhooks.deliveries_blp)
    document_registry(api.spec, settings, types, ["TaskCreate", "ScheduleCreate", "WorkflowNode"])
    schedules.document(api.spec, settings, types)
    docs.init_app(app)
    register_error_handlers(app)

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(PoolTimeout)
    # The pool raises the driver's own error when a connection cannot be made at checkout.
    @app.errorhandler(engine.dialect.loaded_dbapi.OperationalError)
    def _database_down(exc: Exception):
        # PoolTimeout: every pooled connection is taken (by requests waiting on the database).
        app.logger.error("database unavailable: %s", getattr(exc, "orig", None) or exc)
        return problem(
            503,
            "Service unavailable",
            "the database is not answering",
            code="service-unavailable",
            headers={"Retry-After": "5"},
        )

    # A token API has no cookie sessions: Flask would otherwise build a signing serializer to
    # look for one on every request.
    app.session_interface = _NoSessions()
    init_metrics(app, settings, sessions)
    _request_ids(app)
    # After the request id is taken, so that the 413 names it; on every endpoint.
    app.before_request(refuse_large_bodies)
    app.wsgi_app = BodyLimit(app.wsgi_app, settings.max_body_bytes)
    content.init_app(app)  # then 415 for a body that is not JSON
    return app


class _NoSessions(SessionInterface):
    def open_session(self, app: Flask, request: Any) -> None:
        return None  # Flask then hands out its null session

    def save_session(self, app: Flask, session: Any, response: Any) -> None:
        return None


def _request_ids(app: Flask) -> None:
    @app.before_request
    def _take_request_id():
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        g.log_context = bind_context(request_id=g.request_id)
        g.log_context.__enter__()

    @app.after_request
    def _give_request_id(response):
        response.headers["X-Request-ID"] = getattr(g, "request_id", None) or uuid.uuid4().hex
        return response

    @app.teardown_request
    def _unbind(_exc):
        context = g.pop("log_context", None)
        if context is not None:
            context.__exit__(None, None, None)
