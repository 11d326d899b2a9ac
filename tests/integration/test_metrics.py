"""/metrics counts right whichever of 4 gunicorn processes answers (DESIGN.md section 8).

Submit N tasks over N connections (gunicorn spreads them over its processes), then scrape over
fresh connections: every answer shows exactly N more submissions, both in the ledger-derived
counter and in the exporter's HTTP counter that each process increments for itself.

Negative control: ``SCHEDULER_TEST_CONTROL=metrics-single-process`` runs gunicorn without the
multiprocess directory; a scrape then sees one process's HTTP counter and the test fails.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import time
import uuid

import pytest
import requests

from tests.api_server import ApiServer
from tests.support import Stack, wait_until

TOKEN = "scrape-token-for-the-metrics-test-0123456789"
N = 24


@pytest.fixture(scope="module")
def platform(tmp_path_factory, logdir):
    """A ledger of its own: the session's scheduler fires other tests' schedules meanwhile,
    and a task created by anyone else during the test would count too."""
    stack = Stack(tmp_path_factory.mktemp("metrics"), logdir)
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def make_client(platform, server):
    """The Authorization headers of a new client of ``role``, from the platform's API."""

    def make(role: str = "submitter") -> dict[str, str]:
        client, secret = platform.ext.clients.create(f"metrics-{uuid.uuid4().hex[:6]}", role)
        token = requests.post(
            f"{server.url}/api/v1/auth/token",
            json={"client_id": client.client_id, "client_secret": secret},
            timeout=30,
        ).json()["access_token"]
        return {"Authorization": f"Bearer {token}"}

    return make


@pytest.fixture(scope="module")
def server(platform, logdir):
    env = {
        **platform.env,
        "SCHEDULER_METRICS_TOKEN": TOKEN,
        "SCHEDULER_METRICS_CACHE_SECONDS": "1",
        "SCHEDULER_LOG_JSON": "true",
    }
    api = ApiServer(env, logdir, workers=4).start()
    yield api
    api.stop()


def scrape(url: str) -> str:
    # A new connection each time: gunicorn hands it to whichever process accepts first.
    response = requests.get(
        f"{url}/metrics",
        headers={"Authorization": f"Bearer {TOKEN}", "Connection": "close"},
        timeout=30,
    )
    assert response.status_code == 200, response.text[:300]
    return response.text


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the series ``name{labels}`` in an exposition (0 when absent)."""
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        metric, _, rest = series.partition("{")
        if metric == name and dict(re.findall(r'(\w+)="([^"]*)"', rest)) == labels:
            return float(value)
    return 0.0


SUBMITS = {"method": "POST", "status": "202"}


def test_submit_n_and_every_scrape_counts_n_more(server, make_client):
    headers = {**make_client("submitter"), "Connection": "close"}
    before = scrape(server.url)
    submitted0 = sample(before, "scheduler_tasks_submitted_total", queue="low", task="demo.echo")
    http0 = sample(before, "scheduler_api_http_request_total", **SUBMITS)

    def submit(i: int) -> int:
        return requests.post(
            f"{server.url}/api/v1/tasks",
            json={"task": "demo.echo", "queue": "low", "args": [i]},
            headers=headers,
            timeout=30,
        ).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert set(pool.map(submit, range(N))) == {202}
    time.sleep(1.2)  # past the ledger cache of every process

    for _ in range(8):
        text = scrape(server.url)
        submitted = sample(text, "scheduler_tasks_submitted_total", queue="low", task="demo.echo")
        http = sample(text, "scheduler_api_http_request_total", **SUBMITS)
        assert submitted - submitted0 == N
        assert http - http0 == N, "the HTTP counter must sum every gunicorn process"
    # The ledger's own series are there, for every configured queue.
    for queue in ("default", "high", "low"):
        assert f'scheduler_queue_depth{{queue="{queue}"}}' in text
        assert f'scheduler_required_workers{{queue="{queue}"}}' in text
        assert f'scheduler_queue_paused{{queue="{queue}"}} 0.0' in text
    assert sample(text, "scheduler_queue_depth", queue="low") >= N
    assert sample(text, "scheduler_tasks", queue="low", status="queued") >= N
    assert sample(text, "scheduler_queue_oldest_age_seconds", queue="low") > 0
    assert sample(text, "scheduler_metrics_ledger_up") == 1.0
    assert 'scheduler_workers{status="online"}' in text


def test_gunicorn_access_lines_are_json_with_the_request_id(server, make_client):
    request_id = uuid.uuid4().hex
    response = requests.post(
        f"{server.url}/api/v1/tasks",
        json={"task": "demo.echo", "queue": "low"},
        headers={**make_client("submitter"), "X-Request-ID": request_id},
        timeout=30,
    )
    assert response.status_code == 202

    def access_line():
        for line in server.process.log().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("logger") == "gunicorn.access" and entry.get("request_id") == request_id:
                return entry
        return None

    entry = wait_until(access_line, 10, 0.1, message="the access line")
    assert entry["method"] == "POST" and entry["path"] == "/api/v1/tasks"
    assert entry["status"] == 202 and entry["duration_ms"] >= 0 and entry["level"] == "info"
