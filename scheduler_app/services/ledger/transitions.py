"""The one way a task changes state: a guarded UPDATE and everything written beside it.

Every move is built by :func:`move_sql` from one definition: the UPDATE of ``tasks`` guarded by
the allowed sources (``states.ALLOWED_SOURCES``), its timeline event, the run it starts or
closes, the dead letter of a failure, and the outcome of a terminal move (``ledger.outcomes``),
all in one statement, so none of them can be written without the others. The worker's claim
and success are the same builder's output with positional parameters, prepared once per
connection; the rarer moves (failure, cancel, expiry, release) run through a session.

Nothing outside this package changes ``tasks.status`` (tests/unit/test_ledger_seam.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy.orm import Session, sessionmaker

from scheduler_app.services.ledger.connection import LedgerConnection, PreparedStatement
from scheduler_app.services.ledger.outcomes import SEAM, OutcomeSeam
from scheduler_app.services.ledger.unit import after_commit
from scheduler_app.states import ALLOWED_SOURCES, TaskStatus

# What a dead letter copies from the failed task.
DEAD_LETTER_COLUMNS = (
    "owner_id",
    "task",
    "args",
    "kwargs",
    "queue",
    "error_type",
    "error_message",
)


def _sources(to: TaskStatus, only_from: Iterable[TaskStatus] | None = None) -> str:
    allowed = ALLOWED_SOURCES[to]
    if only_from is not None:
        allowed = allowed & frozenset(only_from)
    return ", ".join(f"'{s.value}'" for s in sorted(allowed)) or "NULL"


@dataclass(frozen=True)
class Move:
    """One guarded state change, as SQL expressions (parameters are the caller's style).

    ``rows`` picks the tasks (``id = $1``); ``set`` and ``guards`` add to the UPDATE; ``run``
    starts the attempt's run (a move to running) or closes it with these columns (any other
    move); ``run_rows`` finds the run to close.
    """

    to: TaskStatus
    rows: str
    set: tuple[tuple[str, str], ...] = ()
    guards: tuple[str, ...] = ()
    only_from: frozenset[TaskStatus] | None = None
    returning: tuple[str, ...] = ()
    worker: str = "NULL"
    detail: str = "NULL"
    run: tuple[tuple[str, str], ...] | None = None
    run_rows: str = "runs.task_id = moved.id AND runs.attempt = moved.attempts"
    traceback: str = "NULL"
    # When the event happened (the claim of an attempt that started earlier says when it did).
    event_at: str = "clock_timestamp()"
    # A move that passes through this state on the way, in the same statement (an attempt claimed
    # and finished at once): guarded by this state's sources, recorded with an event of its own
    # at ``via_at``, and its run inserted already closed.
    via: TaskStatus | None = None
    via_at: str = "clock_timestamp()"
    # A FROM item of the UPDATE (several tasks, each with values of its own: see SUCCEED_MANY).
    source: str | None = None

    def sql(self, seam: OutcomeSeam = SEAM) -> str:
        """The statement: returns ``id, attempts, *returning`` and, if terminal, ``outcome_id``."""
        to = self.to
        selected = list(dict.fromkeys(["id", "attempts", *self.returning]))
        returned = list(selected)
        if to is TaskStatus.FAILED:
            returned += DEAD_LETTER_COLUMNS
        record = seam.record_sql(to) if to.terminal else None
        if record is not None:
            returned += seam.columns()
        sets = ", ".join([f"status = '{to.value}'", *(f"{c} = {e}" for c, e in self._sets())])
        # "(...) IS TRUE": a prepared plan may not turn the guard into a scan of the status index
        guard = f"(status IN ({_sources(self.via or to, self.only_from)})) IS TRUE"
        where = " AND ".join([self.rows, guard, *self.guards])
        ctes = [
            f"moved AS (\n    UPDATE tasks SET {sets}\n"
            + (f"    FROM {self.source}\n" if self.source else "")
            + f"    WHERE {where}\n"
            f"    RETURNING {', '.join(dict.fromkeys(returned))}\n)",
            self._event_sql(),
        ]
        if self.run is not None:
            ctes.append(self._run_sql())
        if to is TaskStatus.FAILED:
            ctes.append(
                "dead_letter AS (\n    INSERT INTO dead_letters (id, task_id, "
                f"{', '.join(DEAD_LETTER_COLUMNS)}, traceback, attempts, worker, failed_at)\n"
                f"    SELECT gen_random_uuid(), id, {', '.join(DEAD_LETTER_COLUMNS)}, "
                f"{self.traceback}, attempts, {self.worker}, clock_timestamp() FROM moved\n"
                "    ON CONFLICT (task_id) DO NOTHING\n)"
            )
        columns = ", ".join(f"moved.{c}" for c in selected)
        if record is not None:
            ctes.append(record)
            tail = (
                f"SELECT {columns}, outcome.id AS outcome_id FROM moved\n"
                "LEFT JOIN outcome ON outcome.task_id = moved.id"
            )
        elif to.terminal:
            tail = f"SELECT {columns}, NULL::bigint AS outcome_id FROM moved"
        else:
            tail = f"SELECT {columns} FROM moved"
        return "WITH " + ",\n".join(ctes) + "\n" + tail

    def _sets(self) -> tuple[tuple[str, str], ...]:
        """The SET list; a terminal move also stamps what retention needs, in the same UPDATE.

        A task with a retention override (``retention`` seconds) gets its ``prune_after``; one
        without keeps NULL (no entry in ix_tasks_prune_after: it is found by its state and
        ``finished_at``, so a change of the default applies to it). No extra round trip.
        """
        if not self.to.terminal:
            return self.set
        named = {column for column, _ in self.set}
        extra = [("prune_after", "clock_timestamp() + retention * interval '1 second'")]
        if "finished_at" not in named:
            extra.append(("finished_at", "coalesce(finished_at, clock_timestamp())"))
        return (*self.set, *extra)

    def _event_sql(self) -> str:
        head = (
            "event AS (\n"
            "    INSERT INTO task_events (task_id, at, status, attempt, worker, detail)\n"
        )
        if self.via is None:
            return (
                f"{head}    SELECT id, {self.event_at}, '{self.to.value}', attempts, "
                f"{self.worker}, {self.detail} FROM moved\n)"
            )
        steps = (
            f"({self.via_at}, '{self.via.value}', NULL::text), "
            f"({self.event_at}, '{self.to.value}', {self.detail})"
        )
        return (
            f"{head}    SELECT id, step.at, step.status, attempts, {self.worker}, step.detail\n"
            f"    FROM moved, LATERAL (VALUES {steps}) AS step (at, status, detail)\n)"
        )

    def _run_sql(self) -> str:
        run = dict(self.run or ())
        if TaskStatus.RUNNING in (self.to, self.via):
            names = ", ".join(["task_id", "attempt", *run])
            values = ", ".join(["id", "attempts", *run.values()])
            return f"run AS (\n    INSERT INTO runs ({names})\n    SELECT {values} FROM moved\n)"
        sets = ", ".join(f"{c} = {e}" for c, e in run.items())
        return (
            f"run AS (\n    UPDATE runs SET {sets} FROM moved\n"
            f"    WHERE {self.run_rows} AND runs.finished_at IS NULL\n"
            "      AND runs.task_id = moved.id\n)"
        )


def transition(
    session: Session,
    task_ids: uuid.UUID | Iterable[uuid.UUID],
    to: TaskStatus,
    *,
    values: Mapping[str, Any] | None = None,
    only_from: Iterable[TaskStatus] | None = None,
    attempt: int | None = None,
    expired_by: datetime | None = None,
    worker: str | None = None,
    detail: str | None = None,
    returning: Sequence[Any] = (),
    traceback: str | None = None,
    run: Mapping[str, Any] | None = None,
    merge: Mapping[str, Mapping[uuid.UUID, Mapping[str, Any]]] | None = None,
) -> list[Any]:
    """Move the given tasks to ``to`` where their current state allows it; return the moved rows.

    The guard carries the allowed sources (narrowed by ``only_from``; ``attempt`` and
    ``expired_by`` add "this attempt" and "expired by then"), so a task already terminal, or
    moved by someone else in between, is simply not returned: callers treat an empty result as
    "not applicable". A move to ``failed`` writes the task's dead letter in the same statement,
    so every failed task has exactly one; a terminal move records its outcome, which the
    consumers are handed once the session commits. ``returning`` names columns (or ``Task``
    attributes) to return besides ``id`` and ``attempts``. ``merge`` maps a JSONB column to
    an object per task id that is merged into it (a workflow node's ``kwargs["parents"]``).
    """
    ids = [task_ids] if isinstance(task_ids, uuid.UUID) else list(task_ids)
    if not ids:
        return []
    params: dict[str, Any] = {"ids": [str(i) for i in ids], "worker": worker, "detail": detail}
    guards = []
    if attempt is not None:
        guards.append("attempts = %(attempt)s")
        params["attempt"] = attempt
    if expired_by is not None:
        guards.append("expires_at <= %(expired_by)s")
        params["expired_by"] = expired_by

    def bind(prefix: str, items: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
        for name, value in items.items():
            params[f"{prefix}{name}"] = value
        return tuple((name, f"%({prefix}{name})s") for name in items)

    merged = []
    for column, per_task in (merge or {}).items():
        params[f"m_{column}"] = json.dumps(
            {str(task_id): value for task_id, value in per_task.items()}, default=str
        )
        merged.append(
            (
                column,
                f"coalesce({column}, '{{}}'::jsonb)"
                f" || coalesce(%(m_{column})s::jsonb -> id::text, '{{}}'::jsonb)",
            )
        )
    move = Move(
        to,
        rows="id = ANY(%(ids)s::uuid[])",
        set=bind("v_", values or {}) + tuple(merged),
        guards=tuple(guards),
        only_from=frozenset(only_from) if only_from is not None else None,
        returning=tuple(getattr(c, "name", c) for c in returning),
        worker="%(worker)s",
        detail="%(detail)s",
        run=bind("r_", run) if run is not None else None,
        traceback="%(traceback)s",
    )
    params["traceback"] = traceback
    rows = list(session.connection().exec_driver_sql(move.sql(), params).all())
    outcomes = [row.outcome_id for row in rows if to.terminal and row.outcome_id is not None]
    if outcomes:
        bind_to = session.get_bind()
        after_commit(session, lambda: SEAM.drain(sessionmaker(bind=bind_to), outcomes))
    return rows


def record_event(
    session: Session,
    task_ids: uuid.UUID | Iterable[uuid.UUID],
    status: TaskStatus | str,
    *,
    attempt: int = 0,
    worker: str | None = None,
    detail: str | None = None,
) -> None:
    """Add a timeline entry that is not a state change (e.g. a re-publish)."""
    ids = [task_ids] if isinstance(task_ids, uuid.UUID) else list(task_ids)
    session.connection().exec_driver_sql(
        "INSERT INTO task_events (task_id, at, status, attempt, worker, detail) "
        "SELECT id, clock_timestamp(), %(status)s, %(attempt)s, %(worker)s, %(detail)s "
        "FROM unnest(%(ids)s::uuid[]) AS id",
        {
            "ids": [str(i) for i in ids],
            "status": str(status),
            "attempt": attempt,
            "worker": worker,
            "detail": detail,
        },
    )


class ClaimedAttempt(NamedTuple):
    """What a claim returns: the attempt number and the task's spec."""

    id: str
    attempts: int
    task: str
    args: list[Any] | None
    kwargs: dict[str, Any] | None
    queue: str
    priority: int
    max_retries: int
    backoff: float
    backoff_max: float
    jitter: bool
    timeout: float | None
    request_id: str | None
    run_at: datetime  # when the attempt was due (its wait is the claim's time minus this)
    workflow_id: str | None
    # The retry decision's inputs besides the above (services/tasks/backoff.py); started_at is
    # the first attempt's start (the claim keeps it).
    retry_strategy: str
    max_retry_duration: float | None
    started_at: datetime


# A worker takes nothing from a paused queue, and a paused worker takes nothing: the stored
# pauses (services/workers/controls.py) are checked in the read that starts every attempt (its
# claim, see below), so no prefetched
# message, late broadcast or worker started after the pause lets a task through. ``pauses``
# has a row per paused queue or worker (usually none): two probes of its primary key.
PAUSE_GUARD = (
    "NOT EXISTS (SELECT 1 FROM pauses WHERE (scope = 'queue' AND name = tasks.queue)"
    " OR (scope = 'worker' AND name = $4))"
)

# The moves of an attempt, prepared per worker connection: each is one round trip that
# Postgres rarely parses or plans again. A prepared plan outlives the statistics it was made
# with, so each leaves the planner only plans that suit any table size: the status guard cannot
# become an index scan (see Move.sql) and the run is found by its unique key from the parameters.
SUCCEED_MOVE = Move(
    TaskStatus.SUCCEEDED,  # $1 id, $2 attempt, $3 worker, $4 now, $5 result
    rows="id = $1",
    set=(
        ("finished_at", "$4"),
        ("result", "$5"),
        ("error_type", "NULL"),
        ("error_message", "NULL"),
    ),
    guards=("attempts = $2",),
    worker="$3",
    run=(("status", "'succeeded'"), ("finished_at", "$4")),
    run_rows="runs.task_id = $1 AND runs.attempt = $2",
)


# An attempt is claimed lazily (services/tasks/execution.py): the worker reads the task and takes
# a lock on the attempt, runs it, and records the claim with the outcome in one statement (or
# claims it on the way once it runs long enough to matter). The read is a SELECT, which writes
# nothing; the lock is a session-level advisory lock on (task, attempt), so a second message for
# the same attempt (a duplicate, a re-publish) finds it taken and does nothing while the first
# runs; once that one's outcome is recorded the task is no longer claimable. Locks are released
# at the start of the connection's next read, after the outcome committed (released earlier, a
# duplicate could read the task before that commit and run it again), or when the connection
# closes (its worker died).
READ_SQL = (
    "SELECT id, attempts + 1, {spec}, coalesce(started_at, $2),\n"
    "  CASE WHEN ({claimable}) IS TRUE AND (expires_at IS NULL OR expires_at > $2)\n"
    "    AND ({attempt} IS NULL OR attempts = {attempt} - 1) AND {pauses}\n"
    "  THEN {lock} END\n"
    "FROM {rows}"
)
# The read of one message's attempt ($1 id, $3 its attempt), and of a batch's (arrays of ids and
# attempts, in the batch's order; services/tasks/batching.py).
READ_ONE = {"attempt": "$3", "rows": "tasks WHERE id = $1"}
READ_MANY = {
    "attempt": "m_attempt",
    "rows": "unnest($1, $3) WITH ORDINALITY AS m (m_id, m_attempt, m_at)\n"
    "JOIN tasks ON tasks.id = m_id ORDER BY m_at",
}
ATTEMPT_LOCK = "pg_try_advisory_lock(hashtextextended(id::text, attempts + 1))"
# Before each read, on the same round trip: the previous attempt's lock.
UNLOCK_PREVIOUS = "SELECT pg_advisory_unlock_all()"
# The claim of an attempt that was read and locked at $2 (it runs already): as soon as it has run
# for claim_after, before its failure is recorded, or before it runs (``eager``).
CLAIM_MOVE = Move(
    TaskStatus.RUNNING,  # $1 id, $2 started, $3 attempt, $4 worker, $5 instance, $6 now
    rows="id = $1",
    set=(("attempts", "attempts + 1"), ("started_at", "coalesce(started_at, $2)")),
    # No pause or expiry guard: the attempt was allowed when it started (its read checked both).
    guards=("attempts = $3 - 1",),
    worker="$4",
    event_at="clock_timestamp() - ($6 - $2)",  # on the database's clock, as every event
    run=(
        ("worker", "$4"),
        ("worker_instance", "$5"),
        ("status", "'running'"),
        ("started_at", "$2"),
    ),
)
SUCCEED_UNCLAIMED_MOVE = Move(
    # $1 id, $2 attempt, $3 worker, $4 now, $5 result, $6 started, $7 instance
    TaskStatus.SUCCEEDED,
    rows="id = $1",
    set=(
        ("attempts", "$2"),
        ("started_at", "coalesce(started_at, $6)"),
        ("finished_at", "$4"),
        ("result", "$5"),
        ("error_type", "NULL"),
        ("error_message", "NULL"),
    ),
    guards=("attempts = $2 - 1",),
    worker="$3",
    via=TaskStatus.RUNNING,
    via_at="clock_timestamp() - ($4 - $6)",
    run=(
        ("worker", "$3"),
        ("worker_instance", "$7"),
        ("status", "'succeeded'"),
        ("started_at", "$6"),
        ("finished_at", "$4"),
    ),
)


def _lock_removed() -> bool:
    """Negative control of tests/e2e/test_lazy_claim.py: the read takes no lock."""
    return "claim_lock" in os.environ.get("SCHEDULER_TEST_REMOVE", "").split(",")


def _dedupe_removed() -> bool:
    """Negative control of tests/e2e/test_batching.py: a batch may read an attempt twice."""
    return "batch_dedupe" in os.environ.get("SCHEDULER_TEST_REMOVE", "").split(",")


def read_sql(rows: Mapping[str, str] = READ_ONE) -> str:
    """The read: PAUSE_GUARD is looked up now (tests/pause_control.py replaces it)."""
    spec = ", ".join(ClaimedAttempt._fields[2:-1])
    return READ_SQL.format(
        spec=spec,
        claimable=f"status IN ({_sources(TaskStatus.RUNNING)})",
        pauses=PAUSE_GUARD,
        lock="true" if _lock_removed() else ATTEMPT_LOCK,
        **rows,
    )


# The successes of a batch's unclaimed attempts in one statement: SUCCEED_UNCLAIMED_MOVE with
# each row's own values (arrays, one element per attempt), fenced by its attempt number as one.
# $1 ids, $2 attempts, $3 started, $4 finished, $5 results, $6 worker, $7 instance, $8 now
SUCCEED_MANY_MOVE = Move(
    TaskStatus.SUCCEEDED,
    rows="id = b_id",
    source="unnest($1, $2, $3, $4, $5) AS b (b_id, b_attempt, b_started, b_finished, b_result)",
    set=(
        ("attempts", "b_attempt"),
        ("started_at", "coalesce(started_at, b_started)"),
        ("finished_at", "b_finished"),
        ("result", "b_result"),
        ("error_type", "NULL"),
        ("error_message", "NULL"),
    ),
    guards=("attempts = b_attempt - 1",),
    returning=("b_started", "b_finished"),
    worker="$6",
    event_at="clock_timestamp() - ($8 - b_finished)",
    via=TaskStatus.RUNNING,
    via_at="clock_timestamp() - ($8 - b_started)",
    run=(
        ("worker", "$6"),
        ("worker_instance", "$7"),
        ("status", "'succeeded'"),
        ("started_at", "b_started"),
        ("finished_at", "b_finished"),
    ),
)
# Give back the locks of attempts read but not run (a batch cut short): $1 ids, $2 attempts.
UNLOCK_SQL = (
    "SELECT pg_advisory_unlock(hashtextextended(m_id::text, m_attempt))"
    " FROM unnest($1, $2) AS m (m_id, m_attempt)"
)


class _Prepared(NamedTuple):
    version: int
    read: PreparedStatement
    claim: PreparedStatement
    succeed: PreparedStatement
    succeed_unclaimed: PreparedStatement
    read_many: PreparedStatement
    succeed_many: PreparedStatement
    unlock: PreparedStatement


_prepared: _Prepared | None = None


def _named(name: str, types: tuple[str, ...], sql: str) -> PreparedStatement:
    # The name follows the text: a connection that prepared an earlier text (before a consumer
    # registered) prepares the new one instead of executing the old.
    digest = hashlib.sha1(sql.encode()).hexdigest()[:10]
    return PreparedStatement(f"{name}_{digest}", types, sql)


def prepared() -> _Prepared:
    """The claim and success statements for the consumers registered now."""
    global _prepared
    if _prepared is None or _prepared.version != SEAM.version:
        # read_sql() is built now: a negative control may have replaced its pause guard
        _prepared = _Prepared(
            SEAM.version,
            _named("ledger_read", ("uuid", "timestamptz", "integer", "text"), read_sql()).before(
                UNLOCK_PREVIOUS
            ),
            _named(
                "ledger_claim",
                ("uuid", "timestamptz", "integer", "text", "uuid", "timestamptz"),
                CLAIM_MOVE.sql(),
            ),
            _named(
                "ledger_succeed",
                ("uuid", "integer", "text", "timestamptz", "jsonb"),
                SUCCEED_MOVE.sql(),
            ),
            _named(
                "ledger_succeed_unclaimed",
                ("uuid", "integer", "text", "timestamptz", "jsonb", "timestamptz", "uuid"),
                SUCCEED_UNCLAIMED_MOVE.sql(),
            ),
            _named(
                "ledger_read_many",
                ("uuid[]", "timestamptz", "integer[]", "text"),
                read_sql(READ_MANY),
            ).before(UNLOCK_PREVIOUS),
            _named(
                "ledger_succeed_many",
                (
                    "uuid[]",
                    "integer[]",
                    "timestamptz[]",
                    "timestamptz[]",
                    "jsonb[]",
                    "text",
                    "uuid",
                    "timestamptz",
                ),
                SUCCEED_MANY_MOVE.sql(),
            ),
            _named("ledger_unlock", ("uuid[]", "integer[]"), UNLOCK_SQL),
        )
    return _prepared


def __getattr__(name: str) -> PreparedStatement:
    if name == "READ":
        return prepared().read
    if name == "CLAIM":
        return prepared().claim
    if name == "SUCCEED":
        return prepared().succeed
    raise AttributeError(name)


def succeed_attempt(
    conn: LedgerConnection,
    task_id: uuid.UUID,
    attempt: int,
    *,
    worker: str,
    now: datetime,
    result: str,
    sessions: sessionmaker[Session] | None = None,
) -> bool:
    """running -> succeeded for this attempt, with its event, run and outcome; False if not
    applicable. ``result`` is the JSON text of the result.

    The statement commits on its own (autocommit); its outcome, if a consumer wants it, is
    handed over right after through ``sessions`` (or later by the scheduler's sweep).
    """
    rows = conn.execute(prepared().succeed, (str(task_id), attempt, worker, now, result))
    return _handed_over(rows, sessions)


def read_attempt(
    conn: LedgerConnection,
    task_id: uuid.UUID,
    *,
    worker: str,
    now: datetime,
    attempt: int | None,
) -> tuple[ClaimedAttempt | None, bool | None]:
    """The next attempt of the task and whether this connection now holds its lock.

    (spec, True): claimable, and the lock is ours: run it. (spec, False): claimable, but another
    worker holds the attempt (a duplicate message). (spec or None, None): not claimable (finished,
    running, stale, expired, or refused by a pause) or not found. Writes nothing.
    """
    rows = conn.execute(prepared().read, (str(task_id), now, attempt, worker))
    if not rows:
        return None, None
    *spec, locked = rows[0]
    return ClaimedAttempt._make(spec), locked


def claim_started(
    conn: LedgerConnection,
    task_id: uuid.UUID,
    attempt: int,
    *,
    worker: str,
    instance: uuid.UUID | None,
    started: datetime,
    now: datetime,
) -> bool:
    """Record that ``attempt``, read and locked at ``started``, is running: queued/retrying ->
    running with its event and run, as the eager claim does. False if the task moved meanwhile
    (cancelled, expired)."""
    params = (str(task_id), started, attempt, worker, str(instance) if instance else None, now)
    return bool(conn.execute(prepared().claim, params))


def succeed_unclaimed(
    conn: LedgerConnection,
    task_id: uuid.UUID,
    attempt: int,
    *,
    worker: str,
    instance: uuid.UUID | None,
    started: datetime,
    now: datetime,
    result: str,
    sessions: sessionmaker[Session] | None = None,
) -> bool:
    """queued/retrying -> running -> succeeded for an attempt that was read but not claimed: both
    events, the closed run and the outcome in one statement; False if not applicable."""
    params = (
        str(task_id),
        attempt,
        worker,
        now,
        result,
        started,
        str(instance) if instance else None,
    )
    return _handed_over(conn.execute(prepared().succeed_unclaimed, params), sessions)


def _handed_over(rows: list[tuple], sessions: sessionmaker[Session] | None) -> bool:
    """Whether a success moved; its outcome, if a consumer wants it, is handed over now."""
    if rows and rows[0][-1] is not None and sessions is not None:
        SEAM.drain(sessions, [rows[0][-1]])
    return bool(rows)


def read_attempts(
    conn: LedgerConnection,
    messages: Sequence[tuple[uuid.UUID, int | None]],
    *,
    worker: str,
    now: datetime,
) -> dict[uuid.UUID, tuple[ClaimedAttempt, bool | None]]:
    """``read_attempt`` for several messages (task id, attempt) in one statement: each found
    task's spec and whether this connection now holds its attempt's lock (absent: not found).

    The ids must be distinct: this connection's lock is re-entrant, so a second message for the
    same attempt in one read would find it "locked by us" and run it twice.
    """
    ids = [str(task_id) for task_id, _ in messages]
    if len(set(ids)) != len(ids) and not _dedupe_removed():
        raise ValueError("read_attempts needs distinct task ids")
    rows = conn.execute(prepared().read_many, (ids, now, [a for _, a in messages], worker))
    found = {}
    for row in rows:
        *spec, locked = row
        claimed = ClaimedAttempt._make(spec)
        found[uuid.UUID(str(claimed.id))] = (claimed, locked)
    return found


@dataclass(frozen=True)
class Finished:
    """An unclaimed attempt that ran to success, waiting to be recorded with others."""

    task_id: uuid.UUID
    attempt: int
    started: datetime
    finished: datetime
    result: str  # JSON text


def succeed_many(
    conn: LedgerConnection,
    finished: Sequence[Finished],
    *,
    worker: str,
    instance: uuid.UUID | None,
    now: datetime,
    sessions: sessionmaker[Session] | None = None,
) -> set[uuid.UUID]:
    """``succeed_unclaimed`` for several attempts in one statement; the ids that moved (an
    attempt cancelled or declared lost meanwhile does not). Outcomes are handed over after."""
    if not finished:
        return set()
    rows = conn.execute(
        prepared().succeed_many,
        (
            [str(f.task_id) for f in finished],
            [f.attempt for f in finished],
            [f.started for f in finished],
            [f.finished for f in finished],
            [f.result for f in finished],
            worker,
            str(instance) if instance else None,
            now,
        ),
    )
    outcomes = [row[-1] for row in rows if row[-1] is not None]
    if outcomes and sessions is not None:
        SEAM.drain(sessions, outcomes)
    return {uuid.UUID(str(row[0])) for row in rows}


def unlock_attempts(conn: LedgerConnection, attempts: Sequence[tuple[uuid.UUID, int]]) -> None:
    """Release this connection's locks on attempts it read but will not run."""
    if attempts:
        conn.execute(prepared().unlock, ([str(t) for t, _ in attempts], [n for _, n in attempts]))
