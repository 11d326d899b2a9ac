"""No-op jobs of the peer platforms (Dramatiq, RQ) for the peers rows.

The Dramatiq worker's entry point is :mod:`bench.dramatiq_worker`; RQ needs none (its jobs name
``bench.peers_jobs.rq_noop``).
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

DRAMATIQ_QUEUE = "bench"
RQ_QUEUE = "bench"


def rq_noop(*args, **kwargs) -> None:
    """Do nothing: RQ's drain-rate job."""


def _dramatiq_noop(*args, **kwargs) -> None:
    """Do nothing: Dramatiq's drain-rate actor."""


def declare_dramatiq(url: str) -> tuple[RedisBroker, dramatiq.Actor]:
    """A Dramatiq Redis broker with the no-op actor declared on it (made the global broker)."""
    redis_broker = RedisBroker(url=url)
    dramatiq.set_broker(redis_broker)
    actor = dramatiq.actor(
        _dramatiq_noop,
        actor_name="bench_noop",
        queue_name=DRAMATIQ_QUEUE,
        max_retries=0,
        broker=redis_broker,
    )
    return redis_broker, actor
