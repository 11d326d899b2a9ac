"""Workflows end to end: graphs submitted through the API, run by a real worker, released by
the outcome seam's workflow consumer."""

from __future__ import annotations

import pytest

from tests.workflow_support import node, statuses, submit, task, wait_finished

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
