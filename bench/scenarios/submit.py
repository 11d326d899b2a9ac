"""1. Single submit: the API under concurrent load vs a bare Flask endpoint vs an apply_async loop.

Both HTTP sides run under gunicorn with the same settings and receive the same load (threads
with one keep-alive connection each). Their tasks go to queues no worker consumes, emptied after
every repetition, so no worker competes for the two cores while requests are measured.
"""

from __future__ import annotations

import json
import time

from bench.environment import GUNICORN_SETTINGS, OURS_SINK, RAW_SINK, Environment
from bench.load import post_load
from bench.plan import Plan
from bench.raw_app import NOOP
from bench.report import Row, Target, percentile
from bench.services import BenchError

TITLE = "single submit"


def raw_loop(env: Environment, count: int) -> float:
    """apply_async of a no-op ``count`` times in one thread; tasks per second."""
    noop = env.raw_app.tasks[NOOP]
    began = time.perf_counter()
    for index in range(count):
        noop.apply_async(args=[index], queue=RAW_SINK)
    return count / (time.perf_counter() - began)


def run(env: Environment, plan: Plan) -> list[Row]:
    """Rows 1a to 1c."""
    conns = plan.submit_connections
    api = Row(
        "1a",
        f"submit, 1 task/request, {conns} conns: API vs bare Flask+apply_async",
        "req/s",
        target=Target("ratio>=", 0.6),
    )
    loop = Row("1b", "submit: API vs raw apply_async loop (1 thread)", "tasks/s")
    latency = Row("1c", "submit request p50 under that load: API vs bare Flask", "ms")
    ours_body = json.dumps({"task": "demo.echo", "args": [1], "queue": OURS_SINK}).encode()
    bare_body = json.dumps({"args": [1]}).encode()
    sides = (
        ("ours", env.ours_url("/api/v1/tasks"), ours_body, env.auth),
        ("bare", env.bare_url("/submit"), bare_body, {}),
    )
    for _ in range(plan.reps):
        results = {}
        for side, url, body, headers in sides:
            common = dict(connections=conns)
            post_load(url, body, headers, max_requests=plan.submit_warmup, max_seconds=10, **common)
            result = post_load(
                url,
                body,
                headers,
                max_requests=plan.submit_requests,
                max_seconds=plan.submit_seconds,
                **common,
            )
            if result.errors:
                raise BenchError(
                    f"{side} submit: {result.errors} failed requests {result.statuses}"
                )
            results[side] = result
            env.purge_sinks()
        raw_rate = raw_loop(env, plan.raw_loop)
        env.purge_sinks()
        api.ours.append(results["ours"].rate)
        api.raw.append(results["bare"].rate)
        loop.ours.append(results["ours"].rate)
        loop.raw.append(raw_rate)
        latency.ours.append(percentile(results["ours"].latencies, 0.5) * 1000)
        latency.raw.append(percentile(results["bare"].latencies, 0.5) * 1000)
    api.note = (
        f"gunicorn {' '.join(GUNICORN_SETTINGS)} on both sides; {conns} client threads with "
        "keep-alive, "
        f"at most {plan.submit_requests} requests or {plan.submit_seconds:.0f} s per side and "
        "repetition; the bare endpoint parses the JSON body and calls apply_async, nothing else"
    )
    return [api, loop, latency]
