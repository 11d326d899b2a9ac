"""Watching work drain: broker backlogs, consumer switches, and timing until everything is done."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis
from celery import Celery

from bench.services import BenchError
from scheduler_app.services.broker import layout


def queue_keys(queue: str) -> list[str]:
    """Every Redis list kombu may use for ``queue``: our layout's and kombu's default one."""
    return list(
        dict.fromkeys(
            layout.queue_keys(queue) + layout.queue_keys(queue, range(10), layout.KOMBU_SEP)
        )
    )


def celery_pending(client: redis.Redis, queues: Sequence[str]) -> int:
    """Messages of ``queues`` not yet acknowledged: waiting in a list or delivered, unacked.

    With ``acks_late`` a message is acknowledged after its task returned, so this reaches zero
    when the last task finished. The ``unacked`` hash is per Redis database; each side of the
    bench has its own database, so it holds only that side's messages.
    """
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for key in queue_keys(queue):
            pipe.llen(key)
    pipe.hlen(layout.UNACKED_KEY)
    return sum(pipe.execute())


@dataclass(frozen=True)
class Drain:
    """How many tasks finished in how many seconds."""

    done: int
    seconds: float

    @property
    def rate(self) -> float:
        """Tasks per second."""
        return self.done / self.seconds if self.seconds > 0 else float("nan")


def time_drain(
    completed: Callable[[], int], total: int, timeout: float, interval: float = 0.005
) -> Drain:
    """Steady-state drain rate: from the first completion seen to the last.

    The clock starts at the first observed progress, so a worker's start-up or the time a
    consumer switch takes to arrive is not counted; the tasks completed before it are not
    counted either. Raises BenchError when the work does not drain within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    first_time = first_done = finished = None
    while True:
        done = completed()
        now = time.perf_counter()
        if first_time is None and done > 0:
            first_time, first_done = now, done
        if done >= total:
            if first_done >= total:  # everything finished between two polls
                raise BenchError("drained faster than the poll interval; raise the task count")
            # A message kombu just popped is briefly in no list and not yet in ``unacked``:
            # only a second poll that still sees everything done ends the drain.
            if finished is not None:
                return Drain(total - first_done, finished - first_time)
            finished = now
        else:
            finished = None
        if time.monotonic() > deadline:
            raise BenchError(f"only {done} of {total} tasks done after {timeout:.0f}s")
        time.sleep(interval)


def worker_name(hostname_pattern: str) -> str:
    """The node name Celery makes of ``--hostname`` (``%h`` is this machine's host name)."""
    return hostname_pattern.replace("%h", socket.gethostname())


def set_consuming(app: Celery, workers: Sequence[str], queue: str, on: bool) -> None:
    """Make the workers start or stop consuming ``queue`` (remote control, waits for replies)."""
    control = app.control
    call = control.add_consumer if on else control.cancel_consumer
    replies = call(queue, destination=list(workers), reply=True, timeout=5)
    if len(replies or []) < len(workers):
        raise BenchError(f"only {len(replies or [])} of {len(workers)} workers answered {call}")
