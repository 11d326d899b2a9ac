"""Retention on the real ledger: each final state's default, the overrides (task, type, queue,
schedule, workflow), what references keep, batches, counters and the archive.

The pruner runs in-process with an injected clock (``prune(now=...)``): a test moves time
forward instead of waiting. Negative control: SCHEDULER_TEST_REMOVE=prune_terminal_guard makes
the pruner choose by age alone (no final-state guard); test_live_tasks_are_never_pruned and
test_each_state_is_kept_for_its_default then fail (live tasks deleted).
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from scheduler_app.models.base import utcnow
from scheduler_app.services.ledger.transitions import transition
from scheduler_app.services.ledger.unit import unit_of_work
from scheduler_app.services.retention import Pruner, ledger_figures
from scheduler_app.states import TaskStatus
from tests.support import Stack, metric_series, wait_until
from tests.workflow_support import node
from tests.workflow_support import submit as submit_workflow

DAY = 86400


@pytest.fixture(scope="module")
def stack(tmp_path_factory, logdir) -> Iterator[Stack]:
    platform = Stack(
        tmp_path_factory.mktemp("retention"),
        logdir,
        retention_succeeded=100,
        retention_cancelled=200,
        dlq_retention_days=0.01,  # 864 s: failed tasks are kept as long as their dead letter
        queue_retention="high=120",
        prune_batch=10,
    )
    yield platform
    platform.close()


@pytest.fixture(scope="module")
def headers(stack) -> dict[str, str]:
    client, secret = stack.ext.clients.create("retention", "admin")
    token = stack.app.test_client().post(
        "/api/v1/auth/token", json={"client_id": client.client_id, "client_secret": secret}
    )
    return {"Authorization": f"Bearer {token.json['access_token']}"}


@pytest.fixture
def api(stack):
    return stack.app.test_client()


def _submit(api, headers, **body) -> str:
    body.setdefault("task", "demo.echo")
    body.setdefault("queue", "low")  # no worker: it stays where the test puts it
    response = api.post("/api/v1/tasks", json=body, headers=headers)
    assert response.status_code == 202, response.json
    return response.json["id"]


def _finish(stack, api, headers, task_id: str, status: TaskStatus) -> None:
    """Bring a task to ``status`` through the ledger's moves (as a worker or the API would)."""
    if status is TaskStatus.CANCELLED:
        response = api.post(f"/api/v1/tasks/{task_id}/cancel", headers=headers)
        assert response.status_code == 200, response.json
        return
    now = utcnow()
    with unit_of_work(stack.ext.tasks.sessions) as session:
        ident = uuid.UUID(task_id)
        assert transition(
            session,
            ident,
            TaskStatus.RUNNING,
            values={"attempts": 1, "started_at": now},
            run={"worker": "test", "status": "running", "started_at": now},
        )
        values = {"finished_at": now}
        if status is TaskStatus.FAILED:
            values.update(error_type="ValueError", error_message="bad")
        assert transition(
            session,
            ident,
            status,
            values=values,
            run={"status": status.value, "finished_at": now},
            worker="test",
        )


def _exists(stack, task_id: str) -> bool:
    with stack.ext.tasks.sessions() as session:
        return bool(
            session.scalar(text("SELECT count(*) FROM tasks WHERE id = :i"), {"i": task_id})
        )


def _left(stack, task_id: str) -> dict[str, int]:
    """Rows of each table that belong to the task."""
    with stack.ext.tasks.sessions() as session:
        return {
            table: session.scalar(
                text(f"SELECT count(*) FROM {table} WHERE {column} = :i"), {"i": task_id}
            )
            for table, column in (
                ("tasks", "id"),
                ("task_events", "task_id"),
                ("runs", "task_id"),
                ("dead_letters", "task_id"),
            )
        }


def _prune(stack, after: float, **settings) -> dict[str, int]:
    """One pass with the clock ``after`` seconds ahead."""
    pruner = Pruner(stack.ext.tasks.sessions, dataclasses.replace(stack.settings, **settings))
    return dict(pruner.run(now=utcnow() + timedelta(seconds=after)))


