"""Publishing tasks to the broker, always after the ledger committed them."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import Celery
from kombu.exceptions import KombuError, OperationalError
from kombu.utils.json import dumps
from redis.exceptions import RedisError

from scheduler_app.celery_settings import celery_config, to_broker_priority
from scheduler_app.config import Settings
from scheduler_app.models.base import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dispatch:
    """What the broker needs to deliver one attempt of a task."""

    id: uuid.UUID
    task: str
    queue: str
    priority: int
    eta: datetime | None = None
    timeout: float | None = None
    request_id: str | None = None
    attempt: int = 1  # the attempt this message starts; a stale message cannot start another


def hard_limit(timeout: float | None) -> float | None:
    """The hard time limit after the soft one: task code gets a moment to clean up."""
    return timeout + max(1.0, timeout * 0.1) if timeout else None


def make_producer_app(settings: Settings) -> Celery:
    """A Celery app that only publishes (the API and scheduler never import task code)."""
    app = Celery("scheduler-producer", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


class Dispatcher:
    """Publishes dispatches in one pipelined producer session; never raises on broker loss.

    A message that fails to publish is not lost: its task is committed as queued and the
    reconciler publishes it again.
    """

    def __init__(self, app: Celery):
        self.app = app

    def publish(self, dispatches: Iterable[Dispatch]) -> int:
        """Publish each dispatch; return how many reached the broker."""
        items = list(dispatches)
        if not items:
            return 0
        sent = 0
        try:
            with self.app.producer_or_acquire() as producer:
                if len(items) > 1 and hasattr(producer.channel, "_q_for_pri"):
                    return self._publish_pipelined(producer, items)
                for item in items:
                    self._send(producer, item)
                    sent += 1
        except (OperationalError, KombuError, RedisError, OSError) as exc:
            log.warning(
                "broker publish failed; the reconciler will publish again",
                extra={"error": str(exc), "unsent": len(items) - sent},
            )
        return sent

    def _send(self, producer: Any, item: Dispatch) -> None:
        self.app.send_task(
            item.task,
            args=[str(item.id)],
            task_id=str(item.id),
            queue=item.queue,
            priority=to_broker_priority(item.priority),
            eta=item.eta if item.eta and item.eta > utcnow() else None,
            soft_time_limit=item.timeout,
            time_limit=hard_limit(item.timeout),
            headers={"request_id": item.request_id, "ledger_attempt": item.attempt},
            producer=producer,
        )

    def _publish_pipelined(self, producer: Any, items: list[Dispatch]) -> int:
        """Redis: let Celery build each message, then push them all in one pipeline.

        kombu's Redis channel sends one LPUSH round trip per message from ``_put``; here that
        step only collects (key, payload), exactly as ``_put`` would compute them (kombu is
        pinned), and one pipeline sends them.
        """
        channel = producer.channel
        pushes: list[tuple[str, str]] = []

        def collect(queue: str, message: dict, **_: Any) -> None:
            priority = channel._get_message_priority(message, reverse=False)
            pushes.append((channel._q_for_pri(queue, priority), dumps(message)))

        channel._put = collect
        try:
            for item in items:
                self._send(producer, item)
        finally:
            del channel._put
        with channel.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            for key, payload in pushes:
                pipe.lpush(key, payload)
            pipe.execute()
        return len(items)

    def revoke(self, task_id: uuid.UUID, *, terminate: bool) -> None:
        """Tell workers to drop (and, if running, terminate) the task's message; best effort.

        The ledger already holds the task as cancelled, so a worker that misses this broadcast
        still refuses to start it.
        """
        try:
            # SIGKILL: pool processes ignore SIGTERM when the worker remaps it for soft shutdown,
            # and a cancelled attempt has nothing left to report (the ledger already says so).
            self.app.control.revoke(str(task_id), terminate=terminate, signal="SIGKILL")
        except (OperationalError, KombuError, RedisError, OSError) as exc:
            log.warning(
                "revoke broadcast failed", extra={"task_id": str(task_id), "error": str(exc)}
            )
