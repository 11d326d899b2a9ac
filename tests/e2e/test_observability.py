"""What the people on call look at, on a real worker: Flower, the worker's /metrics, the logs.

One platform for the module: a prefork worker serving its own metrics, a Flower started the
way every launcher starts it (``python -m tasks.flower``), JSON logs.

Negative controls:
- ``SCHEDULER_TEST_REMOVE=flower-auth``: Flower's own handlers as they are; /metrics and
  /healthcheck answer without credentials and the auth test fails.
- ``SCHEDULER_TEST_REMOVE=flower-truth``: the worker reports every attempt as a success to
  Celery (as before); the failed task shows SUCCESS in Flower and that test fails.
- ``SCHEDULER_TEST_REMOVE=batch_events``: a batch sends no events for its extras (the messages
  its pool process took itself, services/tasks/batching.py); the extras test fails.
"""

from __future__ import annotations

import json
import os
import re
import sys

import pytest
import requests

from tests.e2e.test_failures import Client
from tests.support import Process, Stack, free_port, wait_until

pytestmark = pytest.mark.e2e

USER, PASSWORD = "oncall", "flower-password-for-tests"
PATHS = (
    "/",
    "/metrics",
    "/healthcheck",
    "/api/tasks",
    "/api/workers",
    "/api/task/info/00000000-0000-0000-0000-000000000000",
    "/tasks",
    "/workers",
    "/broker",
)


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    work = tmp_path_factory.mktemp("ops")
    stack = Stack(work, work, log_json=True, worker_metrics_port=free_port())
    # The negative controls reach the worker and Flower (Stack passes no SCHEDULER_* through).
    stack.env["SCHEDULER_TEST_REMOVE"] = os.environ.get("SCHEDULER_TEST_REMOVE", "")
    stack.metrics_port = stack.settings.worker_metrics_port
    stack.worker_process = stack.worker(queues="default", concurrency=2)
    port = free_port()
    flower = Process(
        "flower",
        [sys.executable, "-m", "tasks.flower", f"--port={port}", "--address=127.0.0.1"],
        {**stack.env, "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}"},
        work,
    ).start()
    stack.processes.append(flower)
    stack.flower_url = f"http://127.0.0.1:{port}"
    wait_until(
        lambda: _answers(f"{stack.flower_url}/healthcheck"), 60, 0.2, message="flower to answer"
    )
    stack.client = Client(stack)
    yield stack
    stack.close()


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=2)
        return True
    except requests.RequestException:
        return False


@pytest.mark.parametrize("path", PATHS)
def test_flower_refuses_every_path_without_credentials(platform, path):
    url = platform.flower_url + path
    assert requests.get(url, timeout=10).status_code == 401
    wrong = requests.get(url, auth=(USER, "wrong"), timeout=10)
    assert wrong.status_code == 401


def test_flower_answers_with_credentials(platform):
    auth = (USER, PASSWORD)
    assert requests.get(f"{platform.flower_url}/healthcheck", auth=auth, timeout=10).text == "OK"
    metrics = requests.get(f"{platform.flower_url}/metrics", auth=auth, timeout=10)
    assert metrics.status_code == 200 and "flower_" in metrics.text


def _flower_task(platform, task_id: str, state: str) -> dict:
    def info():
        response = requests.get(
            f"{platform.flower_url}/api/task/info/{task_id}", auth=(USER, PASSWORD), timeout=10
        )
        return (
            response.status_code == 200
            and response.json().get("state") == state
            and (response.json())
        )

    return wait_until(info, 60, 0.3, message=f"flower to show {task_id} as {state}")


