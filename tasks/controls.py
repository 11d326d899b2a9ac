"""Applying the stored controls to this worker's Celery consumer and pool.

The stored pauses are what the claim enforces; this only saves the worker from fetching work it
must refuse, and sizes its pool. It runs in the worker's main process: at start (before the
first heartbeat), on the ``scheduler_sync`` broadcast the API sends after a change, and when a
heartbeat finds the stored controls differ from the ones last applied (a missed broadcast).
Only what changed in the stored controls is applied, so a queue an operator cancelled by hand
with Celery's own ``cancel_consumer`` stays as they left it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from celery.worker.control import control_command

from scheduler_app.services.workers.controls import SYNC_COMMAND, Controls

log = logging.getLogger(__name__)


@dataclass
class ConsumerControls:
    """The controls applied to one worker (its consumer lives in this process)."""

    hostname: str
    configured: tuple[str, ...]
    applied: Controls = field(default_factory=Controls)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _asked: float = 0.0

    def apply(self, consumer: Any, controls: Controls) -> None:
        """Cancel or resume consuming the queues whose stored pause changed; resize the pool
        if it differs from the stored size."""
        with self._lock:
            before = self.applied.blocked(self.configured)
            after = controls.blocked(self.configured)
            for queue in sorted(after - before):
                consumer.cancel_task_queue(queue)
            for queue in sorted(before - after):
                _consume(consumer, queue)
            if controls.concurrency is not None:
                resize(consumer, controls.concurrency)
            self.applied = controls

    def ask(self, app: Any, every: float = 1.0) -> None:
        """Ask this worker's consumer to sync (from another thread or a pool process), at most
        once per ``every`` seconds."""
        now = time.monotonic()
        if now - self._asked < every:
            return
        self._asked = now
        try:
            app.control.broadcast(SYNC_COMMAND, destination=[self.hostname], reply=False)
        except Exception as exc:  # best effort: the next heartbeat asks again
            log.warning("could not ask the worker to apply its controls", extra={"error": str(exc)})


def _consume(consumer: Any, queue: str) -> None:
    """Consume ``queue`` again, and keep it selected for a reconnect (add_task_queue does not
    put a known queue back into ``consume_from``)."""
    queues = consumer.app.amqp.queues
    if queue in queues and queues._consume_from is not None:
        queues._consume_from[queue] = queues[queue]
    consumer.add_task_queue(queue)


def pool_size(consumer: Any) -> int | None:
    """Processes (or threads) in the worker's pool right now."""
    try:
        return int(consumer.pool.num_processes)
    except (AttributeError, NotImplementedError, TypeError):
        return None


def resize(consumer: Any, target: int) -> None:
    """Grow or shrink the pool to ``target`` (what Celery's pool_grow/pool_shrink do)."""
    current = pool_size(consumer)
    if current is None or current == target:
        return
    if consumer.controller.autoscaler:
        log.warning("the pool autoscales: a stored concurrency is not applied")
        return
    try:
        if target > current:
            consumer.pool.grow(target - current)
            # start them now, not at the pool's next maintenance (every 5 s); as autoscale does
            consumer.pool.maintain_pool()
        else:
            consumer.pool.shrink(current - target)
    except (NotImplementedError, ValueError) as exc:  # solo pool; every process busy
        log.warning("could not resize the pool", extra={"error": str(exc), "target": target})
        return
    consumer._update_prefetch_count(target - current)
    log.info("pool resized from %s to %s", current, target)


def register(read: Any) -> None:
    """Register the ``scheduler_sync`` remote-control command; ``read(hostname)`` returns the
    stored Controls and the worker's ConsumerControls."""

    @control_command(name=SYNC_COMMAND)
    def scheduler_sync(state: Any, **_: Any) -> dict[str, str]:
        """Apply the stored pauses and pool size of this worker."""
        consumer = state.consumer
        stored, controls = read(consumer.hostname)
        if controls is None:
            return {"error": "not ready"}
        controls.apply(consumer, stored)
        return {"ok": "applied"}


def configured_queues(consumer: Any, default: str) -> Sequence[str]:
    """The queues the worker was started to consume."""
    return sorted(consumer.app.amqp.queues.consume_from or [default])
