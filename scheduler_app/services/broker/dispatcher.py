"""Publishing tasks to the broker, always after the ledger committed them."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
from celery import Celery, signals
from celery.utils.nodenames import anon_nodename
from kombu.entity import maybe_delivery_mode
from kombu.exceptions import KombuError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from scheduler_app.config import Settings
from scheduler_app.models.base import utcnow
from scheduler_app.services.broker.celery_config import celery_config, to_broker_priority
from scheduler_app.services.broker.messages import (
    Dispatch,
    MessageFactory,
    RedisLayout,
    Sender,
    UnsupportedLayoutError,
    hard_limit,
)

__all__ = ["Dispatch", "Dispatcher", "hard_limit", "make_producer_app"]

log = logging.getLogger(__name__)

BROKER_ERRORS = (OperationalError, KombuError, RedisError, OSError)
REDIS_SCHEMES = frozenset({"redis", "rediss", "redis+socket"})


def make_producer_app(settings: Settings) -> Celery:
    """A Celery app that only publishes (the API and scheduler never import task code)."""
    app = Celery("scheduler-producer", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


def direct_publish_blocker(conf: Any) -> str | None:
    """Why messages cannot be pushed to Redis directly under ``conf``; None when they can.

    The message factory models Celery's default routing (a missing queue gets a direct exchange
    of its name, published to as the anonymous exchange), JSON without compression, protocol 2
    and no task-sent events, on one Redis broker.
    """
    url = conf.broker_write_url or ""
    if ";" in url or urlsplit(url).scheme not in REDIS_SCHEMES:
        return "the broker is not a single Redis URL"
    if conf.task_protocol != 2:
        return "task_protocol is not 2"
    if conf.task_serializer != "json" or conf.task_compression:
        return "messages are not uncompressed JSON"
    if conf.task_send_sent_event:
        return "task_send_sent_event is on"
    if conf.task_routes or conf.task_queues:
        return "task_routes or task_queues are set"
    if not conf.task_create_missing_queues or conf.task_default_exchange_type != "direct":
        return "queues are not created on demand with direct exchanges"
    if conf.task_create_missing_queue_exchange_type not in (None, "direct"):
        return "missing queues get a non-direct exchange"
    return None


def _publish_hooked() -> bool:
    """True if something listens to Celery's publish signals (only send_task sends them)."""
    return bool(
        signals.before_task_publish.receivers
        or signals.after_task_publish.receivers
        or signals.task_sent.receivers
    )


@dataclass(frozen=True)
class RetryPolicy:
    """Celery's task_publish_retry_policy, as kombu's ``Connection.ensure`` applies it."""

    max_retries: int = 0
    interval_start: float = 0.0
    interval_step: float = 0.2
    interval_max: float = 1.0

    @classmethod
    def of(cls, policy: dict[str, Any]) -> RetryPolicy:
        """The policy of a retry-policy dict (empty: no retries)."""
        known = {name: policy[name] for name in cls.__dataclass_fields__ if name in policy}
        return cls(**{**known, "max_retries": int(known.get("max_retries") or 0)})

    def interval(self, retry: int) -> float:
        """Seconds to sleep before retry number ``retry`` (from 0)."""
        return min(self.interval_start + self.interval_step * retry, self.interval_max)


