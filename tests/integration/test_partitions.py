"""task_events is partitioned by day: the migration converts a table holding rows, the
scheduler creates partitions ahead and drops them on time (injected clock), an insert never
fails for want of a partition, and a kept task's events survive its partition's drop.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from scheduler_app.models.base import utcnow
from scheduler_app.services.retention import Partitions, ledger_figures
from scheduler_app.services.retention.partitions import partition_name
from scheduler_app.states import TaskStatus
from tests.integration.test_migrations import _config
from tests.integration.test_retention import _finish, _prune, _submit
from tests.support import Stack, TestDatabase

DAY = 86400


@pytest.fixture(scope="module")
def stack(tmp_path_factory, logdir) -> Iterator[Stack]:
    platform = Stack(
        tmp_path_factory.mktemp("partitions"),
        logdir,
        retention_succeeded=100,
        retention_cancelled=100,
        retention_failed=100,
        dlq_retention_days=0.001,
    )
    yield platform
    platform.close()


@pytest.fixture(scope="module")
def headers(stack) -> dict[str, str]:
    client, secret = stack.ext.clients.create("partitions", "admin")
    token = stack.app.test_client().post(
        "/api/v1/auth/token", json={"client_id": client.client_id, "client_secret": secret}
    )
    return {"Authorization": f"Bearer {token.json['access_token']}"}


@pytest.fixture
def api(stack):
    return stack.app.test_client()


def _long_kept(stack) -> Partitions:
    """Partitions kept 31 days: a far-ahead clock creates without dropping today's."""
    settings = dataclasses.replace(
        stack.settings,
        retention_succeeded=30 * DAY,
        retention_cancelled=30 * DAY,
        retention_failed=30 * DAY,
    )
    return Partitions(stack.ext.tasks.sessions, settings)


def _partitions(stack) -> list[str]:
    return [p.name for p in Partitions(stack.ext.tasks.sessions, stack.settings).existing()]


def _where(stack, task_id: str) -> list[str]:
    """The partition holding each of the task's events."""
    with stack.ext.tasks.sessions() as session:
        return list(
            session.scalars(
                text("SELECT tableoid::regclass::text FROM task_events WHERE task_id = :i"),
                {"i": task_id},
            )
        )


def test_partitions_are_created_ahead(stack):
    now = utcnow()
    names = _partitions(stack)
    for offset in range(4):  # the migration made today's and the next three
        assert partition_name((now + timedelta(days=offset)).date()) in names
    later = now + timedelta(days=10)
    done = _long_kept(stack).run(later)
    assert done["created"] == 4 and done["dropped"] == 0
    names = _partitions(stack)
    for offset in range(4):
        assert partition_name((later + timedelta(days=offset)).date()) in names
    assert _long_kept(stack).run(later)["created"] == 0


def test_an_event_no_partition_covers_goes_to_the_default_partition(stack, api, headers):
    task_id = _submit(api, headers)
    far = utcnow() + timedelta(days=20)  # after the partitions of the test above
    with stack.ext.tasks.sessions() as session:
        session.execute(
            text(
                "INSERT INTO task_events (task_id, at, status, attempt) "
                "VALUES (:i, :at, 'queued', 0)"
            ),
            {"i": task_id, "at": far},
        )
        session.commit()
    assert "task_events_default" in _where(stack, task_id)
    # A day whose events already sit in the default partition gets no partition of its own.
    done = _long_kept(stack).maintain(far)
    assert partition_name(far.date()) not in _partitions(stack)
    assert partition_name((far + timedelta(days=1)).date()) in _partitions(stack)
    assert done["created"] == 3