def test_each_state_is_kept_for_its_default(stack, api, headers):
    ids = {status: _submit(api, headers) for status in ("succeeded", "cancelled", "failed")}
    for status, task_id in ids.items():
        _finish(stack, api, headers, task_id, TaskStatus(status))
    live = _submit(api, headers)
    assert _left(stack, ids["failed"]) == {
        "tasks": 1,
        "task_events": 3,
        "runs": 1,
        "dead_letters": 1,
    }

    _prune(stack, 50)
    assert all(_exists(stack, i) for i in ids.values())
    _prune(stack, 150)  # past succeeded's 100 s
    assert not _exists(stack, ids["succeeded"])
    assert _exists(stack, ids["cancelled"]) and _exists(stack, ids["failed"])
    _prune(stack, 250)  # past cancelled's 200 s
    assert not _exists(stack, ids["cancelled"]) and _exists(stack, ids["failed"])
    _prune(stack, 900)  # past the dead letter's 864 s
    for task_id in ids.values():
        # Events wait for their day's partition to be dropped (test_partitions.py).
        left = _left(stack, task_id)
        assert left["task_events"] >= 2  # submitted (running) and final
        assert left == {
            "tasks": 0,
            "task_events": left["task_events"],
            "runs": 0,
            "dead_letters": 0,
        }
        assert api.get(f"/api/v1/tasks/{task_id}/events", headers=headers).status_code == 404
    assert _exists(stack, live), "a queued task was pruned"


def test_failed_task_is_kept_while_its_dead_letter_is(stack, api, headers):
    """retention_failed shorter than the dead letter: the dead letter wins."""
    task_id = _submit(api, headers)
    _finish(stack, api, headers, task_id, TaskStatus.FAILED)
    _prune(stack, 500, retention_failed=10)
    assert _exists(stack, task_id)
    _prune(stack, 900, retention_failed=10)
    assert not _exists(stack, task_id)


def test_overrides_task_then_type_then_queue(stack, api, headers):
    own = _submit(api, headers, retention=30, queue="high")
    typed = _submit(api, headers, task="test.kept")
    queued = _submit(api, headers, queue="high")
    own_beats_type = _submit(api, headers, task="test.kept", retention=40)
    for task_id in (own, typed, queued, own_beats_type):
        _finish(stack, api, headers, task_id, TaskStatus.SUCCEEDED)
    kept = {
        i: api.get(f"/api/v1/tasks/{i}", headers=headers).json["retention"]
        for i in (own, typed, queued, own_beats_type)
    }
    assert kept == {own: 30.0, typed: 3600.0, queued: 120.0, own_beats_type: 40.0}
    types = {t["name"]: t for t in api.get("/api/v1/task-types", headers=headers).json}
    assert types["test.kept"]["retention"] == 3600.0 and types["demo.echo"]["retention"] is None

    _prune(stack, 45)
    assert not _exists(stack, own) and not _exists(stack, own_beats_type)
    assert _exists(stack, queued) and _exists(stack, typed)
    _prune(stack, 130)  # the queue's 120 s; succeeded's default (100 s) does not apply
    assert not _exists(stack, queued) and _exists(stack, typed)
    _prune(stack, 3000)
    assert _exists(stack, typed)
    _prune(stack, 3700)
    assert not _exists(stack, typed)


def test_an_override_outlives_the_state_default(stack, api, headers):
    long = _submit(api, headers, retention=10 * DAY)
    _finish(stack, api, headers, long, TaskStatus.CANCELLED)
    _prune(stack, 9 * DAY)
    assert _exists(stack, long)
    _prune(stack, 10 * DAY + 5)
    assert not _exists(stack, long)


@pytest.mark.parametrize("value", [0, 0.5, -1, 3650 * DAY + 1, "week", None, True])
def test_retention_out_of_range_is_refused(api, headers, value):
    for path, body in (
        ("/api/v1/tasks", {"task": "demo.echo", "retention": value}),
        ("/api/v1/tasks/batch", {"tasks": [{"task": "demo.echo", "retention": value}]}),
        (
            "/api/v1/workflows",
            {"name": "w", "nodes": [{"id": "a", "task": "demo.echo"}], "retention": value},
        ),
        (
            "/api/v1/schedules",
            {"name": "s", "task": "demo.echo", "interval": 60, "retention": value},
        ),
    ):
        response = api.post(path, json=body, headers=headers)
        assert response.status_code == 422, (path, value, response.json)


