"""Reading tasks: by id, lists with filters and cursor pagination, timelines, cancel, types."""

from __future__ import annotations

import base64
import uuid

import pytest

TASKS = "/api/v1/tasks"


def page(api, headers, **query) -> dict:
    response = api.get(TASKS, query_string=query, headers=headers)
    assert response.status_code == 200, response.json
    return response.json


def ids(api, headers, **query) -> list[str]:
    return [t["id"] for t in page(api, headers, limit=1000, **query)["items"]]


# --- one task -------------------------------------------------------------------------------


def test_get_own_task_is_200(api, submitter, submit):
    task = submit(submitter)
    response = api.get(f"{TASKS}/{task['id']}", headers=submitter)
    assert response.status_code == 200
    assert response.json["id"] == task["id"]


def test_get_unknown_task_is_404(api, submitter, assert_problem):
    assert_problem(api.get(f"{TASKS}/{uuid.uuid4()}", headers=submitter), 404)


def test_get_another_submitters_task_is_404_like_an_unknown_one(
    api, submitter, other_submitter, submit, assert_problem
):
    task = submit(submitter)
    theirs = assert_problem(api.get(f"{TASKS}/{task['id']}", headers=other_submitter), 404)
    unknown = assert_problem(api.get(f"{TASKS}/{uuid.uuid4()}", headers=other_submitter), 404)
    assert theirs["title"] == unknown["title"]
    assert theirs["type"] == unknown["type"]


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_operator_and_admin_see_any_task(api, submitter, submit, make_client, role):
    task = submit(submitter)
    response = api.get(f"{TASKS}/{task['id']}", headers=make_client(role))
    assert response.status_code == 200
    assert response.json["owner"] == task["owner"]