def test_a_failed_task_shows_as_failed_in_flower(platform):
    # Flower turns the worker's events on (a broadcast every few seconds while it runs).
    platform.worker_process.wait_for_log("enabled by remote", 60)
    failed = platform.client.submit(
        task="demo.fail", args=["boom for flower"], retry={"max_retries": 0}
    )
    ok = platform.client.submit(task="demo.echo", args=["shown", 7], kwargs={"k": "v"})
    assert platform.client.wait(failed["id"])["status"] == "failed"
    assert platform.client.wait(ok["id"])["status"] == "succeeded"
    shown = _flower_task(platform, failed["id"], "FAILURE")
    assert "boom for flower" in (shown.get("exception") or "")
    succeeded = _flower_task(platform, ok["id"], "SUCCESS")
    # Its real arguments (the message's argsrepr/kwargsrepr), not the ledger id it carries.
    assert (succeeded["args"], succeeded["kwargs"]) == ("['shown', 7]", "{'k': 'v'}")
    assert shown["args"] == "['boom for flower']"


def test_worker_metrics_count_the_attempts_it_ran(platform):
    before = requests.get(f"http://127.0.0.1:{platform.metrics_port}/metrics", timeout=10).text
    n = 6
    ids = [platform.client.submit(task="demo.echo", args=[i])["id"] for i in range(n)]
    for task_id in ids:
        assert platform.client.wait(task_id)["status"] == "succeeded"

    def count(text: str, name: str, labels: str) -> float:
        found = re.search(rf"^{name}{{{labels}}} (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    run_labels = 'queue="default",task="demo.echo"'
    after = requests.get(f"http://127.0.0.1:{platform.metrics_port}/metrics", timeout=10).text
    ran = count(after, "scheduler_task_run_seconds_count", run_labels)
    assert ran - count(before, "scheduler_task_run_seconds_count", run_labels) == n
    assert count(after, "scheduler_task_wait_seconds_count", 'queue="default"') >= n
    assert re.search(r'^scheduler_worker_pool_processes\{worker="[^"]+"\} 2\.0$', after, re.M)
    assert "scheduler_worker_pool_busy{" in after


def test_log_lines_about_a_task_carry_its_context(platform):
    task = platform.client.submit(task="demo.fail", args=["logged"], retry={"max_retries": 0})
    assert platform.client.wait(task["id"])["status"] == "failed"

    def lines() -> list[dict]:
        out = []
        for line in platform.worker_process.log().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("task_id") == task["id"]:
                out.append(entry)
        return out

    mine = wait_until(lambda: lines() or None, 20, 0.2, message="the worker's lines")
    for entry in mine:
        assert entry["attempt"] == 1 and entry["worker"] and "request_id" in entry, entry
        assert entry["queue"] == "default" and entry["task"] == "demo.fail", entry
    failed = [e for e in mine if e["message"] == "task failed"]
    assert failed and failed[0]["error_type"] == "DemoFailure", mine


def test_the_extras_of_a_batch_show_in_flower(platform):
    """Tasks a pool process took with the message Celery gave it show as Celery's own do."""
    from scheduler_app.models import WorkerInstance
    from scheduler_app.services.tasks.batching import active_key

    platform.worker_process.wait_for_log("enabled by remote", 60)
    for i in range(12):  # each pool process sees demo.echo run short
        done = platform.client.wait(platform.client.submit(task="demo.echo", args=[i])["id"])
        assert done["status"] == "succeeded"
    bodies = [{"task": "demo.echo", "args": ["extra", i]} for i in range(12)]
    ids = [t["id"] for t in platform.client.batch(bodies)]
    for task_id in ids:
        assert platform.client.wait(task_id)["status"] == "succeeded"
    with platform.ext.tasks.sessions() as session:
        instances = session.query(WorkerInstance.id).all()
    redis = platform.redis.client()
    extras = sum(int(redis.hget(active_key(i), "processed") or 0) for (i,) in instances)
    assert extras > 0, "no batch ran: this test would not show anything"
    for index, task_id in enumerate(ids):
        shown = _flower_task(platform, task_id, "SUCCESS")
        assert shown["args"] == f"['extra', {index}]" and shown["name"] == "demo.echo"
