"""8. Workflows: a fan-in of no-op nodes into one join, and a long chain, ours vs Celery canvas.

8a: one workflow of ``fanin_nodes`` demo.sum nodes and a demo.sum join depending on all of them
(``POST /api/v1/workflows``), timed from just before the POST to the join's ``succeeded`` in the
ledger (a primary-key read every 2 ms); raw: ``chord(group(fanin_nodes x part), join)`` on the
Redis result backend, timed from just before ``apply_async`` to the join's result. Same worker
settings on both sides (prefork -c 2, acks_late, prefetch 1).

8b, 8c: one chain of ``chain_levels`` nodes, each depending on the one before. Per-level release
latency = a node's first attempt's start (``runs.started_at``, the worker's claim) minus its
parent's ``finished_at`` (the worker's end of the parent, committed with its release): what the
ledger's decision, the publish and the worker's pick-up cost per level. Raw: ``chain`` of
``chain_levels`` hops, each measuring its start minus the previous hop's end (``time.time()`` in
the task body, carried along in the results).
"""

from __future__ import annotations

import itertools
import time
import uuid

import psycopg2
import requests
from celery import chain, chord, group

from bench.environment import OURS_QUEUE, RAW_QUEUE, Environment
from bench.plan import Plan
from bench.raw_app import HOP, JOIN, PART
from bench.report import Row, Target, percentile
from bench.services import BenchError

TITLE = "workflows"
POLL = 0.002
TIMEOUT = 300.0


def _post_workflow(env: Environment, http: requests.Session, name: str, nodes: list) -> dict:
    response = http.post(
        env.ours_url("/api/v1/workflows"),
        json={"name": name, "nodes": nodes},
        headers=env.auth,
        timeout=120,
    )
    if response.status_code != 202:
        raise BenchError(f"workflow submit: {response.status_code} {response.text[:300]}")
    return response.json()


def _wait_status(cursor, task_id: str, began: float, status: str = "succeeded") -> float:
    """Seconds from ``began`` until the task reads ``status`` in the ledger."""
    while True:
        cursor.execute("SELECT status FROM tasks WHERE id = %s", (task_id,))
        current = cursor.fetchone()[0]
        if current == status:
            return time.perf_counter() - began
        if current in ("failed", "cancelled", "upstream_failed", "skipped"):
            raise BenchError(f"task {task_id} ended {current}")
        if time.perf_counter() - began > TIMEOUT:
            raise BenchError(f"task {task_id} not {status} after {TIMEOUT:.0f}s")
        time.sleep(POLL)


def _dsn(env: Environment) -> str:
    return env.db.url.replace("postgresql+psycopg2://", "postgresql://")


def ours_fanin(env: Environment, parents: int) -> float:
    """Seconds from the POST of a fan-in workflow to its join's success."""
    ids = [f"n{i}" for i in range(parents)]
    nodes = [{"id": i, "task": "demo.sum", "queue": OURS_QUEUE} for i in ids]
    nodes.append({"id": "join", "task": "demo.sum", "queue": OURS_QUEUE, "depends_on": ids})
    with requests.Session() as http, psycopg2.connect(_dsn(env)) as conn:
        conn.autocommit = True
        began = time.perf_counter()
        workflow = _post_workflow(env, http, "fanin", nodes)
        return _wait_status(conn.cursor(), workflow["nodes"]["join"]["task_id"], began)


def raw_fanin(env: Environment, parents: int) -> float:
    """Seconds from applying ``chord(group(parents x part), join)`` to the join's result."""
    app = env.raw_app
    header = group(app.signature(PART, queue=RAW_QUEUE) for _ in range(parents))
    body = app.signature(JOIN, queue=RAW_QUEUE)
    began = time.perf_counter()
    result = chord(header, app=app)(body)
    if result.get(timeout=TIMEOUT) != 0:
        raise BenchError("the chord's join did not sum its header")
    elapsed = time.perf_counter() - began
    result.forget()
    return elapsed


