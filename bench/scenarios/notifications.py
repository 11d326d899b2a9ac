"""8. Notifications: webhooks delivered per second, completion -> delivery lag, and the drain
rate of tasks with ``notify`` against the same tasks without it.

A receiver in the bench process answers 200 and notes when each call arrived. The tasks are
queued while the task worker does not consume (as in 3.), then drained; the scheduler's sweep
announces their ends and its dispatcher delivers (signed, through the outbound client, on
``webhook_concurrency`` threads). The lag is the receipt time minus the task's ``finished_at``
in the ledger (one machine, one clock).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from statistics import median

import psutil

from bench.environment import OURS_QUEUE, Environment
from bench.plan import Plan
from bench.probes import celery_pending, set_consuming, time_drain
from bench.report import Row, Target, percentile
from bench.services import BenchError, cpu_seconds, postgres_cpu_seconds, wait_until
from scheduler_app.services.notifiers.dispatch import DELIVERY_NICE

TITLE = "notifications"
RECEIVER_NICE = 19


class Receiver:
    """Answers every POST 200 and records when each task's event arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                # The receiver stands for someone else's server (on another machine in
                # production): its connection threads take only CPU the platform leaves.
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), RECEIVER_NICE)
                super().setup()

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                at = time.time()
                task_id = json.loads(body)["data"]["id"]
                with receiver.lock:
                    receiver.arrived.setdefault(task_id, at)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def count(self, ids: set[str]) -> int:
        with self.lock:
            return sum(1 for i in ids if i in self.arrived)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def queue(env: Environment, count: int, url: str | None) -> list[uuid.UUID]:
    """Submit ``count`` demo.echo tasks (with a webhook when ``url``) through the service."""
    notify = {"webhook": url, "on": ["succeeded", "failed", "cancelled"]} if url else None
    bodies = [
        {
            "task": "demo.echo",
            "args": [i],
            "queue": OURS_QUEUE,
            **({"notify": notify} if url else {}),
        }
        for i in range(count)
    ]
    ids: list[uuid.UUID] = []
    for start in range(0, count, 1000):
        accepted = env.ledger.tasks.submit(env.principal(), bodies[start : start + 1000])
        ids += [a.task.id for a in accepted]
    return ids


PARTS = ("worker", "scheduler", "postgres", "receiver")


def cpu_parts(env: Environment) -> dict[str, float]:
    """CPU seconds so far of the task worker, the scheduler, every PostgreSQL process and
    this process (the receiver's threads; the bench's own polling is the same with notify
    on or off)."""
    return {
        "worker": env.ours_worker.cpu_seconds(),
        "scheduler": env.scheduler.cpu_seconds(),
        "postgres": postgres_cpu_seconds(),
        "receiver": cpu_seconds(psutil.Process()),
    }


def per_task(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    """Milliseconds of CPU per task, by part."""
    return {k: (after[k] - before[k]) / count * 1000 for k in PARTS}


def drain(
    env: Environment, count: int, url: str | None
) -> tuple[float, list[uuid.UUID], dict[str, float]]:
    """Queue ``count`` tasks while the task worker does not consume, then time their drain.
    Returns the rate, the ids and the CPU parts at the drain's start."""
    app, nodes, client = env.control_app("ours"), [env.ours_worker.node], env.ours_redis()
    set_consuming(app, nodes, OURS_QUEUE, False)
    if celery_pending(client, [OURS_QUEUE]):
        raise BenchError(f"queue {OURS_QUEUE} is not empty before the drain")
    ids = queue(env, count, url)
    before = cpu_parts(env)
    set_consuming(app, nodes, OURS_QUEUE, True)
    result = time_drain(lambda: count - celery_pending(client, [OURS_QUEUE]), count, timeout=300)
    return result.rate, ids, before


def run(env: Environment, plan: Plan) -> list[Row]:
    """Rows 12a to 12e."""
    rate = Row("12a", "webhooks delivered per second (the scheduler's dispatcher)", "calls/s")
    lag50 = Row("12b", "task completion -> webhook received, p50", "ms")
    lag99 = Row("12c", "task completion -> webhook received, p99", "ms")
    drain_row = Row(
        "12d",
        "drain with notify.webhook vs without (raw column: without)",
        "tasks/s",
        target=Target("ratio>=", 0.9),
    )
    cpu = Row(
        "12e",
        "CPU per task from drain start to last webhook (raw column: without notify)",
        "ms",
    )
    splits: dict[str, list[float]] = {k: [] for k in PARTS}
    receiver = Receiver()
    count = plan.notify_tasks
    try:
        for _ in range(plan.reps):
            off, _, before = drain(env, count, None)
            cpu_off = per_task(before, cpu_parts(env), count)
            on, ids, before = drain(env, count, receiver.url)
            wanted = {str(i) for i in ids}
            wait_until(
                lambda w=wanted: receiver.count(w) == count, 300, 0.05, f"{count} webhooks received"
            )
            cpu_on = per_task(before, cpu_parts(env), count)
            cpu.ours.append(sum(cpu_on.values()))
            cpu.raw.append(sum(cpu_off.values()))
            for part in PARTS:
                splits[part].append(cpu_on[part] - cpu_off[part])
            finished = dict(
                env.ledger.rows(
                    "SELECT id::text, extract(epoch FROM finished_at) FROM tasks "
                    "WHERE id = ANY(:ids)",
                    ids=list(ids),
                )
            )
            arrived = [receiver.arrived[i] for i in wanted]
            lags = [(receiver.arrived[i] - float(finished[i])) * 1000 for i in wanted]
            span = max(arrived) - min(arrived)
            rate.ours.append((count - 1) / span if span > 0 else float("nan"))
            lag50.ours.append(percentile(lags, 0.5))
            lag99.ours.append(percentile(lags, 0.99))
            drain_row.ours.append(on)
            drain_row.raw.append(off)
    finally:
        receiver.close()
    rate.note = (
        f"{count} demo.echo tasks per repetition, each with notify.webhook to a local receiver "
        "(200 at once); first receipt to last"
    )
    drain_row.note = (
        "the task worker's drain, as in 3a; the announcements and deliveries run beside it "
        f"(the dispatcher's threads at nice {DELIVERY_NICE}, the receiver's at nice "
        f"{RECEIVER_NICE}: it stands for a server on another machine)"
    )
    cpu.note = "added by notify, per task (medians): " + ", ".join(
        f"{part} {median(values):.2f} ms" for part, values in splits.items() if values
    )
    return [rate, lag50, lag99, drain_row, cpu]