def test_live_tasks_are_never_pruned(stack, api, headers):
    """Queued, scheduled and running tasks older than every retention stay."""
    queued = _submit(api, headers)
    scheduled = _submit(api, headers, delay=30 * DAY)
    running = _submit(api, headers, retention=1)
    now = utcnow()
    with unit_of_work(stack.ext.tasks.sessions) as session:
        transition(
            session,
            uuid.UUID(running),
            TaskStatus.RUNNING,
            values={"attempts": 1, "started_at": now},
            run={"worker": "test", "status": "running", "started_at": now},
        )
    done = _submit(api, headers)
    _finish(stack, api, headers, done, TaskStatus.SUCCEEDED)
    _prune(stack, 20 * DAY)
    assert not _exists(stack, done)
    for task_id in (queued, scheduled, running):
        assert _exists(stack, task_id), "a live task was pruned"


def test_schedule_keeps_its_last_task(stack, api, headers):
    response = api.post(
        "/api/v1/schedules",
        json={
            "name": "kept",
            "task": "demo.echo",
            "queue": "low",
            "interval": 3600,
            "enabled": False,
            "retention": 50,
        },
        headers=headers,
    )
    assert response.status_code == 201, response.json
    schedule = response.json
    assert schedule["retention"] == 50
    fired = []
    for _ in range(2):
        run = api.post(f"/api/v1/schedules/{schedule['id']}/trigger", headers=headers)
        assert run.status_code in (200, 201, 202), run.json
        fired.append(run.json["task_id"])
        _finish(stack, api, headers, fired[-1], TaskStatus.CANCELLED)
    assert api.get(f"/api/v1/tasks/{fired[0]}", headers=headers).json["retention"] == 50
    _prune(stack, 60)
    assert not _exists(stack, fired[0])
    assert _exists(stack, fired[1]), "the schedule's last task was pruned"


def test_unfinished_replay_keeps_its_original(stack, api, headers):
    original = _submit(api, headers)
    _finish(stack, api, headers, original, TaskStatus.FAILED)
    with stack.ext.tasks.sessions() as session:
        dead = session.scalar(
            text("SELECT id FROM dead_letters WHERE task_id = :i"), {"i": original}
        )
    response = api.post(f"/api/v1/dlq/{dead}/replay", headers=headers)
    assert response.status_code == 202, response.json
    replay = response.json["id"]
    assert response.json["replay_of"] == original
    _prune(stack, 2 * DAY)  # past the dead letter and every default
    assert _exists(stack, original), "a task with an unfinished replay was pruned"
    _finish(stack, api, headers, replay, TaskStatus.SUCCEEDED)
    _prune(stack, 2 * DAY)
    assert not _exists(stack, original) and not _exists(stack, replay)


def test_workflow_nodes_go_with_their_workflow(stack, api, headers):
    wf = submit_workflow(
        api,
        headers,
        [
            node("a", "demo.echo", queue="low", retention=1),
            node("b", "demo.echo", "a", queue="low"),
        ],
    )
    a, b = wf["nodes"]["a"]["task_id"], wf["nodes"]["b"]["task_id"]
    _finish(stack, api, headers, a, TaskStatus.SUCCEEDED)
    _prune(stack, 5 * DAY)  # the workflow runs (b is waiting): nothing of it goes
    assert _exists(stack, a), "a running workflow's finished node was pruned"

    long = submit_workflow(
        api, headers, [node("x", "demo.echo", queue="low", retention=1000)], retention=10
    )
    for workflow in (wf, long):
        response = api.post(f"/api/v1/workflows/{workflow['id']}/cancel", headers=headers)
        assert response.status_code == 200, response.json
    _prune(stack, 150)  # cancelled's default is 200 s: wf stays, node a with it
    assert _exists(stack, a) and _exists(stack, b)
    _prune(stack, 250)
    assert not _exists(stack, a) and not _exists(stack, b)
    assert api.get(f"/api/v1/workflows/{wf['id']}", headers=headers).status_code == 404
    # its own 10 s, held by a node kept 1000 s
    assert api.get(f"/api/v1/workflows/{long['id']}", headers=headers).status_code == 200
    _prune(stack, 1100)
    assert api.get(f"/api/v1/workflows/{long['id']}", headers=headers).status_code == 404
    assert not _exists(stack, long["nodes"]["x"]["task_id"])


