"""The Postman collection (docs/postman/) is a living test: newman runs every request against a
live `manage.py standalone` (on this test's own PostgreSQL database and redis-server), and every
request's tests pass.

newman comes from the npm registry through the repository's package.json (`make tools` runs
`npm ci`); a missing newman fails the test.

Negative control: ``SCHEDULER_POSTMAN_NEGATIVE_CONTROL=1`` runs the collection with a wrong
admin secret: the token request's tests, and every one after it, must fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import support
from tests.support import RedisServer, free_port, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
POSTMAN = ROOT / "docs" / "postman"
NEWMAN = ROOT / "node_modules" / ".bin" / "newman"
sys.path.insert(0, str(POSTMAN))
import build  # noqa: E402  (docs/postman/build.py)


class LiveStandalone:
    """`manage.py standalone` on a database and a redis-server of this module's own."""

    def __init__(self, workdir: Path) -> None:
        self.db = support.TestDatabase(prefix="sched_postman")
        self.redis = RedisServer(workdir)
        self.data_dir = workdir / "standalone"
        self.log = workdir / "standalone.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> LiveStandalone:
        self.db.create()
        self.redis.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
        env.update(
            SCHEDULER_DATABASE_URL=self.db.url,
            SCHEDULER_BROKER_URL=self.redis.url,
            PYTHONUNBUFFERED="1",
        )
        argv = [sys.executable, "manage.py", "standalone", "--port", str(free_port())]
        argv += ["--data-dir", str(self.data_dir), "--no-flower"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        state_file = self.data_dir / "standalone.json"

        def state() -> dict[str, Any] | None:
            assert self.proc.poll() is None, self.tail()
            with contextlib.suppress(OSError, ValueError):
                return json.loads(state_file.read_text())
            return None

        self.state = wait_until(state, 120, 0.25, message="standalone.json")
        self.url = self.state["api_url"]

        def ready() -> bool:
            assert self.proc.poll() is None, self.tail()
            with contextlib.suppress(requests.RequestException):
                return requests.get(f"{self.url}/readyz", timeout=2).status_code == 200
            return False

        wait_until(ready, 120, 0.25, message="standalone /readyz")
        return self

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-60:])

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.redis.stop()
        self.db.drop()


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStandalone]:
    live = LiveStandalone(tmp_path_factory.mktemp("postman"))
    try:
        yield live.start()
    finally:
        live.close()


def newman(standalone: LiveStandalone, report: Path, secret: str) -> dict[str, Any]:
    if not NEWMAN.exists():
        pytest.fail("newman is not installed: run `make tools` (npm ci, from package.json)")
    argv = [
        str(NEWMAN), "run", str(POSTMAN / "collection.json"),
        "--environment", str(POSTMAN / "environment.json"),
        "--env-var", f"baseUrl={standalone.url}",
        "--env-var", f"clientId={standalone.state['admin']['client_id']}",
        "--env-var", f"clientSecret={secret}",
        "--reporters", "cli,json", "--reporter-json-export", str(report),
        "--timeout-request", "30000", "--color", "off", "--disable-unicode",
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert report.exists(), result.stdout + result.stderr
    run = json.loads(report.read_text())["run"]
    run["output"] = result.stdout[-20000:] + result.stderr[-5000:]
    run["returncode"] = result.returncode
    return run


def test_collection_is_built_from_the_samples_and_current() -> None:
    result = subprocess.run(
        [sys.executable, str(POSTMAN / "build.py"), "--check"],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_collection_covers_every_operation_with_tests() -> None:
    operations = build.api_operations()
    missing = sorted(operations - build.covered())
    assert not missing, f"operations without a request in docs/postman/build.py: {missing}"
    collection = json.loads((POSTMAN / "collection.json").read_text())
    for folder in collection["item"]:
        for item in folder["item"]:
            (tests,) = [e for e in item["event"] if e["listen"] == "test"]
            assert any("pm.test(" in line for line in tests["script"]["exec"]), item["name"]


def test_newman_runs_the_collection_green(standalone: LiveStandalone, tmp_path: Path) -> None:
    secret = standalone.state["admin"]["client_secret"]
    if os.environ.get("SCHEDULER_POSTMAN_NEGATIVE_CONTROL") == "1":
        secret = "wrong-secret"
    started = time.monotonic()
    run = newman(standalone, tmp_path / "newman.json", secret)
    took = time.monotonic() - started
    failures = [
        f"{failure['source'].get('name')}: {failure['error'].get('message')}"
        for failure in run["failures"]
    ]
    assert not failures, "\n".join(failures) + "\n" + run["output"]
    assert run["returncode"] == 0, run["output"]
    collection = json.loads((POSTMAN / "collection.json").read_text())
    names = {item["name"] for folder in collection["item"] for item in folder["item"]}
    executed = {execution["item"]["name"] for execution in run["executions"]}
    assert executed == names, names - executed
    untested = [e["item"]["name"] for e in run["executions"] if not e.get("assertions")]
    assert not untested, untested
    print(f"newman: {len(run['executions'])} executions in {took:.1f}s")


def readme_block(heading: str) -> str:
    """The first ```sh block after `heading` in the README."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(f"\n{heading}\n") :]
    start = section.index("```sh\n") + len("```sh\n")
    return section[start : section.index("```\n", start)]


def test_readme_cli_commands_work_against_make_run(
    standalone: LiveStandalone, tmp_path: Path
) -> None:
    """The README's "Client CLI" commands, run as written beside a running standalone (the
    checkout's .standalone and .venv/bin/scheduler stand in for make run's)."""
    checkout = tmp_path / "checkout"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / ".standalone").symlink_to(standalone.data_dir)
    (checkout / "samples").symlink_to(ROOT / "samples")
    script = checkout / ".venv" / "bin" / "scheduler"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -m scheduler_cli "$@"\n')
    script.chmod(0o755)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")},
        "PYTHONPATH": str(ROOT),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    result = subprocess.run(
        ["bash", "-c", readme_block("## Client CLI")],
        cwd=checkout, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "logged in to" in output and "exit 1" in output, output
    assert "succeeded" in output and '"world"' in output, output
    dead_letters = json.loads(result.stdout[result.stdout.index('{\n  "items"') :])
    assert dead_letters["items"], output


def test_every_sample_is_used_by_the_collection_or_the_cli_tests() -> None:
    """A sample nothing sends would rot unnoticed."""
    users = (POSTMAN / "build.py").read_text() + (ROOT / "tests/e2e/test_cli.py").read_text()
    users += (ROOT / "README.md").read_text()
    for path in sorted((ROOT / "samples").rglob("*.json")):
        relative = path.relative_to(ROOT / "samples").as_posix()
        assert f'"{relative}"' in users or f"samples/{relative}" in users, relative
        json.loads(path.read_text())
    assert sorted(p.name for p in (ROOT / "samples" / "logs").iterdir()) == [
        "api.log", "worker.log",
    ]  # fmt: skip
