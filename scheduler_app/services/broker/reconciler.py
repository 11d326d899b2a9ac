"""Re-publishing tasks whose broker message is gone (Redis flushed, restarted, or never reached).

Redis is transport only. A queued task is expected to have a message in its queue list, in the
``unacked`` hash (delivered, not yet acknowledged), or in a worker's hands as running. The
reconciler compares the ledger with Redis and publishes again what is missing; a duplicate is
harmless because a worker only runs a task it can claim with a guarded transition.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import redis
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app.config import Settings
from scheduler_app.models import Task, TaskEvent
from scheduler_app.models.base import utcnow
from scheduler_app.services.broker.dispatcher import Dispatcher
from scheduler_app.services.broker.layout import UNACKED_KEY, queue_keys
from scheduler_app.services.ledger.unit import after_commit, unit_of_work
from scheduler_app.services.tasks.dispatches import DISPATCH_COLUMNS, dispatch_of
from scheduler_app.services.tasks.execution import Executor
from scheduler_app.services.workers.controls import QUEUE_NOT_PAUSED
from scheduler_app.services.workers.registry import WorkerRegistry
from scheduler_app.states import CLAIMABLE

log = logging.getLogger(__name__)

EPOCH_KEY = "scheduler:broker-epoch"


def _message_key(raw: bytes) -> tuple[uuid.UUID, int | None] | None:
    """(task id, attempt it was published for) of a kombu message, or None if not ours."""
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    if isinstance(message, list):  # unacked entries are [message, exchange, routing_key]
        message = message[0] if message else {}
    headers = message.get("headers") or {} if isinstance(message, dict) else {}
    try:
        task_id = uuid.UUID(str(headers.get("id")))
    except ValueError:
        return None
    attempt = headers.get("ledger_attempt")
    return task_id, int(attempt) if isinstance(attempt, int) else None


MessageKeys = set[tuple[uuid.UUID, int | None]]


def messages_in_broker(
    client: redis.Redis, queues: list[str], chunk: int = 2000
) -> tuple[MessageKeys, MessageKeys]:
    """(task id, attempt) of every message in Redis: (waiting in a queue, delivered not acked)."""
    waiting: MessageKeys = set()
    delivered: MessageKeys = set()
    found = waiting

    def add(raw: bytes) -> None:
        key = _message_key(raw)
        if key is not None:
            found.add(key)

    for queue in queues:
        for key in queue_keys(queue):
            start = 0
            while True:
                items = client.lrange(key, start, start + chunk - 1)
                for raw in items:
                    add(raw)
                if len(items) < chunk:
                    break
                start += chunk
    found = delivered
    cursor = 0
    while True:
        cursor, entries = client.hscan(UNACKED_KEY, cursor, count=chunk)
        for raw in entries.values():
            add(raw)
        if cursor == 0:
            break
    return waiting, delivered


@dataclass
class Reconciler:
    sessions: sessionmaker[Session]
    dispatcher: Dispatcher
    broker: redis.Redis
    settings: Settings
    _suspects: set[uuid.UUID] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.workers = WorkerRegistry(self.sessions)
        self.executor = Executor(self.sessions, self.dispatcher, self.settings, types={})

    def tick(self, now: datetime | None = None) -> int:
        """One pass: recover lost attempts, then re-publish missing messages. Returns how many."""
        return self.recover_lost_attempts(now) + self.republish_missing(now)

    def recover_lost_attempts(self, now: datetime | None = None) -> int:
        """Running attempts whose worker died or dropped them are retried or dead-lettered."""
        lost = self.workers.lost_attempts(
            timeout=self.settings.worker_timeout,
            grace=max(self.settings.heartbeat_interval * 3, 1.0),
            now=now,
        )
        for attempt in lost:
            result = self.executor.abandon(
                attempt.task_id, attempt.attempt, attempt.worker, attempt.reason
            )
            log.warning(
                "attempt lost",
                extra={
                    "task_id": str(attempt.task_id),
                    "attempt": attempt.attempt,
                    "reason": attempt.reason,
                    "result": result.status,
                },
            )
        return len(lost)

    def republish_missing(self, now: datetime | None = None) -> int:
        """Compare ledger and broker once; publish again what is missing. Returns how many."""
        now = now or utcnow()
        broker_lost = bool(self.broker.set(EPOCH_KEY, str(uuid.uuid4()), nx=True))
        cutoff = now - timedelta(seconds=self.settings.reconcile_grace_seconds)
        with self.sessions() as session:
            rows = session.execute(
                select(Task.id, Task.attempts, Task.run_at)
                .where(
                    Task.status.in_([s.value for s in CLAIMABLE]),
                    Task.dispatched_at.is_not(None),
                    Task.dispatched_at <= cutoff,
                    # a paused queue's messages are refused and held on purpose
                    QUEUE_NOT_PAUSED,
                )
                .limit(20_000)
            ).all()
        if not rows:
            self._suspects.clear()
            return 0
        waiting, delivered = messages_in_broker(self.broker, list(self.settings.queues))
        # Only a message for the current attempt counts: a stale one (e.g. left unacked by a
        # dead worker) cannot start it. A delivered message whose task is overdue by more than
        # worker_timeout is held by a worker that died or hung: it does not count either.
        overdue = now - timedelta(seconds=self.settings.worker_timeout)
        missing = set()
        for row in rows:
            keys = {(row.id, row.attempts + 1), (row.id, None)}
            if keys & waiting or (keys & delivered and row.run_at > overdue):
                continue
            missing.add(row.id)
        # A message can be between a queue list and the unacked hash during one scan: only a
        # task missing on two scans in a row is published again, unless Redis lost everything.
        lost = missing if broker_lost else missing & self._suspects
        self._suspects = missing - lost
        if lost:
            self._republish(lost, now, "broker lost its data" if broker_lost else "message missing")
        return len(lost)

    def _republish(self, ids: set[uuid.UUID], now: datetime, why: str) -> None:
        with unit_of_work(self.sessions) as session:
            rows = session.execute(
                update(Task)
                .where(
                    Task.id.in_(ids),
                    Task.status.in_([s.value for s in CLAIMABLE]),
                )
                .values(dispatched_at=now)
                .returning(*DISPATCH_COLUMNS, Task.status)
            ).all()
            if rows:
                session.execute(
                    insert(TaskEvent),
                    [
                        {
                            "task_id": r.id,
                            "at": now,
                            "status": r.status,
                            "attempt": r.attempts,
                            "detail": f"re-published by the reconciler: {why}",
                        }
                        for r in rows
                    ],
                )
            # Claimed before it runs: the lost message may have been running on a worker that
            # died before its attempt was claimed, and that attempt must count.
            dispatches = [replace(dispatch_of(row._mapping), claim="eager") for row in rows]
            after_commit(session, lambda: self._published(dispatches, why))

    def _published(self, dispatches: list, why: str) -> None:
        sent = self.dispatcher.publish(dispatches)
        log.warning("reconciler re-published tasks", extra={"count": sent, "reason": why})
