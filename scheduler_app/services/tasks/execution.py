"""Running one attempt of a task on a worker: claim it, call the code, record the outcome.

Every step is a guarded transition, so a duplicate message (redelivery, a second publish by the
reconciler) finds the task no longer claimable and does nothing.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app.config import Settings
from scheduler_app.logs import bind_context
from scheduler_app.models import Task
from scheduler_app.models.base import utcnow
from scheduler_app.services.broker.dispatcher import Dispatch, Dispatcher
from scheduler_app.services.ledger.connection import LedgerConnection
from scheduler_app.services.ledger.transitions import (
    ClaimedAttempt,
    Finished,
    claim_started,
    read_attempt,
    succeed_attempt,
    succeed_unclaimed,
    transition,
)
from scheduler_app.services.ledger.unit import after_commit, unit_of_work
from scheduler_app.services.tasks.backoff import retry_delay, retry_window_closed
from scheduler_app.services.tasks.claims import Attempt, LateClaims
from scheduler_app.services.tasks.counters import CounterStore
from scheduler_app.services.tasks.dispatches import DISPATCH_COLUMNS, dispatch_of
from scheduler_app.services.workers.controls import ClaimRefusals
from scheduler_app.states import CLAIMABLE, TaskStatus
from scheduler_app.task_types import RetryLaterError, TaskContext, TaskType

log = logging.getLogger(__name__)

# Measurement only (bench row 3i): BENCH_OUTCOME_WRITE=off runs attempts from their read and
# lock but records no success, so a drain shows what the ledger's write costs. The tasks stay
# queued (the bench cancels them). Not a SCHEDULER_* setting, so no profile mistakes it for one.
_OUTCOME_WRITE_REMOVED = os.environ.get("BENCH_OUTCOME_WRITE") == "off"

SPEC_COLUMNS = (
    Task.task,
    Task.args,
    Task.kwargs,
    Task.queue,
    Task.priority,
    Task.max_retries,
    Task.backoff,
    Task.backoff_max,
    Task.jitter,
    Task.timeout,
    Task.request_id,
    Task.retry_strategy,
    Task.max_retry_duration,
    Task.started_at,
)


class AttemptTimeout(Exception):
    """The attempt ran past its soft time limit."""


class WorkerLostError(Exception):
    """The worker (or its pool process) running the attempt died or stopped."""


@dataclass(frozen=True)
class AttemptResult:
    """What became of one delivery of a task to this worker (not the task's outcome)."""

    # skipped | succeeded | retrying | failed | discarded | held (its queue is paused) |
    # handed_back (this worker is paused: published again for another)
    status: str
    retry_in: float | None = None
    error: str | None = None  # "ErrorType: message" of a failed attempt


def _result_json(value: Any, limit: int) -> str:
    """The result as JSON text no larger than ``limit`` bytes (a preview when it is larger)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = json.dumps(repr(value))
    if "\\u0000" in text:  # Postgres jsonb cannot store NUL characters
        text = json.dumps(json.loads(text.replace("\\u0000", "")))
    if len(text) <= limit:
        return text
    return json.dumps({"truncated": True, "bytes": len(text), "preview": text[: min(1024, limit)]})


def _error_text(exc: BaseException) -> tuple[str, str]:
    kind = type(exc).__name__
    message = str(exc).replace("\x00", "")[:4000] or kind
    return kind, message


@dataclass
class Executor:
    sessions: sessionmaker[Session]
    dispatcher: Dispatcher
    settings: Settings
    types: Mapping[str, TaskType]
    instance: uuid.UUID | None = None
    # The claim and the success of every attempt go through this connection; the rarer moves
    # (failure, expiry, loss, timeout) through sessions.
    ledger: LedgerConnection | None = None
    # observe(queue, task, wait_seconds, run_seconds) after each attempt that ran (metrics).
    observe: Callable[[str, str, float, float], None] | None = None
    # on_claim(attempt) after each late claim (services/tasks/batching.py).
    on_claim: Callable[[Attempt], None] | None = None
    # How long the task code of the last attempt that ran took (seconds), in this process.
    last_run: float | None = None

    def __post_init__(self) -> None:
        self.counters = CounterStore(self.sessions)
        self.refusals = ClaimRefusals(self.sessions, self.dispatcher)
        if self.ledger is None:
            self.ledger = LedgerConnection(
                self.settings.database_url,
                synchronous_commit=self.settings.worker_synchronous_commit,
            )
        self.late_claims = LateClaims(self._late_claim, tick=self.settings.claim_after / 2)

    def run(
        self,
        task_id: str,
        worker: str,
        *,
        attempt: int | None = None,
        timeout_error: tuple[type[BaseException], ...] = (),
        eager: bool = False,
        prefetched: tuple[ClaimedAttempt | None, bool | None] | None = None,
        deferred: list[Finished] | None = None,
    ) -> AttemptResult:
        """Run one attempt of the task if it is claimable; return what became of it.

        ``attempt`` is the attempt the message was published for: a stale message (one that
        outlived its attempt, e.g. redelivered after a worker loss) cannot start a later one.
        The attempt is claimed lazily (services/tasks/claims.py) unless ``eager``: a message
        published again or redelivered may have been running on a worker that died before its
        attempt was claimed, so this one is claimed before it runs and a task that kills its
        worker every time still uses up its attempts.

        A batch (services/tasks/batching.py) passes the attempt's read (``prefetched``: what
        ``read_attempt`` returns, from the batch's one read) and ``deferred``, where an unclaimed
        success is left for the batch to record with the others instead of being written now.
        """
        tid = uuid.UUID(task_id)
        read = self._read(tid, worker, attempt, eager, prefetched)
        if isinstance(read, AttemptResult):
            return read
        if read is None:
            return AttemptResult("skipped")
        claimed, current = read
        # Every line logged about this attempt says which one it is (a contextvar: ~1 µs).
        with bind_context(
            attempt=claimed.attempts,
            worker=worker,
            queue=claimed.queue,
            task=claimed.task,
            workflow_id=str(claimed.workflow_id) if claimed.workflow_id else None,
            request_id=claimed.request_id,
        ):
            return self._run(tid, claimed, current, worker, timeout_error, deferred)

    def _run(
        self,
        tid: uuid.UUID,
        claimed: ClaimedAttempt,
        current: Attempt,
        worker: str,
        timeout_error: tuple[type[BaseException], ...],
        deferred: list[Finished] | None = None,
    ) -> AttemptResult:
        task_id = str(tid)
        attempt = claimed.attempts
        ttype = self.types.get(claimed.task)
        if ttype is None:
            exc = LookupError(f"task type {claimed.task!r} is not registered on worker {worker}")
            return self._failed(tid, attempt, worker, exc, permanent=True, current=current)
        kwargs = dict(claimed.kwargs or {})
        if ttype.wants_context:
            kwargs["ctx"] = TaskContext(
                task_id=task_id,
                attempt=attempt,
                max_retries=claimed.max_retries,
                worker=worker,
                request_id=claimed.request_id,
                counters=self.counters,
                settings=self.settings,
            )
        started = time.perf_counter()
        try:
            result = ttype.fn(*(claimed.args or []), **kwargs)
        except Exception as exc:
            self._observe(claimed, started)
            if timeout_error and isinstance(exc, timeout_error):
                exc = AttemptTimeout(
                    f"attempt {attempt} exceeded its timeout of {claimed.timeout}s"
                )
            return self._failed(
                tid,
                attempt,
                worker,
                exc,
                permanent=ttype.is_permanent(exc),
                spec=claimed,
                current=current,
            )
        self._observe(claimed, started)
        return self._succeeded(tid, current, worker, result, deferred)

    def _observe(self, claimed: Any, started: float) -> None:
        run = self.last_run = time.perf_counter() - started
        if self.observe is None:
            return
        # due -> started: the claim stamped started a moment before ``started``.
        wait = (utcnow() - claimed.run_at).total_seconds() - run
        self.observe(claimed.queue, claimed.task, wait, run)

    def abandon(
        self, tid: uuid.UUID, attempt: int, worker: str | None, reason: str
    ) -> AttemptResult:
        """Count a running attempt whose worker is gone as failed: retry it or dead-letter it."""
        with self.sessions() as session:
            spec = session.execute(
                select(*SPEC_COLUMNS).where(Task.id == tid, Task.attempts == attempt)
            ).first()
        if spec is None:
            return AttemptResult("skipped")
        exc = WorkerLostError(f"attempt {attempt} was lost: {reason}")
        return self._failed(tid, attempt, worker or "?", exc, permanent=False, spec=spec)

    def timed_out(self, tid: uuid.UUID, worker: str, attempt: int | None = None) -> AttemptResult:
        """The pool killed an attempt at its hard time limit: count it as a timed-out attempt.

        ``attempt`` (the message's) is claimed first if its process never did (it is claimed
        at half its timeout, unless something held the process up all along)."""
        if attempt is not None:
            self._claim_started(Attempt(tid, attempt, worker, utcnow()))
        with self.sessions() as session:
            spec = session.execute(
                select(Task.attempts, Task.timeout, *SPEC_COLUMNS).where(
                    Task.id == tid, Task.status == TaskStatus.RUNNING.value
                )
            ).first()
        if spec is None:
            return AttemptResult("skipped")
        exc = AttemptTimeout(
            f"attempt {spec.attempts} exceeded its timeout of {spec.timeout}s and was killed"
        )
        return self._failed(tid, spec.attempts, worker, exc, permanent=False, spec=spec)

    def reject(self, tid: uuid.UUID, worker: str, error_type: str, message: str) -> AttemptResult:
        """Fail a waiting task that this worker can never run (e.g. an unknown task type)."""
        now = utcnow()
        with unit_of_work(self.sessions) as session:
            moved = transition(
                session,
                tid,
                TaskStatus.FAILED,
                values={"finished_at": now, "error_type": error_type, "error_message": message},
                only_from=CLAIMABLE,
                worker=worker,
                detail=f"{error_type}: {message}",
            )
        return AttemptResult("failed" if moved else "skipped")

    def lost(self, tid: uuid.UUID, worker: str, attempt: int | None) -> AttemptResult:
        """The pool process running ``attempt`` died (main process): count the attempt as
        lost now if it was not claimed yet. A claimed one is the reconciler's, as ever."""
        if attempt is None or not self._claim_started(Attempt(tid, attempt, worker, utcnow())):
            return AttemptResult("skipped")
        return self.abandon(tid, attempt, worker, "its pool process died")

    def _claim_started(self, current: Attempt) -> bool:
        """Record ``current`` as running since it started (see ``claim_started``)."""
        return claim_started(
            self.ledger,
            current.task_id,
            current.number,
            worker=current.worker,
            instance=self.instance,
            started=current.started,
            now=utcnow(),
        )

    def _late_claim(self, current: Attempt) -> bool:
        """The claim of an attempt still running at its deadline (LateClaims' thread); the
        ``on_claim`` hook is told either way (refused: the task was cancelled meanwhile)."""
        try:
            return self._claim_started(current)
        finally:
            if self.on_claim is not None:
                self.on_claim(current)

    def status_of(self, tid: uuid.UUID) -> str | None:
        """The task's state now (None: not found)."""
        with self.sessions() as session:
            return session.execute(select(Task.status).where(Task.id == tid)).scalar()

    def _read(
        self,
        tid: uuid.UUID,
        worker: str,
        attempt: int | None,
        eager: bool,
        prefetched: tuple[ClaimedAttempt | None, bool | None] | None = None,
    ) -> tuple[ClaimedAttempt, Attempt] | AttemptResult | None:
        """The attempt to run, read and locked (claimed too if ``eager``); a result or None
        when there is none to run."""
        now = utcnow()
        if prefetched is None:
            claimed, locked = read_attempt(
                self.ledger, tid, worker=worker, now=now, attempt=attempt
            )
        else:
            claimed, locked = prefetched
        if claimed is not None and locked:
            current = Attempt(tid, claimed.attempts, worker, now)
            after = self.settings.claim_after
            if claimed.timeout is not None:
                after = min(after, claimed.timeout / 2)  # before the hard limit's kill
            if eager or after <= 0:
                if not current.claim(self._claim_started):
                    return None  # moved on between the read and the claim (cancelled, say)
            else:
                self.late_claims.watch(current, after)
            return claimed, current
        if locked is False:
            return None  # another worker is running this attempt: a duplicate message
        # Refused by a stored pause (the read checks them): the message is acked either way.
        refused = self.refusals.refusal(tid, worker, attempt, now)
        if refused is not None:
            if refused.queue_paused:
                if self.refusals.hold(tid, worker, refused.queue):
                    return AttemptResult("held")
                return self._read(tid, worker, attempt, eager)  # resumed in between
            if self.refusals.hand_back(tid, worker):
                return AttemptResult("handed_back")
            return None
        # Not claimable: a duplicate or stale message, a cancelled task, or an expired one,
        # which fails here so that it does not wait for the reconciler.
        with unit_of_work(self.sessions) as session:
            expired = transition(
                session,
                tid,
                TaskStatus.FAILED,
                values={
                    "finished_at": now,
                    "error_type": "Expired",
                    "error_message": "the task was not started before its expires_at",
                },
                only_from=CLAIMABLE,
                expired_by=now,
                worker=worker,
                detail="expired before it could start",
            )
        if expired:
            log.info("task expired before start", extra={"task_id": str(tid)})
        return None

    def _succeeded(
        self,
        tid: uuid.UUID,
        current: Attempt,
        worker: str,
        result: Any,
        deferred: list[Finished] | None = None,
    ) -> AttemptResult:
        value = _result_json(result, self.settings.result_max_bytes)
        now = utcnow()
        with current.lock:  # a claim under way finishes first; none starts after this
            current.decided = True
        self.late_claims.done(current)
        if current.refused:
            moved = False
        elif _OUTCOME_WRITE_REMOVED and not current.claimed:
            moved = True
        elif deferred is not None and not current.claimed:
            # recorded with the rest of its batch, which reports it if it did not move
            deferred.append(Finished(tid, current.number, current.started, now, value))
            moved = True
        elif current.claimed:
            moved = succeed_attempt(
                self.ledger,
                tid,
                current.number,
                worker=worker,
                now=now,
                result=value,
                sessions=self.sessions,
            )
        else:
            moved = succeed_unclaimed(
                self.ledger,
                tid,
                current.number,
                worker=worker,
                instance=self.instance,
                started=current.started,
                now=now,
                result=value,
                sessions=self.sessions,
            )
        # Not moved: cancelled meanwhile, or the attempt was declared lost and retried.
        return AttemptResult("succeeded" if moved else "discarded")

    def _failed(
        self,
        tid: uuid.UUID,
        attempt: int,
        worker: str,
        exc: BaseException,
        *,
        permanent: bool,
        spec: Any = None,
        current: Attempt | None = None,
    ) -> AttemptResult:
        if current is not None:
            # A failed attempt is always claimed first: its failure is a move from running.
            with current.lock:
                current.decided = True
                if not (current.claimed or current.refused):
                    current.claimed = self._claim_started(current)
            self.late_claims.done(current)
            if not current.claimed:
                return AttemptResult("discarded")
        now = utcnow()
        kind, message = _error_text(exc)
        trace = "".join(traceback.format_exception(exc))[-16000:]
        retry_in: float | None = None
        out_of_time = False
        if not permanent and spec is not None and attempt <= spec.max_retries:
            out_of_time = retry_window_closed(spec.started_at, now, spec.max_retry_duration)
            if not out_of_time:
                retry_in = retry_delay(
                    attempt,
                    spec.backoff,
                    spec.backoff_max,
                    spec.jitter,
                    strategy=spec.retry_strategy,
                )
            if isinstance(exc, RetryLaterError) and not out_of_time:
                retry_in = exc.delay
        run = {
            "status": "failed",
            "finished_at": now,
            "error_type": kind,
            "error_message": message,
            "traceback": trace,
            "retry_delay": retry_in,
        }
        with unit_of_work(self.sessions) as session:
            if retry_in is not None:
                run_at = now + timedelta(seconds=retry_in)
                soon = retry_in <= self.settings.lookahead_seconds
                moved = transition(
                    session,
                    tid,
                    TaskStatus.RETRYING,
                    values={
                        "run_at": run_at,
                        "error_type": kind,
                        "error_message": message,
                        "dispatched_at": now if soon else None,
                    },
                    attempt=attempt,
                    worker=worker,
                    detail=f"{kind}: {message} (next attempt in {retry_in:.3f}s)",
                    run=run,
                )
                if moved and soon:
                    retry = _retry_dispatch(tid, spec, run_at, attempt)
                    if isinstance(exc, WorkerLostError):  # it may well kill its worker again
                        retry = replace(retry, claim="eager")
                    after_commit(session, lambda: self.dispatcher.publish([retry]))
            else:
                moved = transition(
                    session,
                    tid,
                    TaskStatus.FAILED,
                    values={"finished_at": now, "error_type": kind, "error_message": message},
                    attempt=attempt,
                    only_from=(TaskStatus.RUNNING,),
                    worker=worker,
                    detail=f"{kind}: {message}"
                    + (
                        f" (not retried: max_retry_duration of {spec.max_retry_duration:g}s "
                        "since the first attempt has passed)"
                        if out_of_time
                        else ""
                    ),
                    traceback=trace,
                    run=run,
                )
        if not moved:
            return AttemptResult("discarded")
        if retry_in is None:
            log.info("task failed", extra={"task_id": str(tid), "error_type": kind})
            return AttemptResult("failed", error=f"{kind}: {message}")
        log.info(
            "attempt failed, retrying",
            extra={"task_id": str(tid), "error_type": kind, "retry_in": retry_in},
        )
        return AttemptResult("retrying", retry_in, f"{kind}: {message}")


def _retry_dispatch(tid: uuid.UUID, spec: Any, run_at: datetime, attempt: int) -> Dispatch:
    """The message of the next attempt, built like every other dispatch."""
    row = {column.key: getattr(spec, column.key, None) for column in DISPATCH_COLUMNS}
    return dispatch_of({**row, "id": tid, "run_at": run_at, "attempts": attempt})
