"""/api/v1/schedules over real PostgreSQL: validation, owner scope, changes, trigger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

BASE = {"name": "nightly", "task": "demo.echo", "queue": "low", "interval": 60}


@pytest.fixture
def create(api):
    def post(headers, **body):
        body = {k: v for k, v in {**BASE, **body}.items() if v is not None}
        response = api.post("/api/v1/schedules", json=body, headers=headers)
        assert response.status_code == 201, response.json
        return response.json

    return post


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_create_returns_the_schedule_with_its_first_slot(api, submitter):
    before = datetime.now(UTC)
    response = api.post(
        "/api/v1/schedules",
        json={**BASE, "kwargs": {"x": 1}, "tags": ["t"], "retry": {"max_retries": 1}},
        headers=submitter,
    )
    assert response.status_code == 201, response.json
    body = response.json
    assert response.headers["Location"].endswith(f"/api/v1/schedules/{body['id']}")
    assert body["enabled"] is True and body["overlap"] == "skip" and body["catchup"] == "last"
    assert body["timezone"] == "UTC" and body["interval"] == 60 and body["cron"] is None
    assert body["last_run_at"] is None and body["last_task_id"] is None
    first = _at(body["next_run_at"])
    assert before + timedelta(seconds=59) <= first <= datetime.now(UTC) + timedelta(seconds=60)
    assert api.get(response.headers["Location"], headers=submitter).json == body


def test_cron_schedule_next_run_is_in_its_time_zone(api, submitter, create):
    body = create(submitter, interval=None, cron="30 2 * * *", timezone="Europe/Berlin")
    local = _at(body["next_run_at"]).astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) in {(2, 30), (3, 30)}  # 03:30 only on spring-forward day


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"interval": None, "cron": "61 * * * *"}, "cron"),
        ({"interval": None, "cron": "* * * *"}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"cron": "0 * * * *"}, "cron"),  # both
        ({"interval": None}, "cron"),  # neither
        ({"interval": 0.5}, "interval"),
        ({"interval": 0}, "interval"),
        ({"task": "no.such.type"}, "task"),
        ({"task": "demo.sleep", "args": [1, 2]}, "kwargs"),  # named as tasks name it
        ({"queue": "nowhere"}, "queue"),
        ({"priority": 10}, "priority"),
        ({"overlap": "sometimes"}, "overlap"),
        ({"catchup": "some"}, "catchup"),
        ({"name": ""}, "name"),
        ({"start_at": "2031-01-02T00:00:00Z", "end_at": "2031-01-01T23:59:59Z"}, "end_at"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_invalid_schedule_is_422_naming_the_field(api, submitter, assert_problem, change, field):
    body = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    response = api.post("/api/v1/schedules", json=body, headers=submitter)
    assert_problem(response, 422, field)


def test_others_schedules_are_404_and_unlisted_operators_see_all(
    api, submitter, other_submitter, operator, create, assert_problem
):
    mine = create(submitter)
    base = f"/api/v1/schedules/{mine['id']}"
    for method, path in [
        ("get", base),
        ("patch", base),
        ("delete", base),
        ("post", base + "/pause"),
        ("post", base + "/resume"),
        ("post", base + "/trigger"),
        ("get", base + "/runs"),
    ]:
        kwargs = {"json": {"name": "x"}} if method == "patch" else {}
        response = getattr(api, method)(path, headers=other_submitter, **kwargs)
        assert_problem(response, 404)
    listed = api.get("/api/v1/schedules?limit=1000", headers=other_submitter).json["items"]
    assert mine["id"] not in {s["id"] for s in listed}
    assert api.get(base, headers=operator).status_code == 200
    everyone = api.get("/api/v1/schedules?limit=1000", headers=operator).json["items"]
    assert mine["id"] in {s["id"] for s in everyone}
    assert api.get(base, headers=submitter).status_code == 200


def test_list_filters_and_pages(api, make_client, create):
    headers = make_client("submitter")
    ids = [create(headers, name=f"s{i}")["id"] for i in range(3)]
    paused = create(headers, task="demo.sleep", kwargs={"seconds": 0}, enabled=False)
    page = api.get("/api/v1/schedules?limit=2", headers=headers).json
    assert [s["id"] for s in page["items"]] == [paused["id"], ids[2]]
    rest = api.get(f"/api/v1/schedules?limit=10&cursor={page['next_cursor']}", headers=headers)
    assert [s["id"] for s in rest.json["items"]] == [ids[1], ids[0]]
    assert rest.json["next_cursor"] is None
    off = api.get("/api/v1/schedules?enabled=false", headers=headers).json["items"]
    assert [s["id"] for s in off] == [paused["id"]]
    by_task = api.get("/api/v1/schedules?task=demo.echo", headers=headers).json["items"]
    assert {s["id"] for s in by_task} == set(ids)


def test_patch_recomputes_next_run_and_cron_replaces_interval(api, submitter, create):
    schedule = create(submitter)
    url = f"/api/v1/schedules/{schedule['id']}"
    changed = api.patch(url, json={"cron": "0 3 * * *"}, headers=submitter)
    assert changed.status_code == 200, changed.json
    assert changed.json["interval"] is None and changed.json["cron"] == "0 3 * * *"
    nxt = _at(changed.json["next_run_at"])
    assert (nxt.hour, nxt.minute, nxt.second) == (3, 0, 0)
    back = api.patch(url, json={"interval": 7200, "name": "renamed"}, headers=submitter).json
    assert back["cron"] is None and back["name"] == "renamed"
    assert _at(back["next_run_at"]) - datetime.now(UTC) > timedelta(seconds=7100)
    assert api.patch(url, headers=submitter).status_code == 200  # no body: nothing to change
    bad = api.patch(url, json={"interval": None, "cron": None}, headers=submitter)
    assert bad.status_code == 422


def test_patch_that_does_not_fit_the_stored_schedule_is_409(api, submitter, create, assert_problem):
    """What joins a change with stored values (which the document cannot state) conflicts."""
    schedule = create(submitter, start_at="2031-01-01T00:00:00Z", task="demo.sleep")
    url = f"/api/v1/schedules/{schedule['id']}"
    binds_not = api.patch(url, json={"args": [1, 2]}, headers=submitter)
    assert_problem(binds_not, 409, "kwargs")
    unknown = api.patch(url, json={"task": "no.such.type"}, headers=submitter)
    assert_problem(unknown, 422, "task")
    assert api.get(url, headers=submitter).json == schedule


def test_end_before_start_is_422_naming_end_at_also_when_a_patch_makes_it(
    api, submitter, create, assert_problem
):
    """The merged schedule is judged: a new end before the stored start, or a new start after
    the stored end, is refused and nothing changes; an end equal to the start is one slot."""
    schedule = create(submitter, start_at="2031-01-01T00:00:00Z", end_at="2031-06-01T00:00:00Z")
    url = f"/api/v1/schedules/{schedule['id']}"
    early = api.patch(url, json={"end_at": "2030-12-31T23:59:59Z"}, headers=submitter)
    assert_problem(early, 422, "end_at")
    late = api.patch(url, json={"start_at": "2031-06-01T00:00:01Z"}, headers=submitter)
    assert_problem(late, 422, "end_at")
    both = api.patch(
        url,
        json={"start_at": "2031-02-01T00:00:00Z", "end_at": "2031-01-01T00:00:00Z"},
        headers=submitter,
    )
    assert_problem(both, 422, "end_at")
    assert api.get(url, headers=submitter).json == schedule
    same = api.patch(url, json={"end_at": "2031-01-01T00:00:00Z"}, headers=submitter)
    assert same.status_code == 200, same.json
    assert same.json["next_run_at"] == same.json["end_at"] == same.json["start_at"]


def test_pause_resume_and_trigger_while_paused(api, submitter, create):
    schedule = create(submitter)
    url = f"/api/v1/schedules/{schedule['id']}"
    paused = api.post(url + "/pause", headers=submitter).json
    assert paused["enabled"] is False and paused["next_run_at"] is None
    fired = api.post(url + "/trigger", headers=submitter)
    assert fired.status_code == 202, fired.json
    assert fired.json["kind"] == "manual" and fired.json["status"] == "fired"
    task = api.get(fired.headers["Location"], headers=submitter).json
    assert task["schedule_id"] == schedule["id"] and task["queue"] == "low"
    assert task["run_at"] == fired.json["slot"]
    listed = api.get(f"/api/v1/tasks?schedule_id={schedule['id']}", headers=submitter).json
    assert [t["id"] for t in listed["items"]] == [task["id"]]
    runs = api.get(url + "/runs", headers=submitter).json["items"]
    assert [(r["task_id"], r["kind"], r["task_status"]) for r in runs] == [
        (task["id"], "manual", "queued")
    ]
    resumed = api.post(url + "/resume", headers=submitter).json
    assert resumed["enabled"] is True and resumed["next_run_at"] is not None
    assert resumed["last_task_id"] == task["id"]


def test_delete_removes_the_schedule_and_keeps_its_tasks(api, submitter, create):
    schedule = create(submitter)
    url = f"/api/v1/schedules/{schedule['id']}"
    task_id = api.post(url + "/trigger", headers=submitter).json["task_id"]
    assert api.delete(url, headers=submitter).status_code == 204
    assert api.get(url, headers=submitter).status_code == 404
    assert api.delete(url, headers=submitter).status_code == 404
    assert api.get(f"/api/v1/tasks/{task_id}", headers=submitter).status_code == 200


def test_schedule_paths_are_in_the_openapi_document(api):
    spec = api.get("/api/openapi.json").json
    assert {
        "/api/v1/schedules",
        "/api/v1/schedules/{schedule_id}",
        "/api/v1/schedules/{schedule_id}/pause",
        "/api/v1/schedules/{schedule_id}/resume",
        "/api/v1/schedules/{schedule_id}/trigger",
        "/api/v1/schedules/{schedule_id}/runs",
    } <= set(spec["paths"])
    create = spec["components"]["schemas"]["ScheduleCreate"]
    assert "Europe/Berlin" in create["properties"]["timezone"]["enum"]
    assert create["properties"]["interval"]["minimum"] == 1
    assert create["not"] == {"required": ["cron", "interval"]}
