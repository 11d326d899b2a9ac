"""8. Notifications: webhooks delivered per second, completion -> delivery lag, and the drain
rate of tasks with ``notify`` against the same tasks without it.

A receiver in the bench process answers 200 and notes when each call arrived. The tasks are
queued while the task worker does not consume (as in 3.), then drained; a second worker of
ours consumes the ``notifications`` queue and delivers (signed, through the outbound client).
The lag is the receipt time minus the task's ``finished_at`` in the ledger (one machine, one
clock).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench.environment import OURS_QUEUE, Environment
from bench.plan import Plan
from bench.probes import celery_pending, set_consuming, time_drain
from bench.report import Row, Target, percentile
from bench.services import BenchError, wait_until

TITLE = "notifications"
NOTIFY_QUEUE = "notifications"


class Receiver:
    """Answers every POST 200 and records when each task's event arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

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


def drain(env: Environment, count: int, url: str | None) -> tuple[float, list[uuid.UUID]]:
    """Queue ``count`` tasks while the task worker does not consume, then time their drain."""
    app, nodes, client = env.control_app("ours"), [env.ours_worker.node], env.ours_redis()
    set_consuming(app, nodes, OURS_QUEUE, False)
    if celery_pending(client, [OURS_QUEUE]):
        raise BenchError(f"queue {OURS_QUEUE} is not empty before the drain")
    ids = queue(env, count, url)
    set_consuming(app, nodes, OURS_QUEUE, True)
    result = time_drain(lambda: count - celery_pending(client, [OURS_QUEUE]), count, timeout=300)
    return result.rate, ids


def run(env: Environment, plan: Plan) -> list[Row]:
    """Rows 12a to 12d."""
    rate = Row(
        "12a", "webhooks delivered per second (1 notifications worker, prefork -c 2)", "calls/s"
    )
    lag50 = Row("12b", "task completion -> webhook received, p50", "ms")
    lag99 = Row("12c", "task completion -> webhook received, p99", "ms")
    drain_row = Row(
        "12d",
        "drain with notify.webhook vs without (raw column: without)",
        "tasks/s",
        target=Target("ratio>=", 0.9),
    )
    receiver = Receiver()
    deliverer = env.start_worker("ours", "ours-notify", NOTIFY_QUEUE)
    env.wait_ready(deliverer)
    count = plan.notify_tasks
    try:
        for _ in range(plan.reps):
            off, _ = drain(env, count, None)
            on, ids = drain(env, count, receiver.url)
            wanted = {str(i) for i in ids}
            wait_until(
                lambda w=wanted: receiver.count(w) == count, 300, 0.05, f"{count} webhooks received"
            )
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
        env.retire(deliverer)
        receiver.close()
    rate.note = (
        f"{count} demo.echo tasks per repetition, each with notify.webhook to a local receiver "
        "(200 at once); first receipt to last"
    )
    drain_row.note = "the task worker's drain, as in 3a; the deliveries run beside it"
    return [rate, lag50, lag99, drain_row]
