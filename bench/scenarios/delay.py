"""5. Delay precision: how late a task due in 2 s, and one due in 10 min, starts.

Lateness = when the worker started the task minus when it was due. Ours: the ledger's
``started_at`` (set by the claim) minus ``run_at``; raw: the time the task body read minus the
submit time plus the countdown. Due times are spread ``delay_spacing`` apart so that the row
measures the timer, not a queue of tasks all due at once.

"In 10 min": ours waits in PostgreSQL; the bench then calls the scheduler's ``promote_due`` with
its clock moved forward, which publishes the tasks with the ETA they keep on the real clock (as
if 10 minutes had passed). A raw ``countdown=600`` cannot be brought forward (the worker holds the
message and fires it with the same timer as in the 2 s row), so that row has no raw value.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta

import redis
import requests

from bench.environment import OURS_QUEUE, RAW_QUEUE, Environment
from bench.plan import Plan
from bench.probes import queue_keys, set_consuming
from bench.raw_app import STAMP
from bench.report import Row, Target, percentile
from bench.services import BenchError, wait_until
from scheduler_app.services.broker import layout

TITLE = "delay precision"
LEAD = 1.5  # seconds between the moved clock and the first due time


def _paced(count: int, spacing: float):
    began = time.perf_counter()
    for index in range(count):
        pause = began + index * spacing - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        yield index


def submit_ours(env: Environment, count: int, spacing: float, delay: float) -> list[str]:
    """POST ``count`` delayed demo.echo tasks, ``spacing`` apart; their ids."""
    ids = []
    with requests.Session() as http:
        for index in _paced(count, spacing):
            body = {"task": "demo.echo", "args": [index], "queue": OURS_QUEUE, "delay": delay}
            response = http.post(env.ours_url("/api/v1/tasks"), json=body, headers=env.auth)
            if response.status_code != 202:
                raise BenchError(f"submit: {response.status_code} {response.text[:200]}")
            ids.append(response.json()["id"])
    return ids


def wait_succeeded(env: Environment, ids: list[str], timeout: float = 60) -> list:
    """Rows (id, run_at, started_at) of the tasks once all succeeded."""
    uuids = [uuid.UUID(i) for i in ids]
    sql = "SELECT count(*) FROM tasks WHERE id = ANY(:ids) AND status = 'succeeded'"
    wait_until(
        lambda: env.ledger.scalar(sql, ids=uuids) == len(ids), timeout, 0.05, "delayed tasks"
    )
    return env.ledger.rows("SELECT run_at, started_at FROM tasks WHERE id = ANY(:ids)", ids=uuids)


def ours_two_seconds(env: Environment, plan: Plan) -> list[float]:
    """Lateness (s) of ours' tasks due in 2 s."""
    ids = submit_ours(env, plan.delay_tasks, plan.delay_spacing, 2.0)
    return [(r.started_at - r.run_at).total_seconds() for r in wait_succeeded(env, ids)]


def raw_two_seconds(env: Environment, plan: Plan) -> list[float]:
    """Lateness (s) of raw tasks with countdown=2."""
    stamp = env.raw_app.tasks[STAMP]
    sent = []
    for _ in _paced(plan.delay_tasks, plan.delay_spacing):
        due = time.time() + 2.0
        sent.append((stamp.apply_async(countdown=2, queue=RAW_QUEUE), due))
    return [result.get(timeout=30) - due for result, due in sent]


def message_etas(client: redis.Redis, queue: str) -> dict[str, datetime]:
    """Task id -> ETA of the messages waiting in ``queue`` (every priority list)."""
    etas = {}
    raws = [raw for key in queue_keys(queue) for raw in client.lrange(key, 0, -1)]
    # A worker whose consumer was being cancelled may still have taken one (celery's
    # cancel_consumer answers before its last fetch lands): it sits in the unacked hash.
    raws += [json.dumps(json.loads(raw)[0]) for raw in client.hvals(layout.UNACKED_KEY)]
    for raw in raws:
        headers = json.loads(raw)["headers"]
        if headers.get("eta"):
            etas[headers["id"]] = datetime.fromisoformat(headers["eta"])
    return etas


def ours_ten_minutes(env: Environment, plan: Plan) -> list[float]:
    """Lateness against the ETA the promoter gave each task on the real clock."""
    from scheduler_app.services.tasks.promoter import promote_due

    ids = submit_ours(env, plan.delay_tasks, plan.delay_spacing, 600.0)
    uuids = [uuid.UUID(i) for i in ids]
    first_due = env.ledger.scalar("SELECT min(run_at) FROM tasks WHERE id = ANY(:ids)", ids=uuids)
    moved_clock = first_due - timedelta(seconds=LEAD)
    # The worker pauses consuming for the few milliseconds it takes to read the released
    # messages' ETAs, so that each task's due time on the real clock is known exactly.
    app, nodes = env.control_app("ours"), [env.ours_worker.node]
    set_consuming(app, nodes, OURS_QUEUE, False)
    try:
        released = promote_due(
            env.ledger.sessions, env.ledger.dispatcher, env.ledger.settings, now=moved_clock
        )
        etas = message_etas(env.ours_redis(), OURS_QUEUE)
    finally:
        set_consuming(app, nodes, OURS_QUEUE, True)
    if released < len(ids) or not set(ids) & set(etas):
        raise BenchError(f"promote_due released {released} of {len(ids)} tasks")
    rows = (
        env.ledger.rows("SELECT id, started_at FROM tasks WHERE id = ANY(:ids)", ids=uuids)
        if wait_succeeded(env, ids)
        else []
    )
    return [(r.started_at - etas[str(r.id)]).total_seconds() for r in rows if str(r.id) in etas]


def run(env: Environment, plan: Plan) -> list[Row]:
    """Rows 5a to 5d."""
    rows = {
        "5a": Row("5a", "due in 2 s: lateness p50, ours vs raw countdown=2", "ms"),
        "5b": Row(
            "5b",
            "due in 2 s: lateness p99, ours vs raw countdown=2",
            "ms",
            target=Target("ours<=", 50),
        ),
        "5c": Row("5c", "due in 10 min (scheduler clock moved): lateness p50, ours", "ms"),
        "5d": Row(
            "5d",
            "due in 10 min (scheduler clock moved): lateness p99, ours",
            "ms",
            target=Target("ours<=", 50),
        ),
    }
    for _ in range(plan.slow_reps):
        ours = ours_two_seconds(env, plan)
        raw = raw_two_seconds(env, plan)
        late = ours_ten_minutes(env, plan)
        for key, q in (("5a", 0.5), ("5b", 0.99)):
            rows[key].ours.append(percentile(ours, q) * 1000)
            rows[key].raw.append(percentile(raw, q) * 1000)
        for key, q in (("5c", 0.5), ("5d", 0.99)):
            rows[key].ours.append(percentile(late, q) * 1000)
    rows["5a"].note = (
        f"{plan.delay_tasks} tasks per repetition and side, due {plan.delay_spacing * 1000:.0f} ms "
        "apart; ours: ledger started_at (the claim) - run_at; raw: time read by the task - due"
    )
    rows["5c"].note = (
        "ours waits in PostgreSQL, then promote_due(now=due - 1.5 s) releases it with its ETA "
        "on the real clock (read from the released message); raw n/a: a "
        "countdown=600 message cannot be brought forward, the worker would hold it 10 min and "
        "fire it with the same timer as row 5b"
    )
    return list(rows.values())
