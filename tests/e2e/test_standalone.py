"""`manage.py standalone` runs the platform on embedded services, runs a task, stops cleanly."""

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


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data dir outside pytest's basetemp, which other pytest sessions reset to mode 0700."""
    # As root, Postgres runs as another user that must traverse the path to its data; a
    # concurrent pytest session's chmod of /tmp/pytest-of-root would lock it out mid-test.
    path = Path(tempfile.mkdtemp(prefix="standalone-e2e-"))
    yield path / "data"
    shutil.rmtree(path, ignore_errors=True)


def test_standalone_runs_a_task_on_embedded_services_and_stops_cleanly(tmp_path, data_dir):
    port = _free_port()
    log = tmp_path / "standalone.log"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SCHEDULER_DATABASE_URL", "SCHEDULER_BROKER_URL")
    }
    argv = [sys.executable, "manage.py", "standalone", "--port", str(port)]
    argv += ["--data-dir", str(data_dir)]
    http = requests.Session()
    http.trust_env = False  # loopback only: never through a proxy from the environment
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    children: list[psutil.Process] = []
    try:
        state_file = data_dir / "standalone.json"
        state = _wait(lambda: json.loads(state_file.read_text()), 180, "standalone.json", proc, log)
        api = state["api_url"]
        assert api == f"http://127.0.0.1:{port}"
        _wait(
            lambda: http.get(f"{api}/readyz", timeout=2).status_code == 200,
            120,
            "GET /readyz == 200",
            proc,
            log,
        )
        print(f"ready after {time.monotonic() - started:.1f}s")

        admin = state["admin"]
        response = http.post(
            f"{api}/api/v1/auth/token",
            json={"client_id": admin["client_id"], "client_secret": admin["client_secret"]},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
        response = http.post(
            f"{api}/api/v1/tasks",
            json={"task": "demo.echo", "args": [1], "kwargs": {"a": "b"}},
            headers=headers,
            timeout=10,
        )
        assert response.status_code == 202, response.text
        task_id = response.json()["id"]

        def succeeded() -> dict[str, Any] | None:
            task = http.get(f"{api}/api/v1/tasks/{task_id}", headers=headers, timeout=5).json()
            assert task["status"] not in ("failed", "cancelled", "dead"), task
            return task if task["status"] == "succeeded" else None

        task = _wait(succeeded, 60, f"task {task_id} to succeed", proc, log)
        assert task["result"] == {"args": [1], "kwargs": {"a": "b"}}
        print(f"task succeeded after {time.monotonic() - started:.1f}s")

        children = _started_by(proc.pid, data_dir)
        described = "\n".join(_describe(child) for child in children)
        expected = ["gunicorn", "celery -A tasks.worker worker", "manage.py scheduler"]
        expected += ["postgres", "redis-server"]
        for role in expected:
            assert role in described, f"no {role!r} among standalone's processes:\n{described}"

        # A worker that dies is restarted, as a process supervisor would.
        [worker] = [
            c
            for c in children
            if c.ppid() == proc.pid and "tasks.worker worker" in " ".join(c.cmdline())
        ]
        worker.kill()
        response = http.post(
            f"{api}/api/v1/tasks",
            json={"task": "demo.echo", "args": ["again"]},
            headers=headers,
            timeout=10,
        )
        task_id = response.json()["id"]
        task = _wait(succeeded, 90, f"task {task_id} to succeed after a worker restart", proc, log)
        assert task["result"] == {"args": ["again"], "kwargs": {}}
        children = _started_by(proc.pid, data_dir)

        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(40)
        except subprocess.TimeoutExpired:
            pytest.fail(f"standalone did not exit within 40s of SIGTERM:\n{_log_tail(log)}")
        print(f"stopped in {time.monotonic() - stopping:.1f}s")
        assert code == 0, _log_tail(log)
        deadline = time.monotonic() + 5
        while any(_alive(child) for child in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [_describe(child) for child in children if _alive(child)]
        assert not left, "still running after standalone exited:\n" + "\n".join(left)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                children = children or _started_by(proc.pid, data_dir)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _terminate([*children, *_by_data_dir(data_dir)])
        print(_log_tail(log, 200))
