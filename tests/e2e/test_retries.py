"""Retry policy on a real worker: delay strategies with cap and jitter, the retry window,
timeouts, expiry."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from sqlalchemy import select

from scheduler_app.models import Run, TaskEvent

pytestmark = pytest.mark.e2e


def _submit(api, headers, **body) -> dict:
    response = api.post("/api/v1/tasks", json=body, headers=headers)
    assert response.status_code == 202, response.json
    return response.json


def _runs(app, task_id: str) -> list[Run]:
    with app.extensions["scheduler"].tasks.sessions() as session:
        return list(
            session.scalars(
                select(Run).where(Run.task_id == uuid.UUID(task_id)).order_by(Run.attempt)
            )
        )


def test_backoff_delays_double_up_to_the_cap(app, api, submitter, worker, scheduler, wait_status):
    """demo.fail with backoff=1, backoff_max=8, no jitter waits 1, 2, 4, 8, 8 s between attempts.

    The 8 s waits are past the look-ahead, so they wait in Postgres and the scheduler releases
    them: both paths are timed here.
    """
    task = _submit(
        api,
        submitter,
        task="demo.fail",
        retry={"max_retries": 5, "backoff": 1, "backoff_max": 8, "jitter": False},
    )
    done = wait_status(task["id"], submitter, timeout=60)
    assert done["status"] == "failed" and done["attempts"] == 6
    runs = _runs(app, task["id"])
    assert [r.retry_delay for r in runs] == [1, 2, 4, 8, 8, None]
    gaps = [(b.started_at - a.finished_at).total_seconds() for a, b in pairwise(runs)]
    for gap, expected in zip(gaps, [1, 2, 4, 8, 8], strict=True):
        assert expected - 0.05 <= gap <= expected + 0.5, gaps


def _gaps(runs: list[Run]) -> list[float]:
    return [(b.started_at - a.finished_at).total_seconds() for a, b in pairwise(runs)]


@pytest.mark.parametrize(
    ("retry", "expected"),
    [
        ({"strategy": "linear", "backoff": 0.4, "backoff_max": 1.0}, [0.4, 0.8, 1.0]),
        ({"strategy": "fixed", "backoff": 0.6, "backoff_max": 5.0}, [0.6, 0.6, 0.6]),
    ],
    ids=["linear", "fixed"],
)
def test_linear_and_fixed_strategies_space_the_attempts(
    app, api, submitter, worker, wait_status, retry, expected
):
    """The gaps between one attempt's end and the next one's start follow the strategy.

    Lower bound tight (a retry never starts early), upper bound generous (a loaded machine).
    """
    task = _submit(
        api, submitter, task="demo.fail", retry={"max_retries": 3, "jitter": False, **retry}
    )
    assert task["retry"]["strategy"] == retry["strategy"]
    assert wait_status(task["id"], submitter, timeout=30)["status"] == "failed"
    runs = _runs(app, task["id"])
    assert [r.retry_delay for r in runs] == [*expected, None]
    gaps = _gaps(runs)
    assert len(gaps) == len(expected)
    for gap, wanted in zip(gaps, expected, strict=True):
        assert wanted - 0.05 <= gap <= wanted + 1.0, gaps


def _events(app, task_id: str) -> list[TaskEvent]:
    with app.extensions["scheduler"].tasks.sessions() as session:
        return list(
            session.scalars(
                select(TaskEvent)
                .where(TaskEvent.task_id == uuid.UUID(task_id))
                .order_by(TaskEvent.id)
            )
        )


def stopped_by_the_window(app, api, headers, task_id: str, window: float) -> list[Run]:
    """The task failed on its first attempt to end past ``window`` s after the first start."""
    runs = _runs(app, task_id)
    first = runs[0].started_at
    elapsed = [(r.finished_at - first).total_seconds() for r in runs]
    assert elapsed[-1] >= window, elapsed
    assert all(e < window for e in elapsed[:-1]), elapsed
    assert runs[-1].retry_delay is None and all(r.retry_delay is not None for r in runs[:-1])
    failed = [e for e in _events(app, task_id) if e.status == "failed"]
    assert len(failed) == 1 and "max_retry_duration" in failed[0].detail
    dead = api.get(f"/api/v1/tasks/{task_id}", headers=headers).json
    assert dead["status"] == "failed"
    return runs


def test_max_retry_duration_stops_retrying_before_max_retries(
    app, api, submitter, worker, make_client, wait_status
):
    """50 retries allowed, 0.25 s apart, but only for 1.2 s: a handful of attempts, then the
    dead-letter queue, like any exhausted task."""
    task = _submit(
        api,
        submitter,
        task="demo.fail",
        retry={
            "max_retries": 50,
            "backoff": 0.25,
            "strategy": "fixed",
            "jitter": False,
            "max_retry_duration": 1.2,
        },
    )
    assert task["retry"]["max_retry_duration"] == 1.2
    done = wait_status(task["id"], submitter, timeout=30)
    assert done["status"] == "failed"
    assert 2 <= done["attempts"] < 20
    stopped_by_the_window(app, api, submitter, task["id"], 1.2)
    operator = make_client("operator")
    dead = api.get("/api/v1/dlq?task=demo.fail&limit=1000", headers=operator).json["items"]
    assert task["id"] in [d["task_id"] for d in dead]


def test_jittered_delays_lie_between_zero_and_the_cap(app, api, submitter, worker, wait_status):
    task = _submit(
        api,
        submitter,
        task="demo.fail",
        retry={"max_retries": 4, "backoff": 0.2, "backoff_max": 0.8, "jitter": True},
    )
    assert wait_status(task["id"], submitter, timeout=30)["status"] == "failed"
    delays = [r.retry_delay for r in _runs(app, task["id"])][:-1]
    caps = [0.2, 0.4, 0.8, 0.8]
    assert len(delays) == 4
    assert all(0 <= d <= cap for d, cap in zip(delays, caps, strict=True)), delays
    assert delays != caps  # drawn, not the cap itself


def test_attempt_past_its_timeout_counts_as_failed(app, api, submitter, worker, wait_status):
    task = _submit(
        api,
        submitter,
        task="demo.sleep",
        kwargs={"seconds": 5},
        timeout=0.5,
        retry={"max_retries": 1, "backoff": 0.1, "jitter": False},
    )
    done = wait_status(task["id"], submitter, timeout=30)
    assert done["status"] == "failed"
    assert done["attempts"] == 2
    assert done["error"]["type"] == "AttemptTimeout"
    assert all(r.error_type == "AttemptTimeout" for r in _runs(app, task["id"]))


def test_task_not_started_before_expires_at_fails_with_a_reason(
    api, submitter, make_client, scheduler, wait_status
):
    # queue "prio" has no worker in this session: the task can only wait, then expire.
    expires = datetime.now(UTC) + timedelta(seconds=1)
    task = _submit(api, submitter, task="demo.echo", queue="prio", expires_at=expires.isoformat())
    done = wait_status(task["id"], submitter, timeout=15)
    assert done["status"] == "failed"
    assert done["error"]["type"] == "Expired"
    assert done["attempts"] == 0
    operator = make_client("operator")
    dead = api.get("/api/v1/dlq?error_type=Expired&limit=1000", headers=operator).json["items"]
    assert task["id"] in [d["task_id"] for d in dead]