def test_batches_are_bounded_and_counted(stack, api, headers):
    before = ledger_figures(stack.ext.tasks.sessions)
    ids = [
        i["id"]
        for i in api.post(
            "/api/v1/tasks/batch",
            json={"tasks": [{"task": "demo.echo", "queue": "low"}] * 25},
            headers=headers,
        ).json["items"]
    ]
    for task_id in ids:
        _finish(stack, api, headers, task_id, TaskStatus.SUCCEEDED)
    pruner = Pruner(stack.ext.tasks.sessions, stack.settings)
    sizes = []
    original = pruner._batch

    def spy(query, now, size, removed):
        taken = original(query, now, size, removed)
        if taken:
            sizes.append(taken)
        return taken

    pruner._batch = spy
    removed = pruner.run(now=utcnow() + timedelta(seconds=150))
    assert removed["tasks"] >= 25 and max(sizes) <= 10
    assert not any(_exists(stack, i) for i in ids)
    after = ledger_figures(stack.ext.tasks.sessions)
    assert after["pruned"]["tasks"] - before["pruned"]["tasks"] == removed["tasks"]
    assert after["pruned"]["runs"] - before["pruned"]["runs"] >= 25
    assert set(after["rows"]) >= {"tasks", "task_events", "runs"}


def test_another_pruner_holding_the_lock_means_no_pass(stack, api, headers):
    from scheduler_app.services.retention.pruner import PRUNER_LOCK

    task_id = _submit(api, headers)
    _finish(stack, api, headers, task_id, TaskStatus.SUCCEEDED)
    with stack.ext.engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PRUNER_LOCK})
        assert _prune(stack, 150) == {}
        assert _exists(stack, task_id)
        holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PRUNER_LOCK})
    _prune(stack, 150)
    assert not _exists(stack, task_id)


