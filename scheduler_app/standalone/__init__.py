"""Standalone mode: the whole platform on one machine, on embedded Postgres and Redis."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import secrets
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from scheduler_app.standalone.embedded import (
    EmbeddedError,
    free_port,
    private_dir,
    start_postgres,
    start_redis,
)
from scheduler_app.standalone.mail import start_mail_sink
from scheduler_app.standalone.state import LOCK_FILE, STATE_FILE
from scheduler_app.standalone.supervisor import ChildSpec, ShutdownRequested, Supervisor

__all__ = ["DEFAULT_DATA_DIR", "run_standalone"]

DEFAULT_DATA_DIR = Path(".standalone")
REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


class StartupError(RuntimeError):
    """A start-up step (migrations, admin client) failed."""


def run_standalone(port: int, data_dir: Path, flower: bool = True, workers: int = 1) -> int:
    """Run the whole platform (with ``workers`` worker processes) until SIGINT/SIGTERM; return
    the process exit code."""
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    supervisor = Supervisor()
    with _exclusive(data_dir / LOCK_FILE) as owner:
        if owner is not None:
            supervisor.log(f"{data_dir} is in use by another standalone run (pid {owner})")
            return 1
        # It holds secrets and the databases: nobody else may look in (older runs made it 0755).
        private_dir(data_dir)
        if not _port_free(port):
            supervisor.log(f"port {port} on {HOST} is in use; choose another with --port")
            return 1
        supervisor.install_signal_handlers()
        # Whoever waits for standalone.json must not find the previous run's ports in it.
        state = data_dir / STATE_FILE
        previous = _read_json(state)
        state.unlink(missing_ok=True)
        try:
            return _run(supervisor, port, data_dir, flower, previous, workers)
        except ShutdownRequested:
            return 0
        except (EmbeddedError, StartupError, OSError) as exc:
            supervisor.log(f"start-up failed: {exc}")
            return 1
        finally:
            supervisor.shutdown()
            if previous and not state.exists():  # keep the admin credentials for the next run
                _write_private(state, json.dumps(previous, indent=2) + "\n")


def _run(
    supervisor: Supervisor,
    port: int,
    data_dir: Path,
    flower: bool,
    previous: Mapping[str, Any],
    workers: int = 1,
) -> int:
    started = time.monotonic()
    keys = _load_secrets(data_dir / "secrets.json")
    database_url = os.environ.get("SCHEDULER_DATABASE_URL")
    if not database_url:
        supervisor.log("starting embedded PostgreSQL")
        postgres = start_postgres(data_dir)
        supervisor.add_cleanup("embedded PostgreSQL", postgres.stop)
        database_url = postgres.url
    supervisor.check_stop()
    broker_url = os.environ.get("SCHEDULER_BROKER_URL")
    if not broker_url:
        supervisor.log("starting embedded Redis")
        redis = start_redis(data_dir)
        supervisor.add_cleanup("embedded Redis", redis.stop)
        broker_url = redis.url
    supervisor.check_stop()

    env = _child_env(database_url, broker_url, keys)
    supervisor.stop_timeout = stop_timeout(env)
    env.setdefault("SCHEDULER_PUBLIC_URL", f"http://{HOST}:{port}")
    mail = None
    if not env.get("SCHEDULER_SMTP_HOST"):
        mail = start_mail_sink(data_dir)
        supervisor.add_cleanup("SMTP sink", mail.stop)
        env["SCHEDULER_SMTP_HOST"], env["SCHEDULER_SMTP_PORT"] = mail.host, str(mail.port)
    code, _ = supervisor.run_once(_manage("migrate", env))
    if code != 0:
        raise StartupError(f"manage.py migrate exited with code {code}")
    supervisor.check_stop()
    admin, database_id = _admin_client(supervisor, previous, database_url, env)
    supervisor.check_stop()

    flower_port = _flower_port() if flower and importlib.util.find_spec("flower") else None
    for spec in _children(port, flower_port, admin["client_secret"], env, workers):
        supervisor.start(spec)
    info = {
        "api_url": f"http://{HOST}:{port}",
        "broker_url": broker_url,
        "database_url": database_url,
        "flower_url": f"http://{HOST}:{flower_port}" if flower_port else None,
        "admin": admin,
        "database_id": database_id,
        # The embedded SMTP sink's mails (None when smtp_host is configured).
        "smtp": (
            {"host": mail.host, "port": mail.port, "maildir": str(mail.maildir)} if mail else None
        ),
    }
    _write_private(data_dir / STATE_FILE, json.dumps(info, indent=2) + "\n")
    supervisor.log(_summary(info, data_dir))
    _watch_ready(supervisor, info["api_url"], admin, started)
    return supervisor.run()


# --- start-up steps ---------------------------------------------------------------------------


def _load_secrets(path: Path) -> dict[str, str]:
    """The persisted secret_key and jwt_secret, generated on first run."""
    keys = _read_json(path)
    if not all(keys.get(name) for name in ("secret_key", "jwt_secret")):
        keys = {"secret_key": secrets.token_urlsafe(48), "jwt_secret": secrets.token_urlsafe(48)}
        _write_private(path, json.dumps(keys, indent=2) + "\n")
    return keys


def _child_env(database_url: str, broker_url: str, keys: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("SCHEDULER_PROFILE", "development")
    env["SCHEDULER_DATABASE_URL"] = database_url
    env["SCHEDULER_BROKER_URL"] = broker_url
    # Secrets set in the environment win, as the service URLs do.
    env.setdefault("SCHEDULER_SECRET_KEY", keys["secret_key"])
    env.setdefault("SCHEDULER_JWT_SECRET", keys["jwt_secret"])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _manage(command: str, env: Mapping[str, str], *args: str) -> ChildSpec:
    return ChildSpec(command, [sys.executable, "manage.py", command, *args], env, REPO_ROOT)


def _admin_client(
    supervisor: Supervisor, previous: Mapping[str, Any], database_url: str, env: Mapping[str, str]
) -> tuple[dict[str, str], str | None]:
    """Admin credentials: those of the last run on the same database, else a new client."""
    database_id = _database_identity(database_url)
    admin = previous.get("admin") or {}
    if database_id and previous.get("database_id") == database_id and admin.get("client_secret"):
        supervisor.log(f"reusing admin client {admin['client_id']} from the previous run")
        return _credentials(admin), database_id
    spec = _manage("create-client", env, "admin", "--role", "admin")
    code, out = supervisor.run_once(spec, capture_stdout=True)
    created = _last_json_object(out)
    if code != 0 or not created.get("client_id") or not created.get("client_secret"):
        raise StartupError(f"manage.py create-client exited with code {code}; stdout: {out[-500:]}")
    supervisor.log(f"created admin client {created['client_id']}")
    return _credentials(created), database_id


def _credentials(client: Mapping[str, Any]) -> dict[str, str]:
    return {"client_id": client["client_id"], "client_secret": client["client_secret"]}


def _database_identity(database_url: str) -> str | None:
    """Something that changes when the database is re-created: cluster id (or address) and oid."""
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        conn = psycopg2.connect(dsn, connect_timeout=10)
    except psycopg2.Error:
        return None
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT oid FROM pg_database WHERE datname = current_database()")
            oid = cur.fetchone()[0]
            try:  # readable by superusers and pg_monitor only
                cur.execute("SELECT system_identifier FROM pg_control_system()")
                cluster = str(cur.fetchone()[0])
            except psycopg2.Error:
                cluster = f"{url.host}:{url.port}"
        return f"{cluster}/{url.database}/{oid}"
    finally:
        conn.close()


def _children(
    port: int,
    flower_port: int | None,
    admin_secret: str,
    env: Mapping[str, str],
    workers: int = 1,
) -> list[ChildSpec]:
    """The supervised processes: API, ``workers`` workers (each its own name, so each can be
    paused and scaled on its own), scheduler and Flower."""
    python = sys.executable
    celery = [python, "-m", "celery", "-A", "tasks.worker"]
    queues = _queues(env)
    specs = [
        ChildSpec(
            "api",
            [
                *(python, "-m", "gunicorn", "-c", "python:scheduler_app.gunicorn_conf"),
                *("--bind", f"{HOST}:{port}", "--workers", "2", "--graceful-timeout", "20"),
                # Its control socket would default to ~/.gunicorn, shared with any other gunicorn.
                "--no-control-socket",
                "scheduler_app.wsgi:app",
            ],
            env,
            REPO_ROOT,
        ),
        *(
            ChildSpec(
                "worker" if workers == 1 else f"worker-{n}",
                [
                    *celery,
                    *("worker", "--loglevel", "INFO", "--concurrency", "2"),
                    *("-Q", ",".join(queues), "--hostname", _worker_name(n, workers)),
                ],
                # SIGTERM -> soft shutdown: finish within shutdown_timeout, then hand work back.
                {**env, "REMAP_SIGTERM": "SIGQUIT"},
                REPO_ROOT,
            )
            for n in range(1, workers + 1)
        ),
        _manage("scheduler", env),
    ]
    if flower_port is not None:
        # Flower reads FLOWER_BASIC_AUTH like --basic-auth; the secret stays out of `ps`.
        flower_env = {**env, "FLOWER_BASIC_AUTH": f"admin:{admin_secret}"}
        specs.append(
            ChildSpec(
                "flower",
                # tasks.flower: the credentials are asked on every path, /metrics included.
                [python, "-m", "tasks.flower", f"--port={flower_port}", f"--address={HOST}"],
                flower_env,
                REPO_ROOT,
            )
        )
    return specs


def _worker_name(n: int, workers: int) -> str:
    """Worker ``n``'s Celery hostname (one worker keeps the name earlier runs stored)."""
    return "standalone@%h" if workers == 1 else f"standalone-{n}@%h"


