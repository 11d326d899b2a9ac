"""The `scheduler` client CLI against a live API (real gunicorn) and a real worker.

Most commands run in-process through click's CliRunner (the same code as the console script,
without an interpreter start per command); the exit-code contract of ``submit --wait`` and the
usage errors also run as real processes (``python -m scheduler_cli``). The samples/ payloads are
what the CLI submits, so a sample the API stops accepting fails here.

Negative control: ``SCHEDULER_CLI_NEGATIVE_CONTROL=1`` makes the CLI's wait ignore the task's
outcome (exit 0 whatever it ended as): the failing-task test must then fail.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from scheduler_cli.main import cli
from tests.api_server import ApiServer
from tests.support import Stack

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"


class Live:
    """The stack, its API URL and the credentials of an admin and a submitter."""

    def __init__(self, stack: Stack, api: ApiServer, config_home: Path) -> None:
        self.stack = stack
        self.url = api.url
        self.config_home = config_home
        admin, admin_secret = stack.ext.clients.create("cli-admin", "admin")
        self.admin = (admin.client_id, admin_secret)
        submitter, submitter_secret = stack.ext.clients.create("cli-submitter", "submitter")
        self.submitter = (submitter.client_id, submitter_secret)
        self.runner = CliRunner()

    @property
    def env(self) -> dict[str, str]:
        return {"XDG_CONFIG_HOME": str(self.config_home), "SCHEDULER_CLI_PROFILE": ""}

    def run(self, *args: str, code: int | None = 0, stdin: str | None = None) -> Any:
        result = self.runner.invoke(cli, list(args), env=self.env, input=stdin)
        if code is not None:
            assert result.exit_code == code, (
                args,
                result.exit_code,
                result.stdout,
                result.stderr,
                result.exception,
            )
        return result

    def json(self, *args: str) -> Any:
        result = self.run(*args, "--json")
        return json.loads(result.stdout)

    def process(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """The CLI as its own process, as the console script runs it."""
        env = {**os.environ, **self.env, "PYTHONPATH": str(ROOT)}
        return subprocess.run(
            [sys.executable, "-m", "scheduler_cli", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=ROOT,
            check=False,
        )

    def login(self, credentials: tuple[str, str], profile: str = "default") -> None:
        client_id, secret = credentials
        self.run(
            "login", "--url", self.url, "--client-id", client_id, "--client-secret", secret,
            "--profile", profile,
        )  # fmt: skip


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    workdir = tmp_path_factory.mktemp("cli")
    logdir = tmp_path_factory.mktemp("cli-logs")
    stack = Stack(workdir, logdir)
    api = None
    try:
        stack.worker("default,high,low", 2)
        api = ApiServer(stack.env, logdir, workers=1).start()
        live = Live(stack, api, workdir / "config")
        live.login(live.admin)
        yield live
    finally:
        if api is not None:
            api.stop()
        stack.close()


def sample(path: str) -> str:
    return str(SAMPLES / path)


def test_login_keeps_the_token_private_in_the_config_dir(live: Live) -> None:
    config = live.config_home / "scheduler" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    stored = json.loads(config.read_text())
    assert stored["current"] == "default"
    session = stored["profiles"]["default"]
    assert session["url"] == live.url and session["client_id"] == live.admin[0]
    assert session["access_token"] and session["refresh_token"]
    assert live.admin[1] not in config.read_text(), "the client secret is never stored"


def test_wrong_secret_is_an_api_error(live: Live) -> None:
    result = live.run(
        "login", "--url", live.url, "--client-id", live.admin[0], "--client-secret", "wrong",
        "--profile", "bad", code=3,
    )  # fmt: skip
    assert "401" in result.stderr


def test_submit_wait_of_a_succeeding_task_exits_0_with_json(live: Live) -> None:
    result = live.process("submit", "--file", sample("tasks/echo.json"), "--wait", "--json")
    assert result.returncode == 0, result.stderr
    task = json.loads(result.stdout)  # the API's JSON, nothing else
    assert task["status"] == "succeeded"
    assert task["result"] == {"args": [1, 2], "kwargs": {"hello": "world"}}
    assert "succeeded" in result.stderr, "the progress goes to stderr"


def test_submit_wait_of_a_failing_task_exits_1(live: Live) -> None:
    result = live.process("submit", "--file", sample("tasks/fail.json"), "--wait")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "failed" in result.stdout and "DemoFailure" in result.stdout


def test_usage_errors_exit_2(live: Live) -> None:
    for args in (
        ["submit", "demo.echo", "--delay", "5", "--run-at", "2030-01-01T00:00:00Z"],
        ["submit", "demo.echo", "--args", "{not json"],
    ):
        result = live.process(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stdout == "", args
    for args in (
        ["submit", "demo.echo", "--kwargs", "[1]"],
        ["list", "--limit", "0"],
        ["no-such-command"],
        ["dlq", "replay"],
        ["dlq", "purge", "--yes"],
        ["workers", "scale", "w@host", "0"],
    ):
        result = live.run(*args, code=2)
        assert result.stdout == "", args


def test_api_errors_exit_3(live: Live) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    result = live.run("get", missing, code=3)
    assert "404" in result.stderr
    result = live.run("submit", "no.such.type", code=3)
    assert "422" in result.stderr
    result = live.run("--profile", "nobody", "list", code=3)
    assert "not logged in" in result.stderr
    # A submitter asking for the DLQ: 403.
    live.login(live.submitter, profile="submitter")
    result = live.run("--profile", "submitter", "dlq", "list", code=3)
    assert "403" in result.stderr


def test_revoked_session_is_an_api_error_401(live: Live) -> None:
    live.login(live.submitter, profile="revoked")
    config = live.config_home / "scheduler" / "config.json"
    live.run("--profile", "revoked", "logout")
    assert "revoked" not in json.loads(config.read_text())["profiles"]
    # Put the revoked tokens back: the API refuses both, the refresh too.
    live.login(live.submitter, profile="revoked")
    stored = json.loads(config.read_text())
    tokens = dict(stored["profiles"]["revoked"])
    live.run("--profile", "revoked", "logout")
    stored = json.loads(config.read_text())
    stored["profiles"]["revoked"] = tokens
    config.write_text(json.dumps(stored))
    result = live.run("--profile", "revoked", "list", code=3)
    assert "401" in result.stderr and "scheduler login" in result.stderr


def test_expired_access_token_is_refreshed(live: Live) -> None:
    config = live.config_home / "scheduler" / "config.json"
    stored = json.loads(config.read_text())
    before = stored["profiles"]["default"]
    stored["profiles"]["default"] = {**before, "expires_at": time.time() - 1}
    config.write_text(json.dumps(stored))
    live.json("list", "--limit", "1")
    after = json.loads(config.read_text())["profiles"]["default"]
    assert after["access_token"] != before["access_token"]
    assert after["refresh_token"] != before["refresh_token"]
    assert after["expires_at"] > time.time() + 60
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    # A token the API refuses (e.g. the server's clock ran ahead): one refresh, then retried.
    stored = json.loads(config.read_text())
    stored["profiles"]["default"]["access_token"] = "not-a-token"
    config.write_text(json.dumps(stored))
    assert live.json("list", "--limit", "1")["items"]


def test_get_list_events_cancel(live: Live) -> None:
    created = live.json("submit", "--file", sample("tasks/delayed.json"))
    assert created["status"] == "scheduled"
    task_id = created["id"]
    assert live.json("get", task_id)["id"] == task_id
    page = live.json("list", "--status", "scheduled", "--task", "demo.flaky", "--limit", "5")
    assert task_id in [item["id"] for item in page["items"]]
    table = live.run("list", "--status", "scheduled").stdout
    assert task_id[:8] in table and "demo.flaky" in table
    timeline = live.json("events", task_id)
    assert [event["status"] for event in timeline] == ["scheduled"]
    assert "scheduled" in live.run("events", task_id).stdout
    cancelled = live.json("cancel", task_id)
    assert cancelled["status"] == "cancelled"
    again = live.run("cancel", task_id, code=3)
    assert "409" in again.stderr
    # the table view of a task
    assert "cancelled" in live.run("get", task_id).stdout
    # flags over a body from stdin
    body = json.dumps({"task": "demo.echo", "args": ["stdin"]})
    created = json.loads(
        live.run("submit", "--file", "-", "--priority", "9", "--json", stdin=body).stdout
    )
    assert (created["args"], created["priority"]) == (["stdin"], 9)


def test_dlq_list_show_replay_purge(live: Live) -> None:
    failed = json.loads(
        live.run("submit", "--file", sample("tasks/fail.json"), "--wait", "--json", code=1).stdout
    )
    page = live.json("dlq", "list", "--task", "demo.fail")
    (letter,) = [item for item in page["items"] if item["task_id"] == failed["id"]]
    shown = live.json("dlq", "show", letter["id"])
    assert shown["error_type"] == "DemoFailure" and "Traceback" in shown["traceback"]
    assert "DemoFailure" in live.run("dlq", "show", letter["id"]).stdout
    assert letter["id"][:8] in live.run("dlq", "list").stdout

    dry = live.json("dlq", "replay", "--task", "demo.fail", "--dry-run")
    assert dry["count"] >= 1 and dry["task_ids"] == []
    replayed = live.json("dlq", "replay", letter["id"])
    assert replayed["replay_of"] == failed["id"]
    again = live.run("dlq", "replay", letter["id"], code=3)
    assert "409" in again.stderr

    purged = live.json("dlq", "purge", "--task", "demo.fail", "--yes")
    assert purged["count"] >= 1
    assert live.json("dlq", "list", "--task", "demo.fail")["items"] == [] or all(
        item["task_id"] != failed["id"]
        for item in live.json("dlq", "list", "--task", "demo.fail")["items"]
    )


def test_workflow_submit_get_list_graph(live: Live) -> None:
    created = live.json("workflow", "submit", sample("workflows/diamond.json"))
    workflow_id = created["id"]
    assert set(created["nodes"]) == {"extract", "left", "right", "load"}
    deadline = time.monotonic() + 60
    while (current := live.json("workflow", "get", workflow_id))["status"] != "succeeded":
        assert current["status"] in {"pending", "running"}, current
        assert time.monotonic() < deadline, current
        time.sleep(0.3)
    load = live.json("get", current["nodes"]["load"]["task_id"])
    assert load["result"] == (3 + 10) + (3 + 100)
    assert workflow_id in [item["id"] for item in live.json("workflow", "list")["items"]]
    assert "load" in live.run("workflow", "get", workflow_id).stdout
    graph = live.run("workflow", "graph", workflow_id).stdout
    assert graph.startswith(("flowchart", "graph")) and "extract" in graph
    assert live.json("workflow", "graph", workflow_id)["mermaid"].strip() == graph.strip()
    result = live.run("workflow", "cancel", workflow_id, code=3)
    assert "409" in result.stderr


def test_schedule_create_list_get_pause_resume_trigger_delete(live: Live) -> None:
    created = live.json("schedule", "create", "--file", sample("schedules/cron.json"))
    schedule_id = created["id"]
    assert created["next_run_at"] and created["enabled"] is True
    by_flags = live.json(
        "schedule", "create", "--name", "cli-interval", "--task", "demo.echo",
        "--interval", "3600", "--disabled",
    )  # fmt: skip
    assert by_flags["enabled"] is False and by_flags["interval"] == 3600
    listed = [item["id"] for item in live.json("schedule", "list")["items"]]
    assert {schedule_id, by_flags["id"]} <= set(listed)
    assert "sample-nightly-report" in live.run("schedule", "list").stdout
    assert live.json("schedule", "get", schedule_id)["cron"] == "0 3 * * *"
    assert live.json("schedule", "pause", schedule_id)["enabled"] is False
    assert live.json("schedule", "resume", schedule_id)["enabled"] is True
    fired = live.json("schedule", "trigger", schedule_id)
    task = live.json("get", fired["task_id"])
    assert task["schedule_id"] == schedule_id
    live.run("schedule", "delete", by_flags["id"])
    result = live.run("schedule", "get", by_flags["id"], code=3)
    assert "404" in result.stderr
    result = live.run("schedule", "create", "--name", "x", "--task", "demo.echo", code=3)
    assert "422" in result.stderr  # neither cron nor interval


def test_cli_imports_no_server_code() -> None:
    """HTTP only: importing the CLI loads neither the app nor a database or broker client."""
    probe = (
        "import sys, scheduler_cli.main; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'flask', 'sqlalchemy', 'psycopg2', 'celery', 'kombu', 'redis', 'scheduler_app'}); "
        "print(bad)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == "[]"


def test_console_script_is_declared() -> None:
    import configparser

    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    scripts = setup["options.entry_points"]["console_scripts"].strip().splitlines()
    assert "scheduler = scheduler_cli.main:main" in [line.strip() for line in scripts]


def test_explain_workers_and_queues(live: Live) -> None:
    """The operator commands against the live API's workers and queues endpoints."""
    created = live.json("submit", "--file", sample("tasks/delayed.json"))
    explained = live.json("explain", created["id"])
    assert explained["status"] == "scheduled"
    assert "scheduled" in [reason["code"] for reason in explained["reasons"]]
    assert "scheduled" in live.run("explain", created["id"]).stdout
    workers = live.json("workers", "list")["items"]
    online = [w for w in workers if w["status"] == "online"]
    assert online, workers
    name = online[0]["name"]
    assert name.split("@")[0] in live.run("workers", "list").stdout
    assert live.json("workers", "pause", name)["status"] == "paused"
    assert live.json("workers", "resume", name)["status"] == "online"
    live.run("workers", "scale", name, "0", code=2)  # a usage error before any request
    assert live.json("workers", "scale", name, "2")["concurrency_setting"] == 2
    live.run("workers", "scale", name, "100000", code=3)  # the API's 422 (over its bound)
    queues = {q["name"]: q for q in live.json("queues", "list")["items"]}
    assert {"default", "high", "low"} <= set(queues)
    assert live.json("queues", "pause", "low")["paused"] is True
    assert live.json("queues", "resume", "low")["paused"] is False
    live.run("queues", "pause", "no-such-queue", code=3)  # the API's 404
    live.run("cancel", created["id"])
