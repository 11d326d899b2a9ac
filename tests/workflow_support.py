"""Helpers of the workflow tests: submit a graph through the API, wait for its end."""

from __future__ import annotations

from typing import Any

from tests.support import wait_until

FINISHED = ("succeeded", "failed", "cancelled")


def node(node_id: str, task: str = "demo.sum", *parents: str, **options: Any) -> dict:
    """One node of a workflow body."""
    body = {"id": node_id, "task": task, **options}
    if parents:
        body["depends_on"] = list(parents)
    return body


def submit(api, headers: dict, nodes: list[dict], name: str = "wf", **body: Any) -> dict:
    """POST /api/v1/workflows, expecting 202; the workflow."""
    response = api.post(
        "/api/v1/workflows", json={"name": name, "nodes": nodes, **body}, headers=headers
    )
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def get(api, headers: dict, workflow_id: str) -> dict:
    response = api.get(f"/api/v1/workflows/{workflow_id}", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def wait_finished(
    api, headers: dict, workflow_id: str, timeout: float = 60, interval: float = 0.1
) -> dict:
    """Poll the workflow until it has finished; return it."""
    return wait_until(
        lambda: (w := get(api, headers, workflow_id))["status"] in FINISHED and w,
        timeout,
        interval,
        message=f"workflow {workflow_id} to finish",
    )


def task(api, headers: dict, task_id: str) -> dict:
    response = api.get(f"/api/v1/tasks/{task_id}", headers=headers)
    assert response.status_code == 200
    return response.get_json()


def statuses(workflow: dict) -> dict[str, str]:
    return {node_id: n["status"] for node_id, n in workflow["nodes"].items()}
