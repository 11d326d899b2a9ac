"""7. Peers on the same redis-server in the same run: Dramatiq and RQ, enqueue and drain.

Each peer uses its defaults, in a Redis database of its own. Enqueue: one thread calling the
peer's enqueue (``actor.send``, ``Queue.enqueue``) in a loop, against the raw ``apply_async``
loop of the same repetition. Drain: jobs queued with no worker running, then a worker started
with two processes of one thread each (Dramatiq ``--processes 2 --threads 1``; RQ
``worker-pool -n 2``, which forks a work horse per job, RQ's default), timed from the first
completion to the last, against raw Celery prefork -c 2 in the same repetition.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bench.environment import DRAMATIQ_DB, RAW_QUEUE, RQ_DB, Environment
from bench.plan import Plan
from bench.probes import time_drain
from bench.report import Row
from bench.scenarios.execution import drain
from bench.scenarios.submit import raw_loop
from bench.services import BenchError

TITLE = "peers"


def _peers():
    """The peers' modules; raises BenchError naming the dev extra when they are missing."""
    try:
        from rq import Queue

        from bench import peers_jobs
    except ImportError as exc:
        raise BenchError(
            f"{exc.name} is not installed: pip install -e '.[dev]' (dramatiq[redis], rq)"
        ) from exc
    return Queue, peers_jobs


def dramatiq_rates(env: Environment, plan: Plan, actor) -> tuple[float, float]:
    """Dramatiq's enqueue and drain rates (tasks/s) in one repetition."""
    _, jobs = _peers()
    client = env.redis.client(DRAMATIQ_DB)
    client.flushdb()
    began = time.perf_counter()
    for index in range(plan.peer_enqueue):
        actor.send(index)
    enqueue = plan.peer_enqueue / (time.perf_counter() - began)
    client.flushdb()
    for index in range(plan.peer_drain):
        actor.send(index)
    messages = f"dramatiq:{jobs.DRAMATIQ_QUEUE}.msgs"
    argv = [sys.executable, "-m", "dramatiq", "bench.dramatiq_worker"]
    argv += ["--processes", "2", "--threads", "1", "--queues", jobs.DRAMATIQ_QUEUE]
    worker = env.spawn("dramatiq-worker", argv, env.raw_env())
    try:
        result = time_drain(
            lambda: plan.peer_drain - client.hlen(messages), plan.peer_drain, timeout=300
        )
    finally:
        env.retire(worker)
    client.flushdb()
    return enqueue, result.rate


def rq_rates(env: Environment, plan: Plan) -> tuple[float, float]:
    """RQ's enqueue and drain rates (tasks/s) in one repetition."""
    Queue, jobs = _peers()
    client = env.redis.client(RQ_DB)
    client.flushdb()
    queue = Queue(jobs.RQ_QUEUE, connection=client)
    began = time.perf_counter()
    for index in range(plan.peer_enqueue):
        queue.enqueue(jobs.rq_noop, index)
    enqueue = plan.peer_enqueue / (time.perf_counter() - began)
    client.flushdb()
    for index in range(plan.rq_drain):
        queue.enqueue(jobs.rq_noop, index)
    finished = queue.finished_job_registry.key
    rq = str(Path(sys.executable).with_name("rq"))
    argv = [rq, "worker-pool", "-u", env.redis.url_of(RQ_DB), "-n", "2", jobs.RQ_QUEUE]
    worker = env.spawn("rq-worker", argv, env.raw_env())
    try:
        result = time_drain(lambda: client.zcard(finished), plan.rq_drain, timeout=300)
    finally:
        env.retire(worker)
    client.flushdb()
    return enqueue, result.rate


def run(env: Environment, plan: Plan) -> list[Row]:
    """Rows 7a to 7d."""
    rows = {
        "7a": Row("7a", "Dramatiq enqueue (actor.send loop) vs raw apply_async loop", "tasks/s"),
        "7b": Row("7b", "RQ enqueue (Queue.enqueue loop) vs raw apply_async loop", "tasks/s"),
        "7c": Row("7c", "Dramatiq drain, 2 processes x 1 thread vs raw prefork -c 2", "tasks/s"),
        "7d": Row("7d", "RQ drain, worker-pool -n 2 (fork per job) vs raw prefork -c 2", "tasks/s"),
    }
    _, actor = _peers()[1].declare_dramatiq(env.redis.url_of(DRAMATIQ_DB))
    for _ in range(plan.slow_reps):
        raw_enqueue = raw_loop(env, plan.raw_loop)
        env.purge_sinks()
        raw_drain, *_ = drain(env, "raw", [env.raw_worker], RAW_QUEUE, plan.peer_drain)
        dramatiq_enqueue, dramatiq_drain = dramatiq_rates(env, plan, actor)
        rq_enqueue, rq_drain = rq_rates(env, plan)
        for key, value in (("7a", dramatiq_enqueue), ("7b", rq_enqueue)):
            rows[key].ours.append(value)
            rows[key].raw.append(raw_enqueue)
        for key, value in (("7c", dramatiq_drain), ("7d", rq_drain)):
            rows[key].ours.append(value)
            rows[key].raw.append(raw_drain.rate)
    rows["7a"].note = (
        "the 'ours' column holds the peer's value in section 7; each peer on its defaults in its "
        f"own Redis database; drains of {plan.peer_drain} jobs (RQ: {plan.rq_drain})"
    )
    return list(rows.values())