@pytest.mark.parametrize("bad", ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g"])
def test_bad_uuid_in_path_is_404(api, submitter, assert_problem, bad):
    assert_problem(api.get(f"{TASKS}/{bad}", headers=submitter), 404)
    assert_problem(api.get(f"{TASKS}/{bad}/events", headers=submitter), 404)
    assert_problem(api.post(f"{TASKS}/{bad}/cancel", headers=submitter), 404)


def test_get_task_needs_a_token(api, submitter, submit, assert_problem):
    task = submit(submitter)
    assert_problem(api.get(f"{TASKS}/{task['id']}"), 401)


# --- lists ----------------------------------------------------------------------------------


def test_list_shows_only_own_tasks_to_a_submitter_and_all_to_an_operator(
    api, make_client, submit, operator
):
    alice, bob = make_client("submitter"), make_client("submitter")
    a = submit(alice)["id"]
    b = submit(bob)["id"]
    assert ids(api, alice) == [a]
    assert ids(api, bob) == [b]
    everyone = ids(api, operator)
    assert a in everyone and b in everyone


def test_list_is_newest_first(api, make_client, submit):
    headers = make_client("submitter")
    created = [submit(headers, args=[i])["id"] for i in range(4)]
    assert ids(api, headers) == created[::-1]


def test_list_filters_by_status(api, make_client, submit):
    headers = make_client("submitter")
    queued = submit(headers)["id"]
    scheduled = submit(headers, delay=3600)["id"]
    cancelled = submit(headers)["id"]
    assert api.post(f"{TASKS}/{cancelled}/cancel", headers=headers).status_code == 200

    assert ids(api, headers, status="queued") == [queued]
    assert ids(api, headers, status="scheduled") == [scheduled]
    assert ids(api, headers, status="cancelled") == [cancelled]
    assert ids(api, headers, status="queued,cancelled") == [cancelled, queued]
    assert ids(api, headers, status="succeeded") == []


def test_list_filters_by_task_type(api, make_client, submit):
    headers = make_client("submitter")
    echo = submit(headers, task="demo.echo")["id"]
    total = submit(headers, task="demo.sum", kwargs={"values": [1]})["id"]
    assert ids(api, headers, task="demo.echo") == [echo]
    assert ids(api, headers, task="demo.sum") == [total]
    assert ids(api, headers, task="demo.fail") == []


def test_list_filters_by_queue(api, make_client, submit):
    headers = make_client("submitter")
    low = submit(headers, queue="low")["id"]
    high = submit(headers, queue="high", delay=3600)["id"]
    assert ids(api, headers, queue="low") == [low]
    assert ids(api, headers, queue="high") == [high]
    assert ids(api, headers, queue="default") == []


def test_list_filters_by_tag(api, make_client, submit):
    headers = make_client("submitter")
    tagged = submit(headers, tags=["billing", "eu"])["id"]
    other = submit(headers, tags=["eu"])["id"]
    submit(headers)
    assert ids(api, headers, tag="billing") == [tagged]
    assert ids(api, headers, tag="eu") == [other, tagged]
    assert ids(api, headers, tag="us") == []


def test_list_filters_by_creation_time(api, make_client, submit):
    headers = make_client("submitter")
    old, middle, new = (submit(headers, args=[i]) for i in range(3))
    assert ids(api, headers, created_after=middle["created_at"]) == [new["id"]]
    assert ids(api, headers, created_before=middle["created_at"]) == [old["id"]]
    assert ids(api, headers, created_after=old["created_at"], created_before=new["created_at"]) == [
        middle["id"]
    ]


def test_list_combines_filters(api, make_client, submit):
    headers = make_client("submitter")
    match = submit(headers, queue="low", tags=["x"])["id"]
    submit(headers, queue="low", tags=["y"])
    submit(headers, queue="high", tags=["x"], delay=3600)
    assert ids(api, headers, queue="low", tag="x", status="queued") == [match]


def test_cursor_pagination_visits_every_task_once_newest_first(api, make_client, submit):
    headers = make_client("submitter")
    singles = [submit(headers, args=[i]) for i in range(3)]
    # A batch shares one created_at: the cursor must break the tie by id.
    batch = api.post(
        f"{TASKS}/batch",
        json={"tasks": [{"task": "demo.echo", "queue": "low", "args": [i]} for i in range(7)]},
        headers=headers,
    ).json["items"]
    singles += [submit(headers, args=["last"])]
    everything = singles + batch
    expected = [
        t["id"] for t in sorted(everything, key=lambda t: (t["created_at"], t["id"]), reverse=True)
    ]

    seen: list[str] = []
    sizes: list[int] = []
    cursor = None
    while True:
        query = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = page(api, headers, **query)
        sizes.append(len(body["items"]))
        seen += [t["id"] for t in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    assert len(set(seen)) == len(everything) == 11
    assert sizes == [3, 3, 3, 2]


def test_last_full_page_has_no_next_cursor(api, make_client, submit):
    headers = make_client("submitter")
    for i in range(2):
        submit(headers, args=[i])
    assert page(api, headers, limit=2)["next_cursor"] is None
    assert page(api, headers, limit=1)["next_cursor"] is not None


def test_cursor_keeps_the_filters_of_the_query(api, make_client, submit):
    headers = make_client("submitter")
    low = [submit(headers, queue="low", args=[i])["id"] for i in range(3)]
    submit(headers, queue="high", delay=3600)
    first = page(api, headers, queue="low", limit=2)
    second = page(api, headers, queue="low", limit=2, cursor=first["next_cursor"])
    assert [t["id"] for t in first["items"] + second["items"]] == low[::-1]


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "abc",
        "!!!!",
        _b64("garbage"),
        _b64("2024-01-01T00:00:00+00:00|not-a-uuid"),
        _b64("yesterday|" + str(uuid.UUID(int=0x62289693))),
        base64.urlsafe_b64encode(b"\xff\xfe|\x00").decode(),
        "x" * 201,
    ],
)
def test_bad_cursor_is_422_naming_cursor(api, submitter, assert_problem, cursor):
    response = api.get(TASKS, query_string={"cursor": cursor}, headers=submitter)
    assert_problem(response, 422, "cursor")


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "ten", "1.5"])
def test_limit_out_of_range_is_422_naming_limit(api, submitter, assert_problem, limit):
    response = api.get(TASKS, query_string={"limit": limit}, headers=submitter)
    assert_problem(response, 422, "limit")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": "bogus"}, "status"),
        ({"status": "queued,bogus"}, "status"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_before": "2024-13-01T00:00:00Z"}, "created_before"),
        ({"workflow_id": "nope"}, "workflow_id"),
        ({"schedule_id": "nope"}, "schedule_id"),
        ({"tag": ""}, "tag"),
        ({"queue": "x" * 101}, "queue"),
    ],
)
def test_bad_list_filter_is_422_naming_it(api, submitter, assert_problem, query, field):
    body = assert_problem(api.get(TASKS, query_string=query, headers=submitter), 422)
    assert any(name == field or name.startswith(field + ".") for name in body["errors"]), body


