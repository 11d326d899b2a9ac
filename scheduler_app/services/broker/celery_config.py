"""Celery configuration derived from Settings: the single source of truth for API, worker, beat."""

from __future__ import annotations

from typing import Any

from scheduler_app.config import Settings
from scheduler_app.services.broker import redis_transport
from scheduler_app.services.broker.layout import PRIORITY_STEPS, SEP

# DESIGN: API priority 0..9 with 9 first; Celery on Redis pops priority 0 first.


def to_broker_priority(priority: int) -> int:
    """Map the API's priority (9 runs first) to the Redis transport's (0 runs first)."""
    return 9 - priority


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings of every process of the platform."""
    redis_transport.install()
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend or None,
        "task_ignore_result": not settings.result_backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
        # At-least-once: ack after the attempt is recorded; one message per worker process at a
        # time so priorities hold on a busy queue.
        "task_acks_late": True,
        # A lost attempt is handled by the ledger (reconciler: retry or dead letter, bounded by
        # max_retries), not by endless requeues of a poison message.
        "task_reject_on_worker_lost": False,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": settings.default_queue,
        "task_default_priority": to_broker_priority(5),
        "task_create_missing_queues": True,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            "priority_steps": list(PRIORITY_STEPS),
            "sep": SEP,
            "queue_order_strategy": "priority",
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "broker_pool_limit": 20,
        # Off by default (they cost a publish per state); Flower turns them on while it runs.
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_soft_shutdown_timeout": settings.shutdown_timeout,
        "worker_disable_rate_limits": True,
    }
