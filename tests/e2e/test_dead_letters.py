"""Terminal failures land in the dead-letter queue in Postgres; operators replay and purge them."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture
def operator(make_client):
    return make_client("operator")


def _fail(api, headers, wait_status, task="demo.fail", **kwargs):
    response = api.post(
        "/api/v1/tasks",
        json={
            "task": task,
            "kwargs": kwargs,
            "retry": {"max_retries": 1, "backoff": 0.05, "jitter": False},
        },
        headers=headers,
    )
    assert response.status_code == 202, response.json
    done = wait_status(response.json["id"], headers)
    assert done["status"] == "failed"
    return done


def _dead_letter_of(api, operator, task_id):
    page = api.get("/api/v1/dlq?limit=1000", headers=operator).json
    found = [d for d in page["items"] if d["task_id"] == task_id]
    assert len(found) == 1, found
    return found[0]


def test_failed_task_has_one_dead_letter_with_its_error(
    api, submitter, operator, worker, wait_status
):
    task = _fail(api, submitter, wait_status, message="kaput")
    dead = _dead_letter_of(api, operator, task["id"])
    assert dead["task"] == "demo.fail"
    assert dead["kwargs"] == {"message": "kaput"}
    assert dead["queue"] == "default"
    assert dead["error_type"] == "DemoFailure"
    assert dead["error_message"] == "kaput"
    assert dead["attempts"] == 2
    assert dead["worker"]
    one = api.get(f"/api/v1/dlq/{dead['id']}", headers=operator)
    assert one.status_code == 200
    assert "DemoFailure: kaput" in one.json["traceback"]


def test_replay_of_flaky_dead_letter_with_key_succeeds(
    api, submitter, operator, worker, wait_status
):
    key = f"replay-{uuid.uuid4()}"
    task = _fail(api, submitter, wait_status, task="demo.flaky", failures=2, key=key)
    dead = _dead_letter_of(api, operator, task["id"])
    response = api.post(f"/api/v1/dlq/{dead['id']}/replay", headers=operator)
    assert response.status_code == 202
    replay = response.json
    assert replay["replay_of"] == task["id"]
    assert replay["owner"] == task["owner"]
    done = wait_status(replay["id"], submitter)  # the original owner sees the replay
    assert done["status"] == "succeeded"
    assert done["result"] == 3
    again = api.get(f"/api/v1/dlq/{dead['id']}", headers=operator).json
    assert again["replayed_task_id"] == replay["id"]
    assert api.post(f"/api/v1/dlq/{dead['id']}/replay", headers=operator).status_code == 409


def test_bulk_replay_dry_run_changes_nothing_and_counts(
    api, submitter, operator, worker, wait_status
):
    message = f"bulk-{uuid.uuid4()}"
    failed = [_fail(api, submitter, wait_status, message=message) for _ in range(2)]
    ids = [_dead_letter_of(api, operator, t["id"])["id"] for t in failed]
    dry = api.post("/api/v1/dlq/replay", json={"ids": ids, "dry_run": True}, headers=operator)
    assert dry.status_code == 200
    assert dry.json["count"] == 2 and dry.json["task_ids"] == []
    assert all(
        api.get(f"/api/v1/dlq/{i}", headers=operator).json["replayed_task_id"] is None for i in ids
    )
    real = api.post("/api/v1/dlq/replay", json={"ids": ids}, headers=operator)
    assert real.json["count"] == 2 and len(real.json["task_ids"]) == 2
    for task_id in real.json["task_ids"]:
        assert wait_status(task_id, submitter)["status"] == "failed"  # demo.fail fails again


def test_purge_by_filter_removes_only_matches(api, submitter, operator, worker, wait_status):
    fail_task = _fail(api, submitter, wait_status, message="purge-me")
    flaky_task = _fail(api, submitter, wait_status, task="demo.flaky", failures=5)
    keep = _dead_letter_of(api, operator, flaky_task["id"])
    _dead_letter_of(api, operator, fail_task["id"])
    response = api.post(
        "/api/v1/dlq/purge", json={"filter": {"task": "demo.fail"}}, headers=operator
    )
    assert response.status_code == 200 and response.json["count"] >= 1
    remaining = api.get("/api/v1/dlq?limit=1000", headers=operator).json["items"]
    assert not [d for d in remaining if d["task"] == "demo.fail"]
    assert api.get(f"/api/v1/dlq/{keep['id']}", headers=operator).status_code == 200


def test_dead_letter_endpoints_error_codes(api, submitter, operator, worker, wait_status):
    unknown = uuid.uuid4()
    assert api.get("/api/v1/dlq").status_code == 401
    assert api.get("/api/v1/dlq", headers=submitter).status_code == 403
    assert api.get(f"/api/v1/dlq/{unknown}", headers=operator).status_code == 404
    assert api.post(f"/api/v1/dlq/{unknown}/replay", headers=operator).status_code == 404
    assert api.delete(f"/api/v1/dlq/{unknown}", headers=operator).status_code == 404
    neither = api.post("/api/v1/dlq/replay", json={"dry_run": True}, headers=operator)
    assert neither.status_code == 422 and "ids" in neither.json["errors"]
    # ids and a filter together: the ids the filter matches (none here)
    both = api.post(
        "/api/v1/dlq/replay",
        json={"ids": [str(unknown)], "filter": {}, "dry_run": True},
        headers=operator,
    )
    assert both.status_code == 200 and both.json["count"] == 0
    assert api.post("/api/v1/dlq/purge", json={}, headers=operator).status_code == 422
    assert api.get("/api/v1/dlq?limit=0", headers=operator).status_code == 422
    task = _fail(api, submitter, wait_status, message="delete-me")
    dead = _dead_letter_of(api, operator, task["id"])
    assert api.delete(f"/api/v1/dlq/{dead['id']}", headers=operator).status_code == 204
    assert api.get(f"/api/v1/dlq/{dead['id']}", headers=operator).status_code == 404


def test_dead_letter_list_pages_with_cursor(api, submitter, operator, worker, wait_status):
    for _ in range(3):
        _fail(api, submitter, wait_status, message="page")
    seen, cursor = [], None
    while True:
        url = "/api/v1/dlq?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = api.get(url, headers=operator).json
        seen += [d["id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) >= 3
