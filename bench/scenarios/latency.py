"""4. Latency: from submit to ``succeeded`` visible, one task at a time on idle workers.

Ours: POST /api/v1/tasks on a keep-alive connection, then poll the ledger row (a primary-key
read every 0.5 ms) until it says succeeded. Raw: ``apply_async`` and ``AsyncResult.get`` on the
Redis result backend (which is told by pub/sub, no polling). Polling adds half its interval on
average to ours, so the interval is kept short; the client is ``http.client``, as in the load
rows, so that the measuring tool's own cost stays small on both sides.
"""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit

import psycopg2

from bench.environment import OURS_QUEUE, RAW_QUEUE, Environment
from bench.plan import Plan
from bench.raw_app import STAMP
from bench.report import Row, Target, percentile
from bench.services import BenchError

TITLE = "latency"
POLL = 0.0005


def ours_latencies(env: Environment, count: int) -> list[float]:
    """Seconds from just before the POST to the first read that sees ``succeeded``."""
    dsn = env.db.url.replace("postgresql+psycopg2://", "postgresql://")
    out = []
    url = urlsplit(env.ours_url("/api/v1/tasks"))
    api = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    headers = {"Content-Type": "application/json", **env.auth}
    body = json.dumps({"task": "demo.echo", "args": [1], "queue": OURS_QUEUE}).encode()
    with psycopg2.connect(dsn) as conn:
        conn.autocommit = True
        cursor = conn.cursor()
        for _ in range(count):
            began = time.perf_counter()
            api.request("POST", url.path, body=body, headers=headers)
            response = api.getresponse()
            text = response.read()
            if response.status != 202:
                raise BenchError(f"submit: {response.status} {text[:200]!r}")
            task_id = json.loads(text)["id"]
            deadline = began + 30
            while True:
                cursor.execute("SELECT status FROM tasks WHERE id = %s", (task_id,))
                if cursor.fetchone()[0] == "succeeded":
                    break
                if time.perf_counter() > deadline:
                    raise BenchError(f"task {task_id} did not succeed within 30 s")
                time.sleep(POLL)
            out.append(time.perf_counter() - began)
    api.close()
    return out


def raw_latencies(env: Environment, count: int) -> list[float]:
    """Seconds from apply_async to the result, one task at a time."""
    stamp = env.raw_app.tasks[STAMP]
    out = []
    for _ in range(count):
        began = time.perf_counter()
        stamp.apply_async(queue=RAW_QUEUE).get(timeout=30)
        out.append(time.perf_counter() - began)
    return out


def run(env: Environment, plan: Plan) -> list[Row]:
    """Rows 4a and 4b."""
    p50 = Row(
        "4a",
        "latency submit -> succeeded visible, p50: ours (HTTP) vs raw",
        "ms",
        target=Target("ratio<=", 3.0),
    )
    p99 = Row("4b", "latency submit -> succeeded visible, p99: ours (HTTP) vs raw", "ms")
    # One of each first: connections, pool processes and result subscriptions warm up.
    ours_latencies(env, 2)
    raw_latencies(env, 2)
    for _ in range(plan.reps):
        ours = ours_latencies(env, plan.latency_samples)
        raw = raw_latencies(env, plan.latency_samples)
        p50.ours.append(percentile(ours, 0.5) * 1000)
        p50.raw.append(percentile(raw, 0.5) * 1000)
        p99.ours.append(percentile(ours, 0.99) * 1000)
        p99.raw.append(percentile(raw, 0.99) * 1000)
    p50.note = (
        f"{plan.latency_samples} sequential tasks per repetition and side on idle prefork -c 2 "
        f"workers; ours polls the ledger every {POLL * 1000:.1f} ms, raw waits on the Redis "
        "result backend (pub/sub)"
    )
    return [p50, p99]
