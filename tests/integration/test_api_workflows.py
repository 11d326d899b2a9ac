"""/api/v1/workflows against real Postgres and Redis (no worker: queue "low" is not consumed)."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import pytest

from tests.workflow_support import get, node, statuses, submit


def low(node_id: str, *parents: str, **options) -> dict:
    return node(node_id, "demo.echo", *parents, queue="low", **options)


@pytest.mark.parametrize(
    ("nodes", "field", "words"),
    [
        ([], "nodes", "Length must be between 1"),
        ([low("a"), low("a")], "nodes.1.id", "duplicate node id 'a'"),
        ([low("a", "ghost")], "nodes.0.depends_on", "unknown node 'ghost'"),
        ([low("a", "c"), low("b", "a"), low("c", "b")], "nodes", "cycle: "),
        ([low("a", "a")], "nodes", "cycle: a -> a"),
        ([low("a", trigger_rule="sometimes")], "nodes.0.trigger_rule", "Must be one of"),
        ([low("a"), node("b", "no.such", "a")], "nodes.1.task", "unknown task type"),
        ([low("a"), low("b", "a", priority=42)], "nodes.1.priority", ""),
        ([low("a", delay=5)], "nodes.0.delay", "Unknown field"),
        ([node("a", "demo.sleep", args=[1, 2, 3])], "nodes.0.kwargs", "too many"),
    ],
    ids=[
        "no-nodes",
        "duplicate",
        "unknown-parent",
        "cycle",
        "self-cycle",
        "trigger-rule",
        "task-type",
        "priority",
        "delay",
        "args",
    ],
)
def test_invalid_workflows_are_422_naming_the_nodes(
    api, submitter, assert_problem, nodes, field, words
):
    response = api.post(
        "/api/v1/workflows", json={"name": "bad", "nodes": nodes}, headers=submitter
    )
    body = assert_problem(response, 422, field)
    assert words in " ".join(body["errors"][field]), body
    assert api.get("/api/v1/workflows?limit=1000", headers=submitter).status_code == 200


def test_a_cycle_names_every_node_on_it(api, submitter, assert_problem):
    nodes = [low("ok"), low("a", "c", "ok"), low("b", "a"), low("c", "b")]
    response = api.post("/api/v1/workflows", json={"name": "c", "nodes": nodes}, headers=submitter)
    message = assert_problem(response, 422, "nodes")["errors"]["nodes"][0]
    assert set(message.removeprefix("cycle: ").split(" -> ")) == {"a", "b", "c"}


def test_workflow_notify_is_validated_like_a_tasks(api, submitter, assert_problem):
    """A workflow's notify is kept (its end is announced: tests/e2e/test_notifications.py);
    a bad one is a 422 naming the field."""
    response = api.post(
        "/api/v1/workflows",
        json={"name": "n", "nodes": [low("a")], "notify": {"email": "nobody"}},
        headers=submitter,
    )
    assert_problem(response, 422, "notify.email")
    response = api.post(
        "/api/v1/workflows",
        json={"name": "n", "nodes": [low("a")], "notify": {"email": "x@example.com"}},
        headers=submitter,
    )
    assert response.status_code == 202, response.json


def test_submit_commits_every_node_roots_queued_children_pending(api, submitter):
    wf = submit(api, submitter, [low("a"), low("b", "a"), low("c", "a", "b")], tags=["t1"])
    assert wf["status"] == "running" and wf["tags"] == ["t1"] and wf["finished_at"] is None
    assert statuses(wf) == {"a": "queued", "b": "pending", "c": "pending"}
    assert get(api, submitter, wf["id"]) == wf
    listed = api.get(f"/api/v1/tasks?workflow_id={wf['id']}", headers=submitter).get_json()
    assert {t["node_id"] for t in listed["items"]} == {"a", "b", "c"}
    assert all(t["workflow_id"] == wf["id"] for t in listed["items"])
    explain_free = api.get(f"/api/v1/tasks/{wf['nodes']['b']['task_id']}", headers=submitter)
    assert explain_free.get_json()["status"] == "pending"


def test_workflows_are_owner_scoped(api, submitter, other_submitter, operator, assert_problem):
    wf = submit(api, submitter, [low("a")])
    for path in ("", "/graph"):
        assert_problem(api.get(f"/api/v1/workflows/{wf['id']}{path}", headers=other_submitter), 404)
    for action in ("cancel", "retry"):
        assert_problem(
            api.post(f"/api/v1/workflows/{wf['id']}/{action}", headers=other_submitter), 404
        )
    theirs = api.get("/api/v1/workflows?limit=1000", headers=other_submitter).get_json()
    assert wf["id"] not in {w["id"] for w in theirs["items"]}
    assert get(api, operator, wf["id"])["id"] == wf["id"]
    assert_problem(api.get(f"/api/v1/workflows/{uuid.uuid4()}", headers=submitter), 404)


def test_list_filters_by_status_and_tag_with_a_cursor(api, submitter):
    tag = f"list-{uuid.uuid4().hex[:8]}"
    made = [submit(api, submitter, [low("a")], tags=[tag]) for _ in range(3)]
    page = api.get(f"/api/v1/workflows?tag={tag}&limit=2", headers=submitter).get_json()
    assert [w["id"] for w in page["items"]] == [made[2]["id"], made[1]["id"]]
    assert "nodes" not in page["items"][0]
    rest = api.get(
        f"/api/v1/workflows?tag={tag}&limit=2&cursor={page['next_cursor']}", headers=submitter
    ).get_json()
    assert [w["id"] for w in rest["items"]] == [made[0]["id"]] and rest["next_cursor"] is None
    cancelled = api.post(f"/api/v1/workflows/{made[0]['id']}/cancel", headers=submitter)
    assert cancelled.status_code == 200
    by_status = api.get(
        f"/api/v1/workflows?tag={tag}&status=cancelled", headers=submitter
    ).get_json()
    assert [w["id"] for w in by_status["items"]] == [made[0]["id"]]


def test_list_filters_by_creation_time_and_tasks_list_by_workflow(api, submitter):
    tag = f"time-{uuid.uuid4().hex[:8]}"
    first = submit(api, submitter, [low("a")], tags=[tag])
    second = submit(api, submitter, [low("a"), low("b", "a")], tags=[tag])
    base = f"/api/v1/workflows?tag={tag}"

    def listed(query: str) -> list[str]:
        response = api.get(base + query, headers=submitter)
        assert response.status_code == 200, response.get_json()
        return [w["id"] for w in response.get_json()["items"]]

    after = quote(first["created_at"])
    assert listed(f"&created_after={after}") == [second["id"]]
    assert listed(f"&created_before={quote(second['created_at'])}") == [first["id"]]
    assert listed(f"&created_after={after}&created_before={after}") == []
    assert api.get(base + "&created_after=yesterday", headers=submitter).status_code == 422
    tasks = api.get(f"/api/v1/tasks?workflow_id={second['id']}", headers=submitter).get_json()
    assert sorted(t["node_id"] for t in tasks["items"]) == ["a", "b"]
    assert {t["workflow_id"] for t in tasks["items"]} == {second["id"]}


def test_cancel_a_waiting_workflow_and_conflicts_after(api, submitter, assert_problem):
    wf = submit(api, submitter, [low("a"), low("b", "a")])
    response = api.post(f"/api/v1/workflows/{wf['id']}/cancel", headers=submitter)
    assert response.status_code == 200
    done = response.get_json()
    assert done["status"] == "cancelled" and done["finished_at"]
    assert statuses(done) == {"a": "cancelled", "b": "cancelled"}
    assert_problem(api.post(f"/api/v1/workflows/{wf['id']}/cancel", headers=submitter), 409)


def test_retry_of_a_running_workflow_conflicts(api, submitter, assert_problem):
    wf = submit(api, submitter, [low("a")])
    assert_problem(api.post(f"/api/v1/workflows/{wf['id']}/retry", headers=submitter), 409)


def test_retry_of_a_cancelled_workflow_gives_its_nodes_new_tasks(api, submitter):
    wf = submit(api, submitter, [low("a"), low("b", "a")])
    api.post(f"/api/v1/workflows/{wf['id']}/cancel", headers=submitter)
    response = api.post(f"/api/v1/workflows/{wf['id']}/retry", headers=submitter)
    assert response.status_code == 200, response.get_json()
    again = response.get_json()
    assert again["status"] == "running"
    assert statuses(again) == {"a": "queued", "b": "pending"}
    assert again["nodes"]["a"]["task_id"] != wf["nodes"]["a"]["task_id"]


def test_graph_is_a_mermaid_flowchart_coloured_by_status(api, submitter):
    wf = submit(api, submitter, [low("a"), low("b", "a")])
    response = api.get(f"/api/v1/workflows/{wf['id']}/graph", headers=submitter)
    assert response.status_code == 200 and response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert text.startswith("flowchart TD")
    assert ":::queued" in text and ":::pending" in text and " --> " in text


def test_ten_thousand_nodes_in_one_submission(api, submitter):
    nodes = [low("root")] + [low(f"n{i}", "root") for i in range(9_999)]
    wf = submit(api, submitter, nodes)
    assert len(wf["nodes"]) == 10_000
    assert sum(1 for s in statuses(wf).values() if s == "pending") == 9_999
