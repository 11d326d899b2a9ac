"""A process's own /metrics (workers, the scheduler process): what only that process sees.

A worker exports the attempts it ran (``scheduler_task_run_seconds``,
``scheduler_task_wait_seconds``) and how busy its pool is. With prefork every pool process
writes its values to the multiprocess directory (``multiproc.prepare``) and the worker's
main process serves the sum. The metric objects are made on first use, in the process that
uses them, so importing this module creates nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from scheduler_app.services.metrics import multiproc

log = logging.getLogger(__name__)

# Seconds: from a 5 ms no-op to an hour-long job; the waits from a hot queue to a backlog.
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
# Label sets kept per process: queues x task types is small, but a bound keeps it so.
MAX_CHILDREN = 4096


class AttemptMetrics:
    """Histograms of the attempts this process runs; ``observe`` costs a few microseconds."""

    def __init__(self) -> None:
        from prometheus_client import Histogram

        self.run = Histogram(
            "scheduler_task_run_seconds",
            "Run time of an attempt, start of the task code to its end.",
            ["queue", "task"],
            buckets=RUN_BUCKETS,
        )
        self.wait = Histogram(
            "scheduler_task_wait_seconds",
            "Wait of an attempt: due (run_at) to started on a worker.",
            ["queue"],
            buckets=WAIT_BUCKETS,
        )
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def observe(self, queue: str, task: str, wait: float, run: float) -> None:
        """Record one attempt (``wait`` and ``run`` in seconds)."""
        children = self._children.get((queue, task))
        if children is None:
            children = (self.wait.labels(queue), self.run.labels(queue, task))
            if len(self._children) < MAX_CHILDREN:
                self._children[(queue, task)] = children
        children[0].observe(wait if wait > 0 else 0.0)
        children[1].observe(run)


_attempts: AttemptMetrics | None = None


def attempt_metrics() -> AttemptMetrics:
    """This process's attempt histograms (made on first call)."""
    global _attempts
    if _attempts is None:
        _attempts = AttemptMetrics()
    return _attempts


LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
_lag: Any = None


def observe_schedule_lag(seconds: float) -> None:
    """One firing of a schedule's slot: ``seconds`` from the slot to its task's creation."""
    global _lag
    if _lag is None:
        from prometheus_client import Histogram

        _lag = Histogram(
            "scheduler_schedule_lag_seconds",
            "Schedule slot to its task created (scheduled and catch-up firings).",
            buckets=LAG_BUCKETS,
        )
    _lag.observe(max(0.0, seconds))


class PoolCollector:
    """Pool usage of a Celery worker, read at scrape time in its main process."""

    def __init__(self, worker: str, concurrency: Callable[[], int]) -> None:
        self.worker = worker
        self.concurrency = concurrency

    def collect(self) -> Iterable[Any]:
        from celery.worker import state
        from prometheus_client.core import GaugeMetricFamily

        size = GaugeMetricFamily(
            "scheduler_worker_pool_processes", "Pool processes (concurrency).", labels=["worker"]
        )
        size.add_metric([self.worker], float(self.concurrency()))
        busy = GaugeMetricFamily(
            "scheduler_worker_pool_busy", "Attempts executing in the pool now.", labels=["worker"]
        )
        busy.add_metric([self.worker], float(len(state.active_requests)))
        reserved = GaugeMetricFamily(
            "scheduler_worker_reserved", "Messages received, not yet started.", labels=["worker"]
        )
        reserved.add_metric([self.worker], float(len(state.reserved_requests)))
        yield from (size, busy, reserved)


def serve(port: int, bind: str, collectors: Iterable[Any] = ()) -> Any:
    """Serve /metrics on ``bind:port`` from a thread: every process's values plus ``collectors``."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, start_http_server

    if multiproc.enabled():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    for collector in collectors:
        registry.register(collector)
    server, _thread = start_http_server(port, addr=bind, registry=registry)
    log.info("metrics served", extra={"port": port, "bind": bind})
    return server
