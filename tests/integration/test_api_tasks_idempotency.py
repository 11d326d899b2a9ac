"""Idempotent submission: by body field or header, per owner, and under concurrent retries."""

from __future__ import annotations

import threading
import uuid

from sqlalchemy import func, select

from scheduler_app.models import Task

TASKS = "/api/v1/tasks"


def key() -> str:
    return f"key-{uuid.uuid4().hex}"


def test_same_key_and_body_again_is_200_replay_with_the_same_task(api, submitter):
    body = {"task": "demo.echo", "queue": "low", "args": [1], "idempotency_key": key()}
    first = api.post(TASKS, json=body, headers=submitter)
    assert first.status_code == 202
    assert "Idempotent-Replayed" not in first.headers

    again = api.post(TASKS, json=body, headers=submitter)
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json["id"] == first.json["id"]
    assert again.headers["Location"] == first.headers["Location"]


def test_same_key_with_a_different_body_is_409(api, submitter, assert_problem):
    k = key()
    first = api.post(
        TASKS,
        json={"task": "demo.echo", "queue": "low", "args": [1], "idempotency_key": k},
        headers=submitter,
    )
    assert first.status_code == 202
    response = api.post(
        TASKS,
        json={"task": "demo.echo", "queue": "low", "args": [2], "idempotency_key": k},
        headers=submitter,
    )
    assert_problem(response, 409, "idempotency_key")


def test_idempotency_key_header_replays_like_the_body_field(api, submitter, assert_problem):
    k = key()
    body = {"task": "demo.echo", "queue": "low", "kwargs": {"n": 1}}
    first = api.post(TASKS, json=body, headers={**submitter, "Idempotency-Key": k})
    assert first.status_code == 202
    assert first.json["idempotency_key"] == k

    again = api.post(TASKS, json=body, headers={**submitter, "Idempotency-Key": k})
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json["id"] == first.json["id"]

    # The header and the body field name the same key.
    by_field = api.post(TASKS, json={**body, "idempotency_key": k}, headers=submitter)
    assert by_field.status_code == 200
    assert by_field.json["id"] == first.json["id"]

    changed = api.post(
        TASKS, json={**body, "kwargs": {"n": 2}}, headers={**submitter, "Idempotency-Key": k}
    )
    assert_problem(changed, 409)


def test_header_and_body_keys_that_differ_are_422(api, submitter, assert_problem):
    response = api.post(
        TASKS,
        json={"task": "demo.echo", "queue": "low", "idempotency_key": "a"},
        headers={**submitter, "Idempotency-Key": "b"},
    )
    assert_problem(response, 422, "idempotency_key")


def test_blank_or_oversized_idempotency_key_header_is_422(api, submitter, assert_problem):
    for value in ["   ", "k" * 256]:
        response = api.post(
            TASKS,
            json={"task": "demo.echo", "queue": "low"},
            headers={**submitter, "Idempotency-Key": value},
        )
        assert_problem(response, 422, "Idempotency-Key")


def test_without_a_key_the_same_body_makes_two_tasks(api, submitter):
    # The negative control of the replay: no key, no deduplication.
    body = {"task": "demo.echo", "queue": "low"}
    first = api.post(TASKS, json=body, headers=submitter)
    second = api.post(TASKS, json=body, headers=submitter)
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json["id"] != second.json["id"]


def test_two_owners_use_the_same_key_independently(api, submitter, other_submitter):
    k = key()
    mine = api.post(
        TASKS, json={"task": "demo.echo", "queue": "low", "idempotency_key": k}, headers=submitter
    )
    theirs = api.post(
        TASKS,
        json={"task": "demo.echo", "queue": "low", "args": ["other"], "idempotency_key": k},
        headers=other_submitter,
    )
    assert (mine.status_code, theirs.status_code) == (202, 202)
    assert mine.json["id"] != theirs.json["id"]
    assert mine.json["owner"] != theirs.json["owner"]


def test_twenty_concurrent_identical_submissions_make_exactly_one_task(app, make_client):
    headers = make_client("submitter")
    k = key()
    body = {"task": "demo.echo", "queue": "low", "args": ["once"], "idempotency_key": k}
    start = threading.Barrier(20)
    responses: list = [None] * 20

    def submit(index: int) -> None:
        client = app.test_client()
        start.wait()
        responses[index] = client.post(TASKS, json=body, headers=headers)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 19 + [202], codes
    assert len({r.json["id"] for r in responses}) == 1
    assert all(
        r.headers.get("Idempotent-Replayed") == "true" for r in responses if r.status_code == 200
    )

    engine = app.extensions["scheduler"].engine
    with engine.connect() as conn:
        count = conn.scalar(select(func.count()).select_from(Task).where(Task.idempotency_key == k))
    assert count == 1