def ours_chain(env: Environment, levels: int) -> list[float]:
    """Per-level release latencies (s) of a chain workflow, from the ledger's timestamps."""
    nodes = [{"id": "l0", "task": "demo.sum", "queue": OURS_QUEUE}]
    nodes += [
        {"id": f"l{i}", "task": "demo.sum", "queue": OURS_QUEUE, "depends_on": [f"l{i - 1}"]}
        for i in range(1, levels)
    ]
    with requests.Session() as http, psycopg2.connect(_dsn(env)) as conn:
        conn.autocommit = True
        began = time.perf_counter()
        workflow = _post_workflow(env, http, "chain", nodes)
        _wait_status(conn.cursor(), workflow["nodes"][f"l{levels - 1}"]["task_id"], began)
    task_ids = [uuid.UUID(workflow["nodes"][f"l{i}"]["task_id"]) for i in range(levels)]
    rows = env.ledger.rows(
        "SELECT t.id, t.finished_at, r.started_at FROM tasks t "
        "JOIN runs r ON r.task_id = t.id AND r.attempt = 1 WHERE t.id = ANY(:ids)",
        ids=task_ids,
    )
    by_id = {row.id: row for row in rows}
    return [
        (by_id[child].started_at - by_id[parent].finished_at).total_seconds()
        for parent, child in itertools.pairwise(task_ids)
    ]


def raw_chain(env: Environment, levels: int) -> list[float]:
    """Per-level gaps (s) of a Celery chain: each hop's start minus the previous hop's end."""
    app = env.raw_app
    links = [app.signature(HOP, queue=RAW_QUEUE) for _ in range(levels)]
    result = chain(*links, app=app).apply_async()
    gaps = result.get(timeout=TIMEOUT)["gaps"]
    if len(gaps) != levels - 1:
        raise BenchError(f"the chain measured {len(gaps)} gaps, not {levels - 1}")
    return gaps


def run(env: Environment, plan: Plan) -> list[Row]:
    """Rows 8a, 8b and 8c."""
    fanin = Row(
        "8a",
        f"fan-in of {plan.fanin_nodes} no-op nodes into one join, submit -> join succeeded: "
        "ours vs chord",
        "s",
        target=Target("ratio<=", 1.5),
    )
    p50 = Row(
        "8b",
        f"{plan.chain_levels}-level chain: per-level release latency p50, ours vs Celery chain",
        "ms",
        target=Target("ours<=", 10.0),
    )
    p99 = Row(
        "8c",
        f"{plan.chain_levels}-level chain: per-level release latency p99, ours vs Celery chain",
        "ms",
    )
    # Warm up both sides (pool processes, connections, result subscriptions).
    ours_fanin(env, 3)
    raw_fanin(env, 3)
    for _ in range(plan.slow_reps):
        fanin.ours.append(ours_fanin(env, plan.fanin_nodes))
        fanin.raw.append(raw_fanin(env, plan.fanin_nodes))
        ours = ours_chain(env, plan.chain_levels)
        raw = raw_chain(env, plan.chain_levels)
        p50.ours.append(percentile(ours, 0.5) * 1000)
        p50.raw.append(percentile(raw, 0.5) * 1000)
        p99.ours.append(percentile(ours, 0.99) * 1000)
        p99.raw.append(percentile(raw, 0.99) * 1000)
    fanin.note = (
        f"{plan.fanin_nodes} demo.sum nodes + a join (one POST /api/v1/workflows) vs "
        f"chord(group({plan.fanin_nodes} x part), join) on the Redis result backend; prefork "
        "-c 2 workers on both sides; ours polls the join's ledger row every 2 ms"
    )
    p50.note = (
        "per level: the child's first attempt's runs.started_at minus the parent's "
        "finished_at (ledger); raw: a chain of hops, each its start minus the previous hop's end"
    )
    return [fanin, p50, p99]
