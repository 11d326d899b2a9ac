"""Everything one bench run stands on: services, the platform's processes and the raw baseline's.

Ours runs as in production (``SCHEDULER_PROFILE=production``, gunicorn with
``scheduler_app/gunicorn_conf.py`` as the Dockerfile, docker-compose and the Helm chart run it, a
prefork worker and the scheduler); raw Celery uses the same redis-server in databases of
its own, so neither side's keys (kombu's ``unacked`` hash above all) reach the other's scans.
"""

from __future__ import annotations

import gc
import os
import secrets
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import requests
from celery import Celery
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from bench.probes import queue_keys, worker_name
from bench.raw_app import make_raw_app
from bench.services import Child, Database, RedisServer, free_port, wait_until

OURS_DB, RAW_DB, RAW_RESULT_DB, DRAMATIQ_DB, RQ_DB = 0, 1, 2, 3, 4
# Submit rows publish to queues no worker consumes; the bench empties them between repetitions.
OURS_SINK = "sink"
RAW_SINK = "raw-sink"
OURS_QUEUE = "default"
RAW_QUEUE = "raw"
# Where ours is configured, the scheduler's look-ahead and priority steps, per its settings.
OURS_QUEUES = "default,high,low,sink"
# The API's production server settings are scheduler_app/gunicorn_conf.py (what docker/Dockerfile,
# docker-compose and the Helm chart run), given to the bare endpoint too. BENCH_GUNICORN adds
# flags that override them for both sides, e.g. "--workers 2" or "--worker-class gthread
# --threads 4" (the settings before the gevent workers).
GUNICORN_SETTINGS = tuple(os.environ.get("BENCH_GUNICORN", "").split())


def gunicorn_argv(port: int, wsgi: str) -> list[str]:
    """gunicorn with the production settings of the API (README, ``make api``)."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:scheduler_app.gunicorn_conf",
        "--bind",
        f"127.0.0.1:{port}",
        *GUNICORN_SETTINGS,
        "--graceful-timeout",
        "5",
        "--no-control-socket",
        wsgi,
    ]


def celery_worker_argv(
    app: str, queues: str, hostname: str, pool: str = "prefork", concurrency: int = 2
) -> list[str]:
    """A Celery worker as the tests start it; ours and raw get the same flags."""
    argv = [sys.executable, "-m", "celery", "-A", app, "worker", "--loglevel", "INFO"]
    argv += ["-Q", queues, "-P", pool, "-c", str(concurrency), "--hostname", hostname]
    return [*argv, "--without-mingle", "--without-gossip"]


@dataclass
class Ledger:
    """In-process access to ours' ledger and services (the bench's own, not the API's)."""

    settings: Any
    engine: Any
    sessions: sessionmaker[Session]
    tasks: Any  # scheduler_app.services.tasks.service.TaskService
    dispatcher: Any  # scheduler_app.services.broker.dispatcher.Dispatcher

    def scalar(self, sql: str, **params: Any) -> Any:
        """First column of the first row of ``sql``."""
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        """All rows of ``sql``."""
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def execute(self, sql: str, **params: Any) -> None:
        """Run ``sql`` in a transaction of its own."""
        with self.engine.begin() as conn:
            conn.execute(text(sql), params)


