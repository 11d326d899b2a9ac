"""2. Bulk submit: POST /api/v1/tasks/batch with 100 and 1000 tasks vs an apply_async loop."""

from __future__ import annotations

import json
import time

import requests

from bench.environment import OURS_SINK, Environment
from bench.plan import Plan
from bench.report import Row, Target
from bench.scenarios.submit import raw_loop
from bench.services import BenchError

TITLE = "bulk submit"


def batch_rate(env: Environment, size: int, requests_count: int) -> float:
    """Tasks per second of ``requests_count`` sequential batch requests of ``size`` tasks."""
    body = json.dumps(
        {"tasks": [{"task": "demo.echo", "args": [i], "queue": OURS_SINK} for i in range(size)]}
    )
    headers = {**env.auth, "Content-Type": "application/json"}
    url = env.ours_url("/api/v1/tasks/batch")
    with requests.Session() as session:
        began = time.perf_counter()
        for _ in range(requests_count):
            response = session.post(url, data=body, headers=headers, timeout=120)
            if response.status_code != 202:
                raise BenchError(f"batch of {size}: {response.status_code} {response.text[:300]}")
        rate = size * requests_count / (time.perf_counter() - began)
    env.purge_sinks()
    return rate


def run(env: Environment, plan: Plan) -> list[Row]:
    """Rows 2a and 2b."""
    small = Row("2a", "batch submit, 100 tasks/request: API vs raw apply_async loop", "tasks/s")
    large = Row(
        "2b",
        "batch submit, 1000 tasks/request: API vs raw apply_async loop",
        "tasks/s",
        target=Target("ratio>=", 2.5),
    )
    batch_rate(env, 100, 1)  # warm-up: connections, code paths
    for _ in range(plan.reps):
        small.ours.append(batch_rate(env, 100, plan.batch100_requests))
        large.ours.append(batch_rate(env, 1000, plan.batch1000_requests))
        rate = raw_loop(env, plan.raw_loop)
        env.purge_sinks()
        small.raw.append(rate)
        large.raw.append(rate)
    large.note = "one client, sequential requests; the raw loop is one thread of apply_async"
    return [small, large]
