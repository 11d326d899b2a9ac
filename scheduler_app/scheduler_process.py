"""The scheduler process: releases delayed tasks, re-publishes lost ones and hands outcomes to
their consumers (the deferred ones, and those whose process died before it could), in one
loop; fires schedules, prunes finished work past its retention and sends notifications
(``notifiers.dispatch``), each in a thread of its own.

Not to be confused with *schedules* (recurring firings, ``services/schedules``) or the
``scheduled`` task state.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

import redis
from sqlalchemy import text

from scheduler_app.config import Settings
from scheduler_app.db import make_engine, make_session_factory
from scheduler_app.models.base import utcnow
from scheduler_app.services.broker.dispatcher import Dispatcher, make_producer_app
from scheduler_app.services.broker.reconciler import Reconciler
from scheduler_app.services.dead_letters.service import purge_older_than
from scheduler_app.services.ledger.outcomes import SEAM
from scheduler_app.services.metrics.process import serve
from scheduler_app.services.notifiers.dispatch import Dispatcher as DeliveryDispatcher
from scheduler_app.services.retention.partitions import Partitions
from scheduler_app.services.retention.pruner import Pruner
from scheduler_app.services.schedules.firing import ScheduleRunner
from scheduler_app.services.tasks.promoter import expire_overdue, promote_due
from scheduler_app.services.tasks.service import TaskService
from scheduler_app.services.workflows.advance import bind_dispatcher
from scheduler_app.task_types import load_task_modules

log = logging.getLogger(__name__)

RECONCILER_LOCK = 0x5C4ED01E  # pg advisory lock: one reconciler scans at a time
RETENTION_INTERVAL = 3600.0
PRUNE_BACKLOG_PAUSE = 1.0  # between pruning passes while a backlog is left
PARTITION_INTERVAL = 600.0  # task_events' partitions: created days ahead, so rarely is enough
SWEEP_BATCH, SWEEP_BATCHES = 500, 8  # outcomes per transaction, transactions per sweep
SCHEDULE_RECHECK = 0.05  # seconds before a schedule found due after a tick is looked at again

# Negative control of test_a_slot_fires_at_its_time_not_a_tick_later (tests/e2e/test_schedules.py):
# the loop fires schedules only every schedule_interval.
_SCHEDULE_WAKE_REMOVED = "schedule_wake" in os.environ.get("SCHEDULER_TEST_REMOVE", "").split(",")


class Scheduler:
    def __init__(self, settings: Settings):
        self.settings = settings
        # The loop, the schedules, retention, and the delivery dispatcher's claims and records.
        self.engine = make_engine(settings, pool_size=5, max_overflow=2)
        self.sessions = make_session_factory(self.engine)
        self.dispatcher = Dispatcher(make_producer_app(settings))
        self.broker = redis.Redis.from_url(settings.broker_url, socket_timeout=10)
        self.reconciler = Reconciler(self.sessions, self.dispatcher, self.broker, settings)
        # The modules may also register outcome consumers.
        types = load_task_modules(settings.task_modules)
        bind_dispatcher(self.dispatcher)  # workflow nodes the outcome sweep releases
        self.schedules = ScheduleRunner(
            TaskService(self.sessions, self.dispatcher, settings, types), settings
        )
        self.stopping = threading.Event()
        self.pruner = Pruner(self.sessions, settings, stop=self.stopping)
        self.partitions = Partitions(self.sessions, settings)
        self.deliveries = DeliveryDispatcher(
            self.sessions, settings, self.stopping, announce=self.announce_outcomes
        )

    def promote(self) -> int:
        """Release due tasks and fail the ones that expired while waiting."""
        return promote_due(self.sessions, self.dispatcher, self.settings) + expire_overdue(
            self.sessions
        )

    def sweep_outcomes(self) -> int:
        """Hand outcomes left behind (their process died after the commit, or the deliveries
        thread is behind) to their consumers."""
        return self._drain_outcomes(deferred=False)

    def announce_outcomes(self) -> int:
        """Hand the outcomes only deferred consumers want (the notifier) to them: run by the
        deliveries thread, at its low priority."""
        return self._drain_outcomes(deferred=True)

    def _drain_outcomes(self, deferred: bool) -> int:
        # Batch after batch while batches come full (bounded).
        done = 0
        for _ in range(SWEEP_BATCHES):
            taken = SEAM.drain(self.sessions, limit=SWEEP_BATCH, deferred=deferred)
            done += taken
            if taken < SWEEP_BATCH:
                break
        return done

    def reconcile(self) -> int:
        """One reconciler pass, if this process holds the reconciler lock."""
        with self.engine.connect() as conn:
            if not conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": RECONCILER_LOCK}):
                return 0
            try:
                return self.reconciler.tick()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": RECONCILER_LOCK})

    def fire_schedules(self) -> int:
        """Fire the due slots of recurring schedules (each slot once across processes)."""
        return self.schedules.tick()

    def schedules_due_in(self) -> float | None:
        """Seconds until the earliest schedule is due (None: none is), so that the loop fires
        a slot at its time rather than up to ``schedule_interval`` later. One still due now
        (another scheduler holds it, or a tick left slots for the next) is looked at again
        after SCHEDULE_RECHECK, not in a busy loop."""
        if _SCHEDULE_WAKE_REMOVED:
            return None
        due = self.schedules.next_due()
        if due is None:
            return None
        return max(SCHEDULE_RECHECK, (due - utcnow()).total_seconds())

    def retain(self) -> int:
        """Drop dead letters past their retention."""
        return purge_older_than(self.sessions, self.settings.dlq_retention_days)

    def prune(self) -> int:
        """Remove finished tasks and workflows past their retention (one scheduler at a time)."""
        return sum(self.pruner.run().values())

    def prune_interval(self) -> float:
        """Until the next pass: soon while a backlog is left (the last pass ran out of budget)."""
        return PRUNE_BACKLOG_PAUSE if self.pruner.backlog else self.settings.prune_interval

    def maintain_partitions(self) -> int:
        """Create task_events' coming partitions, drop those past retention (one at a time)."""
        return sum(self.partitions.run().values())

    def run(self) -> None:
        """Loop until stopped (SIGTERM/SIGINT or :meth:`stop`)."""
        jobs: list[tuple[Callable[[], int], float]] = [
            (self.promote, self.settings.promoter_interval),
            (self.sweep_outcomes, self.settings.promoter_interval),
            (self.reconcile, self.settings.reconciler_interval),
            (self.retain, RETENTION_INTERVAL),
        ]
        due = [0.0] * len(jobs)
        if self.settings.scheduler_metrics_port:
            # scheduler_schedule_lag_seconds and the process's own metrics.
            serve(self.settings.scheduler_metrics_port, self.settings.metrics_bind)
        # Retention in a thread of its own: a pass of many batches must not hold up the
        # promoter's quarter-second rhythm.
        retention = threading.Thread(target=self._retention_loop, name="retention", daemon=True)
        retention.start()
        # Deliveries in another: their calls wait on receivers, never on this loop.
        deliveries = threading.Thread(target=self._delivery_loop, name="deliveries", daemon=True)
        deliveries.start()
        # Schedules in a third: a slot fires at its time, not after a reconciler pass.
        schedules = threading.Thread(target=self._schedule_loop, name="schedules", daemon=True)
        schedules.start()
        log.info("scheduler started")
        while not self.stopping.is_set():
            now = time.monotonic()
            for index, (job, interval) in enumerate(jobs):
                if now >= due[index]:
                    due[index] = now + interval
                    try:
                        job()
                    except Exception:
                        log.exception("scheduler job failed", extra={"job": job.__name__})
            self.stopping.wait(max(0.0, min(due) - time.monotonic()))
        schedules.join(timeout=10)
        retention.join(timeout=self.settings.prune_budget + 5)
        deliveries.join(timeout=2 * self.settings.webhook_timeout + 5)
        self.engine.dispose()
        log.info("scheduler stopped")

    def _retention_loop(self) -> None:
        """Prune every prune_interval (soon again while a backlog is left); partitions too."""
        partitions_due = 0.0
        while not self.stopping.is_set():
            jobs = [self.prune]
            if time.monotonic() >= partitions_due:
                partitions_due = time.monotonic() + PARTITION_INTERVAL
                jobs.insert(0, self.maintain_partitions)
            for job in jobs:
                try:
                    job()
                except Exception:
                    log.exception("scheduler job failed", extra={"job": job.__name__})
            self.stopping.wait(self.prune_interval())

    def _schedule_loop(self) -> None:
        """Fire due slots every schedule_interval, and as soon as the earliest is due."""
        while not self.stopping.is_set():
            wait: float | None = None
            try:
                self.fire_schedules()
                wait = self.schedules_due_in()
            except Exception:
                log.exception("scheduler job failed", extra={"job": "fire_schedules"})
            interval = self.settings.schedule_interval
            self.stopping.wait(interval if wait is None else min(interval, wait))

    def _delivery_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.deliveries.run()
            except Exception:  # keep sending: a bug in one pass must not end notifications
                log.exception("delivery dispatcher failed; restarting it")
                self.stopping.wait(1.0)

    def stop(self, *_: object) -> None:
        self.stopping.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
