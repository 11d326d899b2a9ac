"""8. Horizontal scaling: the drain of pre-queued no-op tasks by 1 and by 2 worker processes.

Each worker is ``-P prefork -c 1``, so the second process is the only change; ours drains
``demo.echo`` through the ledger, raw a no-op, timed like row 3a (see ``execution.drain``). On a
machine of 2 cores the API-less drain shares them with PostgreSQL and Redis: the ratio of the
two rows says how much a second worker process buys here.
"""

from __future__ import annotations

from bench.environment import Environment
from bench.plan import Plan
from bench.probes import set_consuming
from bench.report import Row
from bench.scenarios.execution import drain

TITLE = "scaling"
QUEUES = {"ours": "low", "raw": "raw-scale"}


def run(env: Environment, plan: Plan) -> list[Row]:
    """Rows 10a to 10c."""
    one = Row("10a", "drain no-op tasks, 1 worker process -c 1: ours vs raw Celery", "tasks/s")
    two = Row("10b", "drain no-op tasks, 2 worker processes -c 1: ours vs raw Celery", "tasks/s")
    gain = Row("10c", "scaling: 2 worker processes / 1 (10b / 10a), ours vs raw", "x")
    workers = {
        side: [
            env.start_worker(side, f"{side}-scale{i}", QUEUES[side], "prefork", 1) for i in range(2)
        ]
        for side in ("ours", "raw")
    }
    env.wait_ready(*workers["ours"], *workers["raw"])
    try:
        for _ in range(plan.slow_reps):
            for side in ("ours", "raw"):
                queue, (first_worker, second_worker) = QUEUES[side], workers[side]
                # the second process does not consume during the first drain
                set_consuming(env.control_app(side), [second_worker.node], queue, False)
                first, *_ = drain(env, side, [first_worker], queue, plan.scale_tasks)
                both, *_ = drain(env, side, workers[side], queue, plan.scale_tasks)
                getattr(one, side).append(first.rate)
                getattr(two, side).append(both.rate)
                getattr(gain, side).append(both.rate / first.rate)
    finally:
        for worker in (*workers["ours"], *workers["raw"]):
            env.retire(worker)
    one.note = (
        f"{plan.scale_tasks} tasks queued per repetition while the workers did not consume; "
        "each worker -P prefork -c 1"
    )
    return [one, two, gain]