def test_a_partition_is_dropped_on_time_and_kept_tasks_keep_their_events(stack, api, headers):
    gone, kept = _submit(api, headers), _submit(api, headers, retention=30 * DAY)
    for task_id in (gone, kept):
        _finish(stack, api, headers, task_id, TaskStatus.SUCCEEDED)
    today = partition_name(utcnow().date())
    assert _where(stack, gone) == [today] * 3
    _prune(stack, 3 * DAY)
    before = ledger_figures(stack.ext.tasks.sessions)["pruned"]["task_events"]
    partitions = Partitions(stack.ext.tasks.sessions, stack.settings)
    # Its day ends at midnight; it goes a day plus the shortest retention (100 s) later.
    ends = datetime.combine(utcnow().date() + timedelta(days=1), datetime.min.time(), UTC)
    assert partitions.run(ends + timedelta(days=1, seconds=50))["dropped"] == 0
    assert today in _partitions(stack)
    done = partitions.run(ends + timedelta(days=1, seconds=150))
    assert done["dropped"] >= 1 and today not in _partitions(stack)
    assert done["moved"] >= 3
    assert _where(stack, gone) == []
    assert _where(stack, kept) == ["task_events_default"] * 3
    timeline = api.get(f"/api/v1/tasks/{kept}/events", headers=headers)
    assert [e["status"] for e in timeline.json] == ["queued", "running", "succeeded"]
    assert ledger_figures(stack.ext.tasks.sessions)["pruned"]["task_events"] > before
    # From the default partition they leave row by row with their task.
    _prune(stack, 31 * DAY)
    assert _where(stack, kept) == []


def test_migration_converts_a_table_holding_events():
    db = TestDatabase()
    db.create()
    config = _config(db.url)
    engine = create_engine(db.url)
    try:
        command.downgrade(config, "0006")
        old_day = datetime.now(UTC) - timedelta(days=12)
        with engine.begin() as conn:
            owner = uuid.uuid4()
            conn.execute(
                text(
                    "INSERT INTO clients (id, name, client_id, secret_hash, role) "
                    "VALUES (:o, 'm', 'm', 'x', 'admin')"
                ),
                {"o": owner},
            )
            conn.execute(
                text(
                    "INSERT INTO tasks (id, task, args, kwargs, queue, priority, status, "
                    "max_retries, backoff, backoff_max, jitter, run_at, owner_id, tags) "
                    "SELECT gen_random_uuid(), 'demo.echo', '[]', '{}', 'default', 5, "
                    "'succeeded', 0, 1, 1, false, now(), :o, '{}' FROM generate_series(1, 50)"
                ),
                {"o": owner},
            )
            conn.execute(
                text(
                    "INSERT INTO task_events (task_id, at, status, attempt) "
                    "SELECT id, :at + (row_number() OVER ()) * interval '1 hour', 'queued', 0 "
                    "FROM tasks"
                ),
                {"at": old_day},
            )
            events = conn.scalar(text("SELECT count(*) FROM task_events"))
        command.upgrade(config, "head")
        with engine.begin() as conn:
            assert conn.scalar(text("SELECT count(*) FROM task_events")) == events
            homes = set(
                conn.scalars(text("SELECT DISTINCT tableoid::regclass::text FROM task_events"))
            )
            assert len(homes) >= 3 and "task_events_default" not in homes
            # Each row in its own day's partition.
            assert not conn.scalar(
                text(
                    "SELECT count(*) FROM task_events WHERE tableoid::regclass::text"
                    " <> 'task_events_p' || to_char(at AT TIME ZONE 'UTC', 'YYYYMMDD')"
                )
            )
            # New events still get ids from the same sequence, after the old ones.
            task_id = conn.scalar(text("SELECT id FROM tasks LIMIT 1"))
            new_id = conn.scalar(
                text(
                    "INSERT INTO task_events (task_id, status, attempt) "
                    "VALUES (:i, 'queued', 0) RETURNING id"
                ),
                {"i": task_id},
            )
            assert new_id > events
        command.downgrade(config, "0006")
        with engine.begin() as conn:
            assert conn.scalar(text("SELECT count(*) FROM task_events")) == events + 1
    finally:
        engine.dispose()
        db.drop()