class Dispatcher:
    """Publishes dispatches in one round trip to Redis; never raises on broker loss.

    On Redis, messages are built by :class:`MessageFactory` (what ``send_task`` would send) and
    pushed with one pipeline on a client kept for the dispatcher's life; on any other broker,
    or a Celery configuration the factory does not model, Celery's ``send_task`` publishes.

    A message that fails to publish is not lost: its task is committed as queued and the
    reconciler publishes it again.
    """

    def __init__(self, app: Celery):
        self.app = app
        self.direct_blocker = direct_publish_blocker(app.conf)
        if self.direct_blocker:
            log.info("publishing through Celery", extra={"reason": self.direct_blocker})
        # Read once: Celery's conf lookups cost more than building a message.
        policy = app.conf.task_publish_retry_policy if app.conf.task_publish_retry else {}
        self._retry = RetryPolicy.of(policy)
        self._lock = threading.Lock()
        self._redis: tuple[redis.Redis, MessageFactory] | None = None
        self._origin = ("", 0)  # (anon_nodename(), pid it belongs to)

    def publish(self, dispatches: Iterable[Dispatch]) -> int:
        """Publish each dispatch; return how many reached the broker."""
        items = list(dispatches)
        if not items:
            return 0
        if self.direct_blocker is None and not _publish_hooked():
            return self._publish_direct(items)
        return self._publish_celery(items)

    # --- Redis, directly -------------------------------------------------------------------

    def _publish_direct(self, items: list[Dispatch]) -> int:
        """Push every message with one pipeline; retry connection errors as kombu would."""
        lists: dict[str, list[str]] | None = None
        retry = self._retry
        for attempt in range(retry.max_retries + 1):
            try:
                client, factory = self._redis or self._connect()
                if lists is None:
                    lists = self._lists(factory, items)
                return _push(client, lists)
            except (RedisConnectionError, RedisTimeoutError, OperationalError) as exc:
                if attempt == retry.max_retries:
                    return _publish_failed(exc, len(items))
                time.sleep(retry.interval(attempt))
            except BROKER_ERRORS as exc:
                return _publish_failed(exc, len(items))
            except UnsupportedLayoutError as exc:  # known only once kombu's channel is read
                self.direct_blocker = str(exc)
                log.info("publishing through Celery", extra={"reason": self.direct_blocker})
                return self._publish_celery(items)
        return 0

    def _lists(self, factory: MessageFactory, items: list[Dispatch]) -> dict[str, list[str]]:
        """Payloads by list key, each list in publish order."""
        app = self.app
        origin, pid = self._origin
        if pid != os.getpid():  # anon_nodename() has the pid in it
            origin, pid = self._origin = (anon_nodename(), os.getpid())
        parent = app.current_worker_task
        if parent is None:
            sender = Sender(reply_to=app.thread_oid, origin=origin)
        else:  # as send_task does inside a worker task
            request = parent.request
            sender = Sender(
                reply_to=app.thread_oid,
                origin=origin,
                root_id=request.root_id or request.id,
                parent_id=request.id,
            )
        lists: dict[str, list[str]] = {}
        for key, payload in factory.payloads(items, sender, utcnow()):
            lists.setdefault(key, []).append(payload)
        return lists

    def _connect(self) -> tuple[redis.Redis, MessageFactory]:
        """Build the long-lived client and the factory from kombu's own Redis channel.

        The channel is only read: its connection parameters (URL, SSL, socket and transport
        options) for our pool, its priority steps and separator for list keys. redis-py's pool
        reconnects after a fork (it checks the pid), so the client survives pre-forking.
        """
        with self._lock:
            if self._redis is None:
                with self.app.connection_for_write() as conn:
                    conn.ensure_connection(max_retries=0)  # fail fast: the caller retries
                    channel = conn.channel()
                    try:
                        params = channel._connparams()
                        client_class = channel.Client  # prefixes keys if global_keyprefix is set
                        layout = RedisLayout.of_channel(
                            channel, maybe_delivery_mode(self.app.conf.task_default_delivery_mode)
                        )
                    finally:
                        channel.close()
                pool = redis.ConnectionPool(**params)
                self._redis = (client_class(connection_pool=pool), MessageFactory(layout))
            return self._redis

    # --- Celery, per message ---------------------------------------------------------------

    def _publish_celery(self, items: list[Dispatch]) -> int:
        sent = 0
        try:
            with self.app.producer_or_acquire() as producer:
                for item in items:
                    self._send(producer, item)
                    sent += 1
        except BROKER_ERRORS as exc:
            return sent + _publish_failed(exc, len(items) - sent)
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
            headers={
                "request_id": item.request_id,
                "ledger_attempt": item.attempt,
                "ledger_claim": item.claim,
            },
            producer=producer,
            # Celery also copies these two options into the message properties.
            **_reprs(item),
        )

    def revoke(self, task_id: uuid.UUID, *, terminate: bool) -> None:
        """Tell workers to drop (and, if running, terminate) the task's message; best effort.

        The ledger already holds the task as cancelled, so a worker that misses this broadcast
        still refuses to start it.
        """
        try:
            # SIGKILL: pool processes ignore SIGTERM when the worker remaps it for soft shutdown,
            # and a cancelled attempt has nothing left to report (the ledger already says so).
            self.app.control.revoke(str(task_id), terminate=terminate, signal="SIGKILL")
        except BROKER_ERRORS as exc:
            log.warning(
                "revoke broadcast failed", extra={"task_id": str(task_id), "error": str(exc)}
            )


def _push(client: redis.Redis, lists: dict[str, list[str]]) -> int:
    """LPUSH each list's payloads in one pipeline; return how many Redis accepted.

    One LPUSH with several values leaves the list as that many LPUSHes in the same order would.
    """
    pipe = client.pipeline(transaction=False)
    for key, payloads in lists.items():
        pipe.lpush(key, *payloads)
    results = pipe.execute(raise_on_error=False)
    sent = 0
    for payloads, result in zip(lists.values(), results, strict=True):
        if isinstance(result, Exception):
            log.warning(
                "broker refused messages; the reconciler will publish again",
                extra={"error": str(result), "unsent": len(payloads)},
            )
        else:
            sent += len(payloads)
    return sent


def _publish_failed(exc: Exception, unsent: int) -> int:
    log.warning(
        "broker publish failed; the reconciler will publish again",
        extra={"error": str(exc), "unsent": unsent},
    )
    return 0


def _reprs(item: Dispatch) -> dict[str, str]:
    """send_task's argsrepr/kwargsrepr options for the item (none: Celery's defaults)."""
    given = {"argsrepr": item.argsrepr, "kwargsrepr": item.kwargsrepr}
    return {name: value for name, value in given.items() if value is not None}
