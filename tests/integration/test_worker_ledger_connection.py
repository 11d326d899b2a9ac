"""The worker's hot path (claim and success as prepared statements on a connection of its own)
keeps every guard of the generic transition and survives losing its connection."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import psycopg2
import pytest
from sqlalchemy import select

from scheduler_app.models import Run, TaskEvent
from scheduler_app.models.base import utcnow
from scheduler_app.services.ledger import connection as ledger_connection
from scheduler_app.services.ledger.connection import LedgerConnection, connect_kwargs
from scheduler_app.services.ledger.transitions import (
    READ,
    SUCCEED,
    claim_started,
    read_attempt,
    succeed_attempt,
)
from scheduler_app.services.tasks.execution import Executor
from scheduler_app.task_types import load_task_modules
from tests import support


@pytest.fixture
def ledger(settings):
    conn = LedgerConnection(
        settings.database_url, application_name=f"test-ledger-{uuid.uuid4().hex[:8]}"
    )
    yield conn
    conn.close()


@pytest.fixture
def executor(app, settings, ledger) -> Executor:
    ext = app.extensions["scheduler"]
    return Executor(
        sessions=ext.tasks.sessions,
        dispatcher=ext.dispatcher,
        settings=settings,
        types=load_task_modules(settings.task_modules),
        instance=uuid.uuid4(),
        ledger=ledger,
    )


def _terminate(application_name: str) -> int:
    """Have Postgres end every backend of ``application_name``; how many it ended."""
    admin = psycopg2.connect(support.PG_ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s",
            (application_name,),
        )
        (ended,) = cur.fetchone()
    admin.close()
    return ended


def _timeline(executor: Executor, task_id: str) -> tuple[list[str], list[tuple[int, str]]]:
    tid = uuid.UUID(task_id)
    with executor.sessions() as session:
        events = session.scalars(
            select(TaskEvent.status).where(TaskEvent.task_id == tid).order_by(TaskEvent.id)
        ).all()
        runs = session.execute(
            select(Run.attempt, Run.status).where(Run.task_id == tid).order_by(Run.attempt)
        ).all()
    return list(events), [tuple(r) for r in runs]


def test_claim_and_success_record_the_run_and_both_events(executor, submit, submitter, api):
    task = submit(submitter, args=["hello"])
    assert executor.run(task["id"], "w1", attempt=1).status == "succeeded"
    done = api.get(f"/api/v1/tasks/{task['id']}", headers=submitter).json
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert done["result"] == {"args": ["hello"], "kwargs": {}}
    events, runs = _timeline(executor, task["id"])
    assert events[-2:] == ["running", "succeeded"]
    assert runs == [(1, "succeeded")]


def test_duplicate_and_stale_messages_do_nothing(executor, submit, submitter):
    """Negative control: the first delivery of the same message does run the task."""
    task = submit(submitter)
    assert executor.run(task["id"], "w1", attempt=1).status == "succeeded"
    before = _timeline(executor, task["id"])
    assert executor.run(task["id"], "w2", attempt=1).status == "skipped"  # duplicate
    assert executor.run(task["id"], "w2", attempt=None).status == "skipped"  # no attempt header
    assert executor.run(task["id"], "w2", attempt=2).status == "skipped"  # not published
    assert _timeline(executor, task["id"]) == before


def test_message_for_an_attempt_other_than_the_next_one_does_not_start_it(
    executor, submit, submitter
):
    task = submit(submitter)
    assert executor.run(task["id"], "w1", attempt=2).status == "skipped"
    assert _timeline(executor, task["id"])[1] == []
    assert executor.run(task["id"], "w1", attempt=1).status == "succeeded"


def test_cancelled_task_never_runs_and_a_late_success_is_discarded(
    executor, ledger, submit, submitter, api
):
    waiting = submit(submitter)
    assert api.post(f"/api/v1/tasks/{waiting['id']}/cancel", headers=submitter).status_code == 200
    assert executor.run(waiting["id"], "w1", attempt=1).status == "skipped"
    assert _timeline(executor, waiting["id"])[1] == []

    running = submit(submitter)
    tid = uuid.UUID(running["id"])
    claimed, locked = read_attempt(ledger, tid, worker="w1", now=utcnow(), attempt=1)
    assert claimed is not None and claimed.attempts == 1 and locked
    now = utcnow()
    assert claim_started(ledger, tid, 1, worker="w1", instance=None, started=now, now=now)
    assert api.post(f"/api/v1/tasks/{running['id']}/cancel", headers=submitter).status_code == 200
    now = utcnow()
    assert not succeed_attempt(ledger, tid, 1, worker="w1", now=now, result="1")
    after = api.get(f"/api/v1/tasks/{running['id']}", headers=submitter).json
    assert after["status"] == "cancelled" and after["result"] is None
    assert _timeline(executor, running["id"])[1] == [(1, "cancelled")]


def test_expired_task_fails_instead_of_running(executor, submit, submitter, api):
    task = submit(submitter, expires_at=(utcnow() + timedelta(seconds=0.5)).isoformat())
    time.sleep(0.6)
    assert executor.run(task["id"], "w1", attempt=1).status == "skipped"
    done = api.get(f"/api/v1/tasks/{task['id']}", headers=submitter).json
    assert done["status"] == "failed" and done["error"]["type"] == "Expired"
    assert _timeline(executor, task["id"])[1] == []


def test_ledger_connection_reconnects_after_postgres_terminates_it(
    executor, ledger, submit, submitter
):
    first = submit(submitter)
    assert executor.run(first["id"], "w1", attempt=1).status == "succeeded"
    assert _terminate(ledger.kwargs["application_name"]) == 1
    second = submit(submitter)
    assert executor.run(second["id"], "w1", attempt=1).status == "succeeded"
    assert _timeline(executor, second["id"])[1] == [(1, "succeeded")]


def test_terminated_plain_connection_fails_its_next_statement(settings):
    """Negative control of the reconnect test: termination does break a connection."""
    name = f"test-plain-{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(**connect_kwargs(settings.database_url), application_name=name)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
    assert _terminate(name) == 1
    with pytest.raises(psycopg2.OperationalError), conn.cursor() as cur:
        cur.execute("SELECT 1")
    conn.close()


def test_statement_that_fails_on_a_live_connection_is_not_sent_again(ledger):
    """Only a broken connection is retried; a failing statement raises (and changes nothing)."""
    with pytest.raises(psycopg2.DataError):
        ledger.execute(READ, ("not-a-uuid", utcnow(), None, "w1"))
    assert ledger.execute(READ, (str(uuid.uuid4()), utcnow(), None, "w1")) == []


def test_prepared_claim_is_prepared_again_after_a_migration_changes_its_columns():
    """A migration that changes a returned column's type invalidates the prepared plan
    ("cached plan must not change result type"); the next claim prepares it again.

    Negative control: the same EXECUTE on a plain connection fails after the change.
    """
    db = support.TestDatabase(prefix="sched_test_prep")
    db.create()
    try:
        ledger = LedgerConnection(db.url, application_name="test-prep")
        plain = psycopg2.connect(**connect_kwargs(db.url))
        plain.autocommit = True
        params = (str(uuid.uuid4()), utcnow(), None, "w1")
        with plain.cursor() as cur:
            cur.execute(READ.prepare_sql)
            cur.execute(READ.execute_sql, params)
        assert ledger.execute(READ, params) == []
        with plain.cursor() as cur:
            cur.execute("ALTER TABLE tasks ALTER COLUMN request_id TYPE text")
        with pytest.raises(psycopg2.errors.FeatureNotSupported), plain.cursor() as cur:
            cur.execute(READ.execute_sql, params)
        assert ledger.execute(READ, params) == []
        ledger.close()
        plain.close()
    finally:
        db.drop()


def test_prepared_success_is_planned_again_as_the_runs_table_grows(monkeypatch):
    """A plan made while ``runs`` was nearly empty (as autovacuum last analysed it) scans it
    whole; once the table has grown, the next preparation finds the run by its unique key.

    Negative control: before the statement is prepared again, the stale plan is the scan.
    """
    monkeypatch.setattr(ledger_connection, "REPREPARE_EVERY", 20)
    db = support.TestDatabase(prefix="sched_test_plan")
    db.create()
    try:
        admin = psycopg2.connect(**connect_kwargs(db.url))
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("VACUUM ANALYZE runs")
        ledger = LedgerConnection(db.url, application_name="test-plan")
        missing = (str(uuid.uuid4()), 1, "w1", utcnow(), "1")
        for _ in range(10):  # past the custom plans: the generic one is cached
            ledger.execute(SUCCEED, missing)
        with admin.cursor() as cur:
            cur.execute(
                "INSERT INTO clients (id, name, client_id, secret_hash, role, created_at) "
                "VALUES (gen_random_uuid(), 'plan', 'plan', 'x', 'submitter', now()) RETURNING id"
            )
            (owner,) = cur.fetchone()
            cur.execute(
                "INSERT INTO tasks (id, task, args, kwargs, queue, priority, status, "
                "max_retries, backoff, backoff_max, jitter, run_at, owner_id, tags) VALUES "
                "(gen_random_uuid(), 'demo.echo', '[]', '{}', 'default', 5, 'running', 0, 1, "
                "1, false, now(), %s, '{}') RETURNING id",
                (owner,),
            )
            (task_id,) = cur.fetchone()
            cur.execute(
                "INSERT INTO runs (task_id, attempt, status, started_at, finished_at) "
                "SELECT %s, g, 'failed', now(), now() FROM generate_series(1, 20000) g",
                (task_id,),
            )

        def plan() -> str:
            with ledger._connection().cursor() as cur:
                cur.execute(f"EXPLAIN {SUCCEED.execute_sql}", missing)
                return "\n".join(row[0] for row in cur.fetchall())

        assert "Seq Scan on runs" in plan()
        for _ in range(20):
            ledger.execute(SUCCEED, missing)
        assert "Seq Scan on runs" not in plan()
        assert "uq_runs_task_attempt" in plan()
        ledger.close()
        admin.close()
    finally:
        db.drop()


def test_threads_sharing_a_ledger_connection_each_get_their_own(ledger):
    """A thread pool (``-P threads``) must not interleave statements on one connection."""
    connected = threading.Barrier(3)
    counted = threading.Barrier(3)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(30):
                ledger.execute(READ, (str(uuid.uuid4()), utcnow(), None, "w1"))
        except BaseException as exc:  # reported below
            errors.append(exc)
        connected.wait(10)
        counted.wait(10)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    connected.wait(10)
    admin = psycopg2.connect(support.PG_ADMIN_DSN)
    with admin.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (ledger.kwargs["application_name"],),
        )
        (backends,) = cur.fetchone()
    admin.close()
    counted.wait(10)
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert backends == 2


def test_statements_are_prepared_again_after_the_session_discards_them(ledger):
    params = (str(uuid.uuid4()), utcnow(), None, "w1")
    assert ledger.execute(READ, params) == []
    with ledger._connection().cursor() as cur:
        cur.execute("DEALLOCATE ALL")
    assert ledger.execute(READ, params) == []