# What the supervisor waits beyond the workers' soft shutdown before it kills what is left: a
# worker's running tasks get shutdown_timeout to finish and then are handed back to the broker,
# which takes a moment; killed before, they wait for the reconciler instead.
HAND_BACK_MARGIN = 10.0


def stop_timeout(env: Mapping[str, str]) -> float:
    """How long the supervisor lets its children stop: longer than a worker's soft shutdown."""
    from scheduler_app.config import load_settings

    return load_settings(environ=env).shutdown_timeout + HAND_BACK_MARGIN


def _queues(env: Mapping[str, str]) -> tuple[str, ...]:
    """The queues the configuration knows (the worker consumes them all)."""
    from scheduler_app.config import load_settings

    return load_settings(environ=env).queues


def _watch_ready(
    supervisor: Supervisor, api_url: str, admin: Mapping[str, str], started: float
) -> None:
    """Log once the API answers its readiness probe, with an admin access token to try it."""

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    url = f"{api_url}/readyz"

    def watch() -> None:
        while not supervisor.stopping:
            try:
                with opener.open(url, timeout=2) as response:
                    if response.status == 200:
                        took = time.monotonic() - started
                        supervisor.log(f"ready after {took:.1f}s: {url} answers 200")
                        _print_token(supervisor, opener, api_url, admin)
                        return
            except OSError:
                pass
            time.sleep(0.5)

    threading.Thread(target=watch, name="readiness", daemon=True).start()