def test_archive_is_written_and_durable_before_rows_go(stack, api, headers, tmp_path):
    ids = [_submit(api, headers) for _ in range(3)]
    for task_id in ids:
        _finish(stack, api, headers, task_id, TaskStatus.FAILED)
    pruner = Pruner(
        stack.ext.tasks.sessions, dataclasses.replace(stack.settings, archive_dir=str(tmp_path))
    )
    first_archived: dict[str, bool] = {}  # id -> was it still in the ledger when archived?
    original = pruner.archive.write

    def spy(table, lines, now):
        written = original(table, lines, now)
        if table == "dead_letters":  # the last table of a batch, archived before its delete
            path = pruner.archive.path("tasks", now)
            for line in path.read_text().splitlines():
                task_id = json.loads(line)["id"]
                if task_id in ids and task_id not in first_archived:
                    first_archived[task_id] = _exists(stack, task_id)
        return written

    pruner.archive.write = spy
    pruner.run(now=utcnow() + timedelta(days=2))
    assert not any(_exists(stack, i) for i in ids)
    assert first_archived == dict.fromkeys(ids, True)
    files = {p.relative_to(tmp_path).parts[0] for p in Path(tmp_path).rglob("*.jsonl")}
    assert files >= {"tasks", "runs", "task_events", "dead_letters"}
    events = [
        json.loads(line)
        for path in (tmp_path / "task_events").glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert {e["task_id"] for e in events} >= set(ids)
    assert sum(e["task_id"] in ids for e in events) == 3 * 3  # submitted, running, failed


def test_metrics_counters_keep_counting_what_the_pruner_removed(stack, api, headers):
    ids = [_submit(api, headers, task="demo.sum") for _ in range(3)]
    for task_id in ids:
        _finish(stack, api, headers, task_id, TaskStatus.SUCCEEDED)
    submitted = 'scheduler_tasks_submitted_total{queue="low",task="demo.sum"}'
    finished = 'scheduler_tasks_finished_total{queue="low",status="succeeded",task="demo.sum"}'
    before = metric_series(api)
    assert before[submitted] >= 3 and before[finished] >= 3
    assert _prune(stack, 150)["tasks"] >= 3
    assert not any(_exists(stack, i) for i in ids)
    after = metric_series(api)
    assert after[submitted] == before[submitted]
    assert after[finished] == before[finished]
    assert after['scheduler_pruned_total{table="tasks"}'] >= 3
    assert 'scheduler_ledger_rows{table="task_events"}' in after


def test_a_schedule_patch_with_null_clears_its_retention_and_timeout(stack, api, headers):
    made = api.post(
        "/api/v1/schedules",
        json={
            "name": "cleared",
            "task": "demo.echo",
            "interval": 3600,
            "enabled": False,
            "retention": 50,
            "timeout": 9,
        },
        headers=headers,
    ).json
    path = f"/api/v1/schedules/{made['id']}"
    response = api.patch(path, json={"retention": None, "timeout": None}, headers=headers)
    assert response.status_code == 200, response.json
    assert (response.json["retention"], response.json["timeout"]) == (None, None)
    fired = api.post(f"{path}/trigger", headers=headers).json["task_id"]
    assert api.get(f"/api/v1/tasks/{fired}", headers=headers).json["retention"] is None
    assert api.patch(path, json={"retention": -1}, headers=headers).status_code == 422


def _vacuums(stack) -> tuple[int, int]:
    # task_outcomes is a queue (each row deleted once handed over): it bloats the same way
    with stack.ext.engine.connect() as conn:
        counts = dict(
            conn.execute(
                text(
                    "SELECT relname, vacuum_count FROM pg_stat_user_tables"
                    " WHERE relname IN ('tasks', 'task_outcomes')"
                )
            ).all()
        )
    return counts["tasks"], counts["task_outcomes"]


@pytest.mark.parametrize("mode", ["never", "always", "auto"])
def test_a_pass_that_pruned_vacuums_as_prune_vacuum_says(stack, api, headers, mode):
    """Without autovacuum a deleted row's space is never reused and the tables grow however
    much is pruned: "auto" VACUUMs after a pass when the server's autovacuum is off."""

    def vacuums() -> tuple[int, int]:
        return _vacuums(stack)

    with stack.ext.engine.connect() as conn:
        autovacuum = conn.scalar(text("SHOW autovacuum"))
    expected = mode == "always" or (mode == "auto" and autovacuum == "off")
    time.sleep(1.5)  # earlier tests' VACUUMs reach pg_stat_user_tables within a second
    before = vacuums()
    task_id = _submit(api, headers)
    _finish(stack, api, headers, task_id, TaskStatus.SUCCEEDED)
    assert _prune(stack, 150, prune_vacuum=mode)["tasks"] >= 1
    if expected:
        wait_until(
            lambda: all(n > b for n, b in zip(vacuums(), before, strict=True)),
            10,
            0.2,
            message="a VACUUM of tasks and task_outcomes",
        )
    else:
        time.sleep(1.5)  # statistics reach pg_stat_user_tables within a second
        assert vacuums() == before


def test_a_pass_that_pruned_nothing_still_vacuums(stack, api, headers):
    """Before any task is old enough to prune (the first days of a deployment, or a long
    retention), tasks' moves and the outcome queue still leave dead rows: a pass VACUUMs them
    (at most once a minute) whether or not it removed anything."""
    task_id = _submit(api, headers)
    _finish(stack, api, headers, task_id, TaskStatus.SUCCEEDED)
    time.sleep(1.5)  # earlier tests' VACUUMs reach pg_stat_user_tables within a second
    before = _vacuums(stack)
    assert sum(_prune(stack, -3600, prune_vacuum="always").values()) == 0
    wait_until(
        lambda: all(n > b for n, b in zip(_vacuums(stack), before, strict=True)),
        10,
        0.2,
        message="a VACUUM of tasks and task_outcomes",
    )
