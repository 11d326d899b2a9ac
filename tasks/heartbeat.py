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
        batches: Callable[[], tuple[list[uuid.UUID], int]] | None = None,
    ):
        super().__init__(name="ledger-heartbeat", daemon=True)
        self.registry = registry
        self.instance = instance
        self.interval = interval
        self.concurrency = concurrency  # the pool's size now (scaling changes it)
        self.after_beat = after_beat  # e.g. check the stored controls were applied
        # () -> (extras running long in this worker's batches, extras run): its pool processes
        # run them, so Celery's state in this process does not know them
        self.batches = batches
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                active, processed = active_task_ids(), sum(state.total_count.values())
                if self.batches is not None:
                    try:
                        extras, ran = self.batches()
                    except Exception:
                        log.warning("could not read the batches' extras", exc_info=True)
                    else:
                        active, processed = active + extras, processed + ran
                self.registry.beat(self.instance, active, processed, concurrency=self.concurrency())
                self.after_beat()
            except Exception:
                log.exception("heartbeat failed")

    def stop(self) -> None:
        self.stopping.set()