def _print_token(
    supervisor: Supervisor, opener: Any, api_url: str, admin: Mapping[str, str]
) -> None:
    """Print an admin access token (valid for access_token_ttl, 15 min by default)."""
    body = json.dumps(
        {"client_id": admin["client_id"], "client_secret": admin["client_secret"]}
    ).encode()
    request = urllib.request.Request(
        f"{api_url}/api/v1/auth/token", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with opener.open(request, timeout=10) as response:
            token = json.loads(response.read())["access_token"]
    except (OSError, ValueError, KeyError) as exc:
        supervisor.log(f"could not get an admin token: {exc}")
        return
    supervisor.log(f"admin access token (15 min): export TOKEN={token}")


def _masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: show only its scheme
        return url.split("://", 1)[0] + "://..."


def _mail_line(info: Mapping[str, Any]) -> str:
    smtp = info.get("smtp")
    if not smtp:
        return "sent through the configured smtp_host"
    return (
        f"SMTP sink on {smtp['host']}:{smtp['port']}; read the mails in {smtp['maildir']}/new "
        "(a Maildir)"
    )


def _summary(info: Mapping[str, Any], data_dir: Path) -> str:
    admin = info["admin"]
    body = json.dumps({"client_id": admin["client_id"], "client_secret": admin["client_secret"]})
    flower = info["flower_url"] or "disabled"
    if info["flower_url"]:
        flower += " (user admin, password: the admin client secret)"
    return "\n".join(
        [
            "standalone platform started",
            f"  API:       {info['api_url']}  (ready when {info['api_url']}/readyz answers 200)",
            f"  Flower:    {flower}",
            f"  Postgres:  {_masked(info['database_url'])}",
            f"  Redis:     {_masked(info['broker_url'])}",
            f"  Mail:      {_mail_line(info)}",
            f"  Data:      {data_dir}  (all of the above in standalone.json)",
            f"  Admin:     client_id={admin['client_id']} client_secret={admin['client_secret']}",
            "  Token:",
            f"    curl -s -X POST {info['api_url']}/api/v1/auth/token \\",
            f"         -H 'Content-Type: application/json' -d '{body}'",
            "  Stop with Ctrl-C (or SIGTERM).",
        ]
    )


# --- files and ports --------------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[str | None]:
    """Hold an exclusive lock on path; yield None, or the pid recorded by the current holder."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)  # a lock file of an older run may be readable by others
    with os.fdopen(fd, "a+") as handle:
        # manage.py commands probe the lock for an instant (state.is_running): retry briefly.
        for attempt in range(10):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == 9:
                    handle.seek(0)
                    yield handle.read().strip() or "?"
                    return
                time.sleep(0.05)
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        yield None


FLOWER_PORT = 5555


def _flower_port() -> int:
    """Flower's usual port, 5555, unless something else has it (then any free one)."""
    return FLOWER_PORT if _port_free(FLOWER_PORT) else free_port()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _last_json_object(text: str) -> dict[str, Any]:
    """The JSON object a command printed (whole output, else its last JSON line)."""
    for candidate in [text, *reversed(text.splitlines())]:
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    return {}


def _write_private(path: Path, text: str) -> None:
    """Write a file only we can read, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