class Environment:
    """Starts and stops every process of a run; gives scenarios what they need to measure."""

    def __init__(self, workdir: Path | None = None) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="bench-"))
        self.logdir = self.workdir / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.db = Database()
        self.redis = RedisServer(self.workdir)
        self.children: list[Child] = []
        self.ours_api_port = free_port()
        self.bare_api_port = free_port()
        self.secret = secrets.token_urlsafe(36)
        self.jwt_secret = secrets.token_urlsafe(36)  # production refuses one secret for both
        self.token: str | None = None
        self._db_created = False
        # SCHEDULER_* settings every process of ours gets on top of production's (the soak's)
        self.settings_env: dict[str, str] = {}

    # -- start and stop -------------------------------------------------------------------------

    def start(self) -> None:
        """Database, redis-server, both APIs, the scheduler and one worker of each side."""
        self.db.create()
        self._db_created = True
        self.redis.start()
        self.ledger = self._ledger()
        self.raw_app = make_raw_app(self.redis.url_of(RAW_DB), self.redis.url_of(RAW_RESULT_DB))
        multiproc = self.workdir / "prometheus"
        multiproc.mkdir(exist_ok=True)
        ours_api = self.spawn(
            "ours-api",
            gunicorn_argv(self.ours_api_port, "scheduler_app.wsgi:app"),
            self.ours_env(PROMETHEUS_MULTIPROC_DIR=str(multiproc)),
        )
        bare_api = self.spawn(
            "bare-api", gunicorn_argv(self.bare_api_port, "bench.bare_api:app"), self.raw_env()
        )
        self.scheduler = scheduler = self.spawn(
            "scheduler", [sys.executable, "manage.py", "scheduler"], self.ours_env()
        )
        self.ours_worker = self.start_worker("ours", "ours-worker", OURS_QUEUE)
        self.raw_worker = self.start_worker("raw", "raw-worker", RAW_QUEUE)
        for child in (ours_api, bare_api):
            child.wait_for_log("Booting worker", 60)
        scheduler.wait_for_log("scheduler started", 60)
        self.wait_ready(self.ours_worker, self.raw_worker)
        wait_until(lambda: _answers(self.ours_url("/healthz")), 30, 0.1, what="the API")
        wait_until(lambda: _answers(self.bare_url("/")), 30, 0.1, what="the bare API")
        self.token = self._token()

    def close(self) -> None:
        """Stop every child (all at once), then Redis; drop the database."""
        # Raw AsyncResults unsubscribe when collected: let them do it while Redis still runs.
        gc.collect()
        for child in self.children:
            child.terminate()
        for child in self.children:
            try:
                child.reap(timeout=15)
            except Exception as exc:  # keep stopping the others
                print(f"bench: could not stop {child.name}: {exc}", file=sys.stderr)
        if hasattr(self, "ledger"):
            self.ledger.engine.dispose()
        self.redis.stop()
        if self._db_created:
            self.db.drop()

    def remove_workdir(self) -> None:
        """Delete the run's logs and Redis directory."""
        shutil.rmtree(self.workdir, ignore_errors=True)

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        """Start a child process that :meth:`close` will stop."""
        child = Child(name, argv, env, self.logdir).start()
        self.children.append(child)
        return child

    def retire(self, child: Child) -> None:
        """Stop a child before the end of the run."""
        child.stop(timeout=10)
        if child in self.children:
            self.children.remove(child)

    # -- configuration of each side --------------------------------------------------------------

    def ours_env(self, **extra: str) -> dict[str, str]:
        """Environment of the platform's processes, configured as in production."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SCHEDULER_", "BENCH_"))}
        env.update(
            SCHEDULER_PROFILE="production",
            SCHEDULER_DATABASE_URL=self.db.url,
            SCHEDULER_BROKER_URL=self.redis.url_of(OURS_DB),
            SCHEDULER_SECRET_KEY=self.secret,
            SCHEDULER_JWT_SECRET=self.jwt_secret,
            SCHEDULER_QUEUES=OURS_QUEUES,
            # 8. notifications deliver to a receiver in the bench process (loopback, which
            # production refuses unless listed).
            SCHEDULER_OUTBOUND_ALLOWLIST="127.0.0.1",
            PYTHONUNBUFFERED="1",
            **self.settings_env,
            **extra,
        )
        return env

    def raw_env(self, **extra: str) -> dict[str, str]:
        """Environment of the raw-Celery and peer processes."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SCHEDULER_", "BENCH_"))}
        env.update(
            BENCH_BROKER_URL=self.redis.url_of(RAW_DB),
            BENCH_RESULT_URL=self.redis.url_of(RAW_RESULT_DB),
            BENCH_SINK_QUEUE=RAW_SINK,
            BENCH_DRAMATIQ_URL=self.redis.url_of(DRAMATIQ_DB),
            PYTHONUNBUFFERED="1",
            **extra,
        )
        return env

    def start_worker(
        self,
        side: str,
        name: str,
        queues: str,
        pool: str = "prefork",
        concurrency: int = 2,
        **extra: str,
    ) -> Child:
        """Start a Celery worker of ``side`` ("ours" or "raw") with ``extra`` environment; wait
        with ``wait_ready``."""
        hostname = f"{name}-{uuid.uuid4().hex[:4]}@%h"
        app, env = (
            ("tasks.worker", self.ours_env(**extra))
            if side == "ours"
            else ("bench.raw_worker", self.raw_env(**extra))
        )
        child = self.spawn(name, celery_worker_argv(app, queues, hostname, pool, concurrency), env)
        child.node = worker_name(hostname)
        return child

    @staticmethod
    def wait_ready(*workers: Child) -> None:
        """Wait until each Celery worker logged that it is ready."""
        for worker in workers:
            worker.wait_for_log("ready.", 90)

    def control_app(self, side: str) -> Celery:
        """The app whose remote control reaches ``side``'s workers."""
        return self.ledger.dispatcher.app if side == "ours" else self.raw_app

    def _ledger(self) -> Ledger:
        from scheduler_app.config import load_settings
        from scheduler_app.db import make_engine, make_session_factory
        from scheduler_app.services.broker.dispatcher import Dispatcher, make_producer_app
        from scheduler_app.services.tasks.service import TaskService
        from scheduler_app.task_types import load_task_modules

        settings = load_settings(
            {
                "profile": "production",
                "database_url": self.db.url,
                "broker_url": self.redis.url_of(OURS_DB),
                "secret_key": self.secret,
                "jwt_secret": self.jwt_secret,
                "queues": OURS_QUEUES,
                "outbound_allowlist": "127.0.0.1",
            },
            environ={},
        )
        engine = make_engine(settings, pool_size=4, max_overflow=4)
        sessions = make_session_factory(engine)
        dispatcher = Dispatcher(make_producer_app(settings))
        service = TaskService(
            sessions, dispatcher, settings, load_task_modules(settings.task_modules)
        )
        return Ledger(settings, engine, sessions, service, dispatcher)

    # -- helpers for scenarios -------------------------------------------------------------------

    def ours_url(self, path: str) -> str:
        """URL of ``path`` on the platform's API."""
        return f"http://127.0.0.1:{self.ours_api_port}{path}"

    def bare_url(self, path: str) -> str:
        """URL of ``path`` on the bare Flask endpoint."""
        return f"http://127.0.0.1:{self.bare_api_port}{path}"

    @property
    def auth(self) -> dict[str, str]:
        """Authorization header of the bench's API client."""
        return {"Authorization": f"Bearer {self.token}"}

    def ours_redis(self) -> redis.Redis:
        """Client of the platform's Redis database."""
        return self.redis.client(OURS_DB)

    def raw_redis(self) -> redis.Redis:
        """Client of raw Celery's Redis database."""
        return self.redis.client(RAW_DB)

    def principal(self) -> Any:
        """The bench client as the services see it (for in-process submissions)."""
        from scheduler_app.services.clients.principal import Principal, Role

        return Principal(self.client_uuid, Role.SUBMITTER)

    def purge_sinks(self) -> None:
        """Empty the submit rows' queues; their ledger tasks become cancelled, as an operator
        would, so the reconciler does not publish them again."""
        self.ledger.execute(
            "UPDATE tasks SET status = 'cancelled', finished_at = now() "
            "WHERE queue = :queue AND status = 'queued'",
            queue=OURS_SINK,
        )
        _delete_queue(self.ours_redis(), OURS_SINK)
        _delete_queue(self.raw_redis(), RAW_SINK)

    def _token(self) -> str:
        from scheduler_app.services.clients.service import ClientService

        client, secret = ClientService(self.ledger.sessions).create("bench", "submitter")
        self.client_uuid = client.id
        self._credentials = {"client_id": client.client_id, "client_secret": secret}
        return self._login()

    def _login(self) -> str:
        response = requests.post(
            self.ours_url("/api/v1/auth/token"), json=self._credentials, timeout=10
        )
        response.raise_for_status()
        return response.json()["access_token"]

    def renew_token(self) -> None:
        """A fresh access token for the bench client (a run longer than its lifetime)."""
        self.token = self._login()


def _delete_queue(client: redis.Redis, queue: str) -> None:
    client.delete(*queue_keys(queue))


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code < 500
    except requests.RequestException:
        return False
