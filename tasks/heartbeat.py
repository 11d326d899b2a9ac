"""The worker's heartbeat into the ledger: alive, and which tasks it is executing right now."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

from celery.worker import state

from scheduler_app.services.workers.registry import WorkerRegistry

log = logging.getLogger(__name__)


def active_task_ids() -> list[uuid.UUID]:
    """Ledger ids of the requests being executed (a Celery task id is the ledger id)."""
    ids = []
    for request in list(state.active_requests):
        try:
            ids.append(uuid.UUID(request.id))
        except (TypeError, ValueError):
            continue
    return ids


class Heartbeat(threading.Thread):
    """Beats every ``interval`` seconds until stopped; a failed beat is logged and retried."""

    def __init__(
        self,
        registry: WorkerRegistry,
        instance: uuid.UUID,
        interval: float,
        *,
        concurrency: Callable[[], int | None] = lambda: None,
        after_beat: Callable[[], None] = lambda: None,
    ):
        super().__init__(name="ledger-heartbeat", daemon=True)
        self.registry = registry
        self.instance = instance
        self.interval = interval
        self.concurrency = concurrency  # the pool's size now (scaling changes it)
        self.after_beat = after_beat  # e.g. check the stored controls were applied
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                self.registry.beat(
                    self.instance,
                    active_task_ids(),
                    sum(state.total_count.values()),
                    concurrency=self.concurrency(),
                )
                self.after_beat()
            except Exception:
                log.exception("heartbeat failed")

    def stop(self) -> None:
        self.stopping.set()
