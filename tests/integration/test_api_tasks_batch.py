"""POST /api/v1/tasks/batch: up to 1000 tasks in one transaction, all or nothing."""

from __future__ import annotations

import pytest

BATCH = "/api/v1/tasks/batch"


def listed_ids(api, headers) -> list[str]:
    return [t["id"] for t in api.get("/api/v1/tasks?limit=1000", headers=headers).json["items"]]


def test_batch_is_202_with_every_task_in_order(api, make_client):
    headers = make_client("submitter")
    bodies = [
        {"task": "demo.echo", "queue": "low", "args": [0]},
        {"task": "demo.sum", "queue": "low", "kwargs": {"values": [1, 2]}},
        {"task": "demo.echo", "delay": 3600, "tags": ["later"]},
    ]
    response = api.post(BATCH, json={"tasks": bodies}, headers=headers)
    assert response.status_code == 202, response.json
    items = response.json["items"]
    assert [t["task"] for t in items] == ["demo.echo", "demo.sum", "demo.echo"]
    assert [t["status"] for t in items] == ["queued", "queued", "scheduled"]
    assert items[2]["tags"] == ["later"]
    assert sorted(listed_ids(api, headers)) == sorted(t["id"] for t in items)
    for task in items:
        assert api.get(f"/api/v1/tasks/{task['id']}", headers=headers).json == task


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"task": "demo.echo", "priority": 11}, "tasks.2.priority"),
        ({"task": "demo.nope"}, "tasks.2.task"),
        ({"task": "demo.echo", "queue": "nope"}, "tasks.2.queue"),
        ({"task": "demo.echo", "notify": {"webhook": "nope"}}, "tasks.2.notify.webhook"),
        ({"task": "demo.echo", "args": ["\u0000"]}, "tasks.2.args"),
    ],
)
def test_one_invalid_item_rejects_the_whole_batch_naming_it(
    api, make_client, assert_problem, bad, field
):
    headers = make_client("submitter")
    good = {"task": "demo.echo", "queue": "low"}
    response = api.post(BATCH, json={"tasks": [good, good, bad, good]}, headers=headers)
    body = assert_problem(response, 422, field)
    assert set(body["errors"]) == {field}
    assert listed_ids(api, headers) == []


def test_batch_of_one_item_with_a_schema_error_names_it_by_index(api, make_client, assert_problem):
    headers = make_client("submitter")
    response = api.post(
        BATCH, json={"tasks": [{"task": "demo.echo", "priority": 99}]}, headers=headers
    )
    assert_problem(response, 422, "tasks.0.priority")
    assert listed_ids(api, headers) == []


def test_batch_of_one_item_with_an_unknown_task_names_it_by_index(api, make_client, assert_problem):
    headers = make_client("submitter")
    response = api.post(BATCH, json={"tasks": [{"task": "demo.nope"}]}, headers=headers)
    assert listed_ids(api, headers) == []
    assert_problem(response, 422, "tasks.0.task")


def test_batch_over_1000_items_is_422(api, make_client, assert_problem):
    headers = make_client("submitter")
    tasks = [{"task": "demo.echo", "queue": "low"}] * 1001
    assert_problem(api.post(BATCH, json={"tasks": tasks}, headers=headers), 422, "tasks")
    assert listed_ids(api, headers) == []


def test_batch_of_exactly_1000_items_is_accepted(api, make_client):
    headers = make_client("submitter")
    tasks = [{"task": "demo.echo", "delay": 3600, "args": [i]} for i in range(1000)]
    response = api.post(BATCH, json={"tasks": tasks}, headers=headers)
    assert response.status_code == 202
    assert [t["args"] for t in response.json["items"]] == [[i] for i in range(1000)]
    assert len(listed_ids(api, headers)) == 1000


@pytest.mark.parametrize(
    "body",
    [{"tasks": []}, {}, {"tasks": "demo.echo"}, {"tasks": [1]}, {"tasks": [{}]}],
    ids=["empty", "missing", "not-a-list", "item-not-an-object", "item-without-task"],
)
def test_malformed_batch_is_422_naming_tasks(api, submitter, assert_problem, body):
    body = assert_problem(api.post(BATCH, json=body, headers=submitter), 422)
    assert any(name == "tasks" or name.startswith("tasks.") for name in body["errors"])


def test_duplicate_idempotency_keys_within_a_batch_are_422(api, make_client, assert_problem):
    headers = make_client("submitter")
    tasks = [
        {"task": "demo.echo", "queue": "low", "idempotency_key": "same"},
        {"task": "demo.echo", "queue": "low", "idempotency_key": "same"},
    ]
    assert_problem(api.post(BATCH, json={"tasks": tasks}, headers=headers), 422, "tasks")
    assert listed_ids(api, headers) == []


def test_batch_replays_items_whose_key_was_used_before(api, make_client):
    headers = make_client("submitter")
    earlier = api.post(
        "/api/v1/tasks",
        json={"task": "demo.echo", "queue": "low", "idempotency_key": "nightly-1"},
        headers=headers,
    ).json
    response = api.post(
        BATCH,
        json={
            "tasks": [
                {"task": "demo.echo", "queue": "low", "idempotency_key": "nightly-1"},
                {"task": "demo.echo", "queue": "low", "idempotency_key": "nightly-2"},
            ]
        },
        headers=headers,
    )
    assert response.status_code == 202
    items = response.json["items"]
    assert items[0]["id"] == earlier["id"]
    assert items[1]["id"] != earlier["id"]
    assert len(listed_ids(api, headers)) == 2


def test_batch_needs_a_token(api, assert_problem):
    response = api.post(BATCH, json={"tasks": [{"task": "demo.echo"}]})
    assert_problem(response, 401)
