"""`manage.py standalone` runs the platform on embedded services, runs tasks, lets manage.py
commands find it, keeps its data private and stops cleanly on its signals."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from tests.support import assert_private_tree

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(log: Path, lines: int = 80) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _wait(
    predicate: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen, log: Path
) -> Any:
    """Poll predicate until truthy; fail early, with the log, if standalone exits meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (OSError, ValueError, requests.RequestException):
            value = None
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"standalone exited ({proc.returncode}) before {what}:\n{_log_tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}:\n{_log_tail(log)}")
        time.sleep(0.25)


def _by_data_dir(data_dir: Path, exclude: int = -1) -> list[psutil.Process]:
    """Processes naming data_dir in their command line (pg_ctl's Postgres), with their children."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid != exclude and str(data_dir) in " ".join(proc.info["cmdline"] or []):
            found[proc.pid] = proc
            with contextlib.suppress(psutil.Error):
                found.update({child.pid: child for child in proc.children(recursive=True)})
    return list(found.values())


def _started_by(pid: int, data_dir: Path) -> list[psutil.Process]:
    """Processes standalone started: its descendants and the embedded Postgres."""
    found = {p.pid: p for p in psutil.Process(pid).children(recursive=True)}
    found.update({p.pid: p for p in _by_data_dir(data_dir, exclude=pid)})
    return list(found.values())


def _terminate(procs: list[psutil.Process]) -> None:
    """Teardown after a failure: leave nothing of this test running."""
    alive = [proc for proc in procs if _alive(proc)]
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, still = psutil.wait_procs(alive, timeout=5)
    for proc in still:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {proc.name()} {' '.join(proc.cmdline())}"
    except psutil.Error:
        return f"{proc.pid} (gone)"


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Standalone:
    """A `manage.py standalone` run of the module's own, ready, with an admin token."""

    def __init__(self, workdir: Path, log: Path) -> None:
        # Named as make run's default, so commands run in workdir find it without --data-dir.
        self.workdir = workdir
        self.data_dir = workdir / ".standalone"
        self.log = log
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("SCHEDULER_DATABASE_URL", "SCHEDULER_BROKER_URL")
        }
        self.http = requests.Session()
        self.http.trust_env = False  # loopback only: never through a proxy from the environment
        self.proc: subprocess.Popen | None = None
        self.children: list[psutil.Process] = []

    def start(self) -> Standalone:
        port = _free_port()
        argv = [sys.executable, "manage.py", "standalone", "--port", str(port)]
        argv += ["--data-dir", str(self.data_dir)]
        started = time.monotonic()
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        state_file = self.data_dir / "standalone.json"
        self.state = self.wait(lambda: json.loads(state_file.read_text()), 180, "standalone.json")
        self.api = self.state["api_url"]
        assert self.api == f"http://127.0.0.1:{port}"
        self.wait(
            lambda: self.http.get(f"{self.api}/readyz", timeout=2).status_code == 200,
            120,
            "GET /readyz == 200",
        )
        print(f"ready after {time.monotonic() - started:.1f}s")
        admin = self.state["admin"]
        self.headers = {"Authorization": f"Bearer {self.token(**admin)}"}
        return self

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        return _wait(predicate, timeout, what, self.proc, self.log)

    def token(self, client_id: str, client_secret: str) -> str:
        response = self.http.post(
            f"{self.api}/api/v1/auth/token",
            json={"client_id": client_id, "client_secret": client_secret},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def submit(self, **body: Any) -> str:
        response = self.http.post(
            f"{self.api}/api/v1/tasks", json=body, headers=self.headers, timeout=10
        )
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def wait_succeeded(self, task_id: str, timeout: float) -> dict[str, Any]:
        def succeeded() -> dict[str, Any] | None:
            task = self.http.get(
                f"{self.api}/api/v1/tasks/{task_id}", headers=self.headers, timeout=5
            ).json()
            assert task["status"] not in ("failed", "cancelled"), task
            return task if task["status"] == "succeeded" else None

        return self.wait(succeeded, timeout, f"task {task_id} to succeed")

    def started_processes(self) -> list[psutil.Process]:
        assert self.proc is not None
        self.children = _started_by(self.proc.pid, self.data_dir)
        return self.children

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # Now, not only the list taken earlier: a child restarted since (a worker) is
            # in its own process group, and would outlive the SIGKILL below.
            with contextlib.suppress(psutil.Error):
                now = _started_by(self.proc.pid, self.data_dir)
                self.children = list({p.pid: p for p in [*self.children, *now]}.values())
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        _terminate([*self.children, *_by_data_dir(self.data_dir)])
        print(_log_tail(self.log, 200))


@pytest.fixture(scope="module")
def standalone(tmp_path_factory) -> Iterator[Standalone]:
    """One standalone run for this module's tests; the last of them stops it."""
    # A work dir outside pytest's basetemp, which other pytest sessions reset to mode 0700:
    # as root, Postgres runs as another user that must traverse the path to its data, and a
    # concurrent session's chmod of /tmp/pytest-of-root would lock it out mid-test.
    workdir = Path(tempfile.mkdtemp(prefix="standalone-e2e-"))
    run = Standalone(workdir, tmp_path_factory.mktemp("standalone") / "standalone.log")
    try:
        yield run.start()
    finally:
        run.close()
        shutil.rmtree(workdir, ignore_errors=True)


def test_standalone_runs_a_task_on_embedded_services(standalone):
    task_id = standalone.submit(task="demo.echo", args=[1], kwargs={"a": "b"})
    task = standalone.wait_succeeded(task_id, 60)
    assert task["result"] == {"args": [1], "kwargs": {"a": "b"}}

    described = "\n".join(_describe(child) for child in standalone.started_processes())
    expected = ["gunicorn", "celery -A tasks.worker worker", "manage.py scheduler"]
    expected += ["postgres", "redis-server"]
    for role in expected:
        assert role in described, f"no {role!r} among standalone's processes:\n{described}"


def test_standalone_mails_land_in_its_smtp_sink(standalone):
    """No smtp_host configured: the standalone's embedded sink receives notify.email mails and
    keeps them in the Maildir that standalone.json names."""
    import mailbox

    smtp = standalone.state["smtp"]
    task_id = standalone.submit(task="demo.echo", notify={"email": "me@example.com"})
    standalone.wait_succeeded(task_id, 60)
    box = mailbox.Maildir(smtp["maildir"], create=False)
    mail = standalone.wait(
        lambda: next((m for m in box if task_id in (m["Subject"] or "")), None), 60, "the mail"
    )
    assert mail["To"] == "me@example.com"
    assert f"{standalone.api}/api/v1/tasks/{task_id}" in mail.get_payload()


def test_standalone_restarts_a_worker_that_dies(standalone):
    [worker] = [
        c
        for c in standalone.started_processes()
        if c.ppid() == standalone.proc.pid and "tasks.worker worker" in " ".join(c.cmdline())
    ]
    worker.kill()
    task_id = standalone.submit(task="demo.echo", args=["again"])
    task = standalone.wait_succeeded(task_id, 90)
    assert task["result"] == {"args": ["again"], "kwargs": {}}


def test_create_client_finds_the_running_standalone(standalone, tmp_path):
    """README's `python manage.py create-client NAME --role ROLE`, run beside a running
    standalone with no SCHEDULER_DATABASE_URL, creates a client that can log in to it.

    Negative control: ``SCHEDULER_TEST_CREATE_CLIENT_ELSEWHERE=1`` runs the command with a
    --data-dir that holds no standalone, as manage.py behaved before it looked for one: the
    command then fails (no database at the default URL) or its client cannot log in.
    """
    argv = [sys.executable, str(ROOT / "manage.py"), "create-client", "e2e-cli", "--role"]
    argv.append("submitter")
    if os.environ.get("SCHEDULER_TEST_CREATE_CLIENT_ELSEWHERE") == "1":
        argv += ["--data-dir", str(tmp_path / "empty")]
    run = subprocess.run(
        argv, cwd=standalone.workdir, env=standalone.env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr
    created = json.loads(run.stdout.strip().splitlines()[-1])
    assert created["role"] == "submitter"
    token = standalone.token(created["client_id"], created["client_secret"])
    response = standalone.http.get(
        f"{standalone.api}/api/v1/tasks",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def test_standalone_data_dir_is_private(standalone):
    """Nobody but us reads the data dir: it is 0700 (as root 0710, traverse only, for the
    Postgres system user's group) and every file in it 0600, Redis' snapshot included.

    Negative control: tests/integration/test_embedded_services.py (its
    ``SCHEDULER_TEST_EMBEDDED_NOT_PRIVATE=1``) restores the old modes of the same functions.
    """
    import redis

    with redis.Redis.from_url(standalone.state["broker_url"]) as client:
        client.save()  # dump.rdb as the periodic snapshot writes it
    assert (standalone.data_dir / "redis" / "dump.rdb").is_file()
    assert_private_tree(standalone.data_dir)


def test_sigterm_to_the_process_group_stops_everything_in_order(standalone):
    """What a process manager or `timeout` does to `make run`: SIGTERM to the process group,
    and make forwards its own copy a moment later. Children get their grace, not a SIGKILL."""
    children = standalone.started_processes()
    stopping = time.monotonic()
    os.killpg(standalone.proc.pid, signal.SIGTERM)
    time.sleep(0.05)
    standalone.proc.send_signal(signal.SIGTERM)
    try:
        code = standalone.proc.wait(40)
    except subprocess.TimeoutExpired:
        pytest.fail(f"standalone did not exit within 40s of SIGTERM:\n{_log_tail(standalone.log)}")
    print(f"stopped in {time.monotonic() - stopping:.1f}s")
    log = standalone.log.read_text(errors="replace")
    assert code == 0, _log_tail(standalone.log)
    assert "killing it" not in log, _log_tail(standalone.log)
    deadline = time.monotonic() + 5
    while any(_alive(child) for child in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [_describe(child) for child in children if _alive(child)]
    assert not left, "still running after standalone exited:\n" + "\n".join(left)
