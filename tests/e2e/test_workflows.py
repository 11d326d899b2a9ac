"""Workflows end to end: graphs submitted through the API, run by a real worker, released by
the outcome seam's workflow consumer."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.support import wait_until
from tests.workflow_support import get, node, statuses, submit, task, wait_finished

pytestmark = pytest.mark.e2e


def test_diamond_passes_parents_results_down(api, submitter, worker, scheduler):
    wf = submit(
        api,
        submitter,
        [
            node("a", "demo.sum", kwargs={"values": [1]}),
            node("b", "demo.sum", "a", kwargs={"values": [10]}),
            node("c", "demo.sum", "a", kwargs={"values": [100]}),
            node("d", "demo.sum", "b", "c"),
        ],
    )
    assert statuses(wf) == {"a": "queued", "b": "pending", "c": "pending", "d": "pending"}
    done = wait_finished(api, submitter, wf["id"])
    assert done["status"] == "succeeded" and done["finished_at"]
    assert statuses(done) == dict.fromkeys("abcd", "succeeded")
    d = task(api, submitter, done["nodes"]["d"]["task_id"])
    assert d["kwargs"]["parents"] == {"b": 11, "c": 101}
    assert d["result"] == 112
    assert d["workflow_id"] == wf["id"] and d["node_id"] == "d"


def _finished_at(api, headers, task_id: str) -> str:
    return task(api, headers, task_id)["finished_at"]


def test_fast_branch_finishes_before_its_slow_sibling(api, submitter, worker, scheduler):
    """No false dependencies: c waits for b only, not for the slow sibling s."""
    wf = submit(
        api,
        submitter,
        [
            node("a", "demo.sum"),
            node("s", "demo.sleep", "a", kwargs={"seconds": 6}),
            node("b", "demo.sum", "a"),
            node("c", "demo.sum", "b"),
        ],
    )
    c_id, s_id = wf["nodes"]["c"]["task_id"], wf["nodes"]["s"]["task_id"]
    c = wait_until(
        lambda: (t := task(api, submitter, c_id))["status"] == "succeeded" and t,
        20,
        0.05,
        message="c to succeed",
    )
    # The sibling is still at work: started (its attempt shows as running once it has run for
    # claim_after, 50 ms; c may finish before that) and not finished.
    sibling = task(api, submitter, s_id)
    assert sibling["status"] in ("queued", "running") and sibling["finished_at"] is None
    done = wait_finished(api, submitter, wf["id"])
    assert done["status"] == "succeeded"
    assert c["finished_at"] < _finished_at(api, submitter, s_id)


def test_each_trigger_rule_releases_fails_or_skips(api, submitter, worker, scheduler):
    once = {"max_retries": 0}
    wf = submit(
        api,
        submitter,
        [
            node("ok", "demo.echo"),
            node("bad", "demo.fail", retry=once),
            node("all_success", "demo.echo", "ok", "bad"),
            node("all_done", "demo.echo", "ok", "bad", trigger_rule="all_done"),
            node("one_success", "demo.echo", "ok", "bad", trigger_rule="one_success"),
            node("one_failed", "demo.echo", "ok", "bad", trigger_rule="one_failed"),
            node("one_failed_unmet", "demo.echo", "ok", trigger_rule="one_failed"),
            node("none_failed", "demo.echo", "ok", "bad", trigger_rule="none_failed"),
            node("below_skipped", "demo.echo", "one_failed_unmet"),
            node("none_failed_skip", "demo.echo", "one_failed_unmet", trigger_rule="none_failed"),
            node("below_upstream", "demo.echo", "all_success"),
            node("done_below", "demo.echo", "below_upstream", trigger_rule="all_done"),
        ],
    )
    done = wait_finished(api, submitter, wf["id"])
    assert statuses(done) == {
        "ok": "succeeded",
        "bad": "failed",
        "all_success": "upstream_failed",
        "all_done": "succeeded",
        "one_success": "succeeded",
        "one_failed": "succeeded",
        "one_failed_unmet": "skipped",
        "none_failed": "upstream_failed",
        "below_skipped": "skipped",
        "none_failed_skip": "succeeded",
        "below_upstream": "upstream_failed",
        "done_below": "succeeded",
    }
    assert done["status"] == "failed"
    # a skipped parent's result is null; a node that did not run has no result
    ran = task(api, submitter, done["nodes"]["all_done"]["task_id"])
    assert ran["kwargs"]["parents"] == {"ok": {"args": [], "kwargs": {}}, "bad": None}
    skipped = task(api, submitter, done["nodes"]["below_skipped"]["task_id"])
    assert skipped["status"] == "skipped" and skipped["finished_at"] and skipped["attempts"] == 0


def test_every_parent_succeeding_skips_a_one_failed_node_and_the_workflow_succeeds(
    api, submitter, worker, scheduler
):
    wf = submit(
        api,
        submitter,
        [node("a", "demo.echo"), node("on_failure", "demo.echo", "a", trigger_rule="one_failed")],
    )
    done = wait_finished(api, submitter, wf["id"])
    assert statuses(done) == {"a": "succeeded", "on_failure": "skipped"}
    assert done["status"] == "succeeded"


def test_cancel_stops_running_and_waiting_nodes(api, submitter, worker, scheduler):
    wf = submit(
        api,
        submitter,
        [node("slow", "demo.sleep", kwargs={"seconds": 30}), node("after", "demo.echo", "slow")],
    )
    slow_id = wf["nodes"]["slow"]["task_id"]
    wait_until(
        lambda: task(api, submitter, slow_id)["status"] == "running", 20, message="slow to start"
    )
    response = api.post(f"/api/v1/workflows/{wf['id']}/cancel", headers=submitter)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "cancelled"
    assert statuses(response.get_json()) == {"slow": "cancelled", "after": "cancelled"}
    again = api.post(f"/api/v1/workflows/{wf['id']}/cancel", headers=submitter)
    assert again.status_code == 409 and again.mimetype == "application/problem+json"
    # the killed attempt does not bring it back
    events = api.get(f"/api/v1/tasks/{slow_id}/events", headers=submitter).get_json()
    assert events[-1]["status"] == "cancelled"
    assert get(api, submitter, wf["id"])["status"] == "cancelled"


def test_retry_after_failure_reruns_what_failed_and_keeps_what_succeeded(
    api, submitter, worker, scheduler
):
    key = f"wf-retry-{uuid.uuid4().hex}"
    wf = submit(
        api,
        submitter,
        [
            node("a", "demo.sum", kwargs={"values": [2]}),
            node(
                "flaky",
                "demo.flaky",
                "a",
                kwargs={"failures": 1, "key": key},
                retry={"max_retries": 0},
            ),
            node("d", "demo.sum", "a", "flaky"),
        ],
    )
    first = wait_finished(api, submitter, wf["id"])
    assert first["status"] == "failed"
    assert statuses(first) == {"a": "succeeded", "flaky": "failed", "d": "upstream_failed"}
    running = api.post(f"/api/v1/workflows/{wf['id']}/retry", headers=submitter)
    assert running.status_code == 200, running.get_json()
    again = wait_finished(api, submitter, wf["id"])
    assert again["status"] == "succeeded"
    assert again["nodes"]["a"]["task_id"] == first["nodes"]["a"]["task_id"]  # kept
    new_flaky = task(api, submitter, again["nodes"]["flaky"]["task_id"])
    assert new_flaky["replay_of"] == first["nodes"]["flaky"]["task_id"]
    assert new_flaky["result"] == 2  # its second run for the key
    d = task(api, submitter, again["nodes"]["d"]["task_id"])
    assert d["kwargs"]["parents"] == {"a": 2, "flaky": 2} and d["result"] == 4
    # the old tasks stay as they ended; the workflow's tasks list has both attempts
    assert task(api, submitter, first["nodes"]["flaky"]["task_id"])["status"] == "failed"
    listed = api.get(f"/api/v1/tasks?workflow_id={wf['id']}", headers=submitter).get_json()
    assert len(listed["items"]) == 5
    nothing = api.post(f"/api/v1/workflows/{wf['id']}/retry", headers=submitter)
    assert nothing.status_code == 409


def test_fan_in_of_a_thousand_nodes_releases_the_sink_once(api, submitter, worker, scheduler):
    roots = [node(f"r{i}", "demo.sum", kwargs={"values": [1]}) for i in range(1000)]
    sink = node("sink", "demo.sum", *[r["id"] for r in roots])
    started = time.monotonic()
    wf = submit(api, submitter, [*roots, sink])
    accepted = time.monotonic() - started
    done = wait_finished(api, submitter, wf["id"], timeout=240, interval=1.0)
    elapsed = time.monotonic() - started
    assert done["status"] == "succeeded"
    result = task(api, submitter, done["nodes"]["sink"]["task_id"])
    assert result["result"] == 1000
    events = api.get(f"/api/v1/tasks/{result['id']}/events", headers=submitter).get_json()
    assert [e["status"] for e in events] == ["pending", "queued", "running", "succeeded"]
    print(f"1001-node fan-in: accepted in {accepted:.2f}s, finished in {elapsed:.1f}s")
