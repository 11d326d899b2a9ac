"""The raw-Celery counterpart: a bare Celery app with no-op tasks, no ledger, no API.

It keeps Celery's defaults except what the comparison must hold equal to ours (the issue's
"same pool, concurrency, acks_late and prefetch"): ``task_acks_late`` and
``worker_prefetch_multiplier=1``. Results go to a Redis result backend (another database of the
same redis-server) for the latency rows; the no-op used for drain rates ignores its result.
"""

from __future__ import annotations

import os
import time

from celery import Celery

from scheduler_app.services.broker import redis_transport

NOOP = "bench.noop"
SLEEP = "bench.sleep"
STAMP = "bench.stamp"
PART = "bench.part"  # a chord header task (its result is stored: a chord counts results)
JOIN = "bench.join"  # the chord body: sums the header's results
HOP = "bench.hop"  # one link of a chain: carries the gaps between links along
# Raw Celery as its users get it: kombu's own Redis transport, also in the bench process, where
# the platform's modules install ours under the "redis" alias. BENCH_RAW_TRANSPORT=ours gives a
# raw worker the platform's transport instead (row 3j: what it buys raw Celery alone).
STOCK_TRANSPORT = "kombu.transport.redis:Transport"


def raw_transport() -> str:
    """The transport class a raw app uses (see STOCK_TRANSPORT)."""
    if os.environ.get("BENCH_RAW_TRANSPORT") == "ours":
        return redis_transport.TRANSPORT
    return STOCK_TRANSPORT


def make_raw_app(broker_url: str, result_url: str | None = None) -> Celery:
    """A Celery app publishing and running the bench's raw tasks."""
    app = Celery("bench-raw", set_as_current=False)
    app.conf.update(
        broker_url=broker_url,
        broker_transport=raw_transport(),
        result_backend=result_url,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        result_expires=600,
    )

    @app.task(name=NOOP, ignore_result=True, shared=False)
    def noop(*args, **kwargs) -> None:
        """Do nothing: the drain-rate task."""

    @app.task(name=SLEEP, ignore_result=True, shared=False)
    def sleep(seconds: float = 0.0, *args, **kwargs) -> None:
        """Sleep: the I/O-like task of row 3h (what demo.sleep does)."""
        time.sleep(seconds)

    @app.task(name=STAMP, shared=False)
    def stamp(*args, **kwargs) -> float:
        """Return when it started (epoch seconds): the latency and lateness task."""
        return time.time()

    @app.task(name=PART, shared=False)
    def part(*args, **kwargs) -> int:
        """A no-op whose result a chord counts."""
        return 0

    @app.task(name=JOIN, shared=False)
    def join(results, *args, **kwargs) -> int:
        """Sum the header's results (what demo.sum does with its parents)."""
        return sum(results)

    @app.task(name=HOP, shared=False)
    def hop(previous=None, *args, **kwargs) -> dict:
        """Start minus the previous link's end, appended to the previous link's gaps."""
        started = time.time()
        gaps = [] if previous is None else [*previous["gaps"], started - previous["end"]]
        return {"gaps": gaps, "end": time.time()}

    return app