# --- timeline -------------------------------------------------------------------------------


def test_events_of_a_new_task_show_its_submission(api, submitter, submit):
    task = submit(submitter)
    response = api.get(f"{TASKS}/{task['id']}/events", headers=submitter)
    assert response.status_code == 200
    [event] = response.json
    assert set(event) == {"at", "status", "attempt", "worker", "detail"}
    assert (event["status"], event["attempt"], event["worker"]) == ("queued", 0, None)


def test_events_end_with_the_cancellation(api, submitter, submit):
    task = submit(submitter, delay=3600)
    api.post(f"{TASKS}/{task['id']}/cancel", headers=submitter)
    events = api.get(f"{TASKS}/{task['id']}/events", headers=submitter).json
    assert [e["status"] for e in events] == ["scheduled", "cancelled"]
    assert events[0]["at"] <= events[1]["at"]


def test_events_of_another_submitters_task_are_404(
    api, submitter, other_submitter, submit, assert_problem
):
    task = submit(submitter)
    assert_problem(api.get(f"{TASKS}/{task['id']}/events", headers=other_submitter), 404)
    assert_problem(api.get(f"{TASKS}/{uuid.uuid4()}/events", headers=submitter), 404)


# --- cancel ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "waiting", [{"queue": "low"}, {"delay": 3600}], ids=["queued", "scheduled"]
)
def test_cancel_waiting_task_is_200_then_409(api, submitter, submit, assert_problem, waiting):
    task = submit(submitter, **waiting)
    assert task["status"] in ("queued", "scheduled")
    response = api.post(f"{TASKS}/{task['id']}/cancel", headers=submitter)
    assert response.status_code == 200
    assert response.json["status"] == "cancelled"
    assert response.json["finished_at"] is not None
    assert api.get(f"{TASKS}/{task['id']}", headers=submitter).json["status"] == "cancelled"

    again = assert_problem(api.post(f"{TASKS}/{task['id']}/cancel", headers=submitter), 409)
    assert "cancelled" in again["detail"]


def test_cancel_another_submitters_task_is_404_and_leaves_it(
    api, submitter, other_submitter, submit, assert_problem
):
    task = submit(submitter)
    assert_problem(api.post(f"{TASKS}/{task['id']}/cancel", headers=other_submitter), 404)
    assert api.get(f"{TASKS}/{task['id']}", headers=submitter).json["status"] == "queued"


def test_operator_cancels_anyones_task(api, submitter, operator, submit):
    task = submit(submitter)
    response = api.post(f"{TASKS}/{task['id']}/cancel", headers=operator)
    assert response.status_code == 200
    assert response.json["status"] == "cancelled"


def test_cancel_unknown_task_is_404(api, submitter, assert_problem):
    assert_problem(api.post(f"{TASKS}/{uuid.uuid4()}/cancel", headers=submitter), 404)


# --- task types -----------------------------------------------------------------------------


def test_task_types_lists_the_builtin_types(api, submitter):
    response = api.get("/api/v1/task-types", headers=submitter)
    assert response.status_code == 200
    names = [t["name"] for t in response.json]
    assert names == sorted(names)
    expected = {"demo.echo", "demo.sleep", "demo.fail", "demo.flaky", "demo.sum", "http.request"}
    assert expected <= set(names)
    echo = next(t for t in response.json if t["name"] == "demo.echo")
    assert {"name", "description", "queue", "max_retries", "parameters"} <= set(echo)
    assert echo["description"]


def test_task_types_need_a_token(api, assert_problem):
    assert_problem(api.get("/api/v1/task-types"), 401)
