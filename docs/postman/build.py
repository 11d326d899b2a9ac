"""Build docs/postman/collection.json: a request with tests for every operation of the API.

    python docs/postman/build.py          # rewrite collection.json
    python docs/postman/build.py --check  # exit 1 if collection.json is not what this builds

Request bodies are the files of samples/ (read here, so a sample and the collection cannot drift
apart), and the collection holds a request only for an operation that the API's own OpenAPI
document lists (built offline from the app): an endpoint added to the API shows up in
tests/e2e/test_postman.py as uncovered until a request for it is written below. Requests run in
order; each one's tests check its status, the essentials of its body, and save the ids the next
ones use. Waiting for a worker is a request that re-runs itself (postman.setNextRequest) until
the resource reaches the status it waits for.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
COLLECTION = Path(__file__).with_name("collection.json")
SCHEMA = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
NIL = "00000000-0000-0000-0000-000000000000"
POLL_MAX = 240  # a waiting request re-runs at most this often, 250 ms apart


@dataclass
class Request:
    name: str
    method: str
    path: str  # with {{variables}}
    operation: str  # "METHOD /openapi/path/{param}" it covers
    tests: list[str] = field(default_factory=list)
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    auth: str | None = "{{accessToken}}"  # bearer token; None: no auth
    prerequest: list[str] = field(default_factory=list)

    def item(self) -> dict[str, Any]:
        request: dict[str, Any] = {
            "method": self.method,
            "header": [{"key": k, "value": v} for k, v in self.headers.items()],
            "url": "{{baseUrl}}" + self.path,
        }
        if self.auth is None:
            request["auth"] = {"type": "noauth"}
        else:
            request["auth"] = {
                "type": "bearer",
                "bearer": [{"key": "token", "value": self.auth, "type": "string"}],
            }
        if self.body is not None:
            request["body"] = {
                "mode": "raw",
                "raw": self.body,
                "options": {"raw": {"language": "json"}},
            }
            request["header"].append({"key": "Content-Type", "value": "application/json"})
        events = [{"listen": "test", "script": {"type": "text/javascript", "exec": self.tests}}]
        if self.prerequest:
            events.insert(
                0,
                {
                    "listen": "prerequest",
                    "script": {"type": "text/javascript", "exec": self.prerequest},
                },
            )
        return {"name": self.name, "event": events, "request": request}


# --- test snippets ---------------------------------------------------------------------------


def status(code: int) -> list[str]:
    return [f'pm.test("status {code}", () => pm.response.to.have.status({code}));']


def problem(code: int) -> list[str]:
    return [
        *status(code),
        'pm.test("problem+json", () => {',
        '  pm.expect(pm.response.headers.get("Content-Type")).to.include("application/problem+json");',
        "  const body = pm.response.json();",
        f"  pm.expect(body.status).to.eql({code});",
        '  pm.expect(body).to.have.property("title");',
        '  pm.expect(body).to.have.property("request_id");',
        "});",
    ]


def has(*names: str) -> list[str]:
    return [
        f'pm.test("has {", ".join(names)}", () => {{',
        "  const body = pm.response.json();",
        f"  for (const name of {json.dumps(list(names))}) pm.expect(body).to.have.property(name);",
        "});",
    ]


def expect(label: str, condition: str) -> list[str]:
    """A test of `condition`, a JS expression over `body` (the response JSON)."""
    return [
        f"pm.test({json.dumps(label)}, () => {{",
        "  const body = pm.response.json();",
        f"  pm.expect({condition}).to.be.true;",
        "});",
    ]


def save(variable: str, expression: str = "body.id") -> list[str]:
    return [
        "{",
        "  const body = pm.response.json();",
        f'  pm.collectionVariables.set("{variable}", {expression});',
        "}",
    ]


def poll(target: str, statuses: tuple[str, ...], done: tuple[str, ...]) -> list[str]:
    """Re-run this request until body.status is in `done`; then test it is in `statuses`."""
    return [
        *status(200),
        "const body = pm.response.json();",
        'const polls = Number(pm.collectionVariables.get("polls") || 0);',
        "const waiting = pm.response.code === 200 &&",
        f"  !{json.dumps(list(done))}.includes(body.status) && polls < {POLL_MAX};",
        "if (waiting) {",
        '  pm.collectionVariables.set("polls", polls + 1);',
        "  postman.setNextRequest(pm.info.requestName);",
        "} else {",
        '  pm.collectionVariables.set("polls", 0);',
        f'  pm.test("{target} reaches {"/".join(statuses)}", () =>',
        f"    pm.expect({json.dumps(list(statuses))}).to.include(body.status));",
        "}",
    ]


PAUSE = [
    'if (Number(pm.collectionVariables.get("polls") || 0) > 0) {',
    "  setTimeout(() => {}, 250);",
    "}",
]
TERMINAL = ("succeeded", "failed", "cancelled", "upstream_failed", "skipped")
WORKFLOW_DONE = ("succeeded", "failed", "cancelled")


def sample(path: str, **replace: str) -> str:
    text = (SAMPLES / path).read_text()
    json.loads(text)  # a sample must be JSON
    for old, new in replace.items():
        text = text.replace(old, new)
    return text.strip()


def requests() -> list[tuple[str, list[Request]]]:
    """(folder, requests) in running order."""
    R = Request
    health = [
        R("liveness", "GET", "/healthz", "GET /healthz", status(200), auth=None),
        R("readiness", "GET", "/readyz", "GET /readyz", status(200), auth=None),
        R(
            "metrics",
            "GET",
            "/metrics",
            "GET /metrics",
            [
                *status(200),
                'pm.test("prometheus text", () => pm.expect(pm.response.text()).to.include("scheduler_"));',
            ],
            auth=None,
        ),
        R(
            "openapi document",
            "GET",
            "/api/openapi.json",
            "GET /api/openapi.json",
            [*status(200), *expect("OpenAPI 3", 'String(body.openapi).startsWith("3.")')],
            auth=None,
        ),
    ]
    token_body = sample(
        "auth/token.json", cli_REPLACE_ME="{{clientId}}", REPLACE_ME="{{clientSecret}}"
    )
    auth = [
        R(
            "token",
            "POST",
            "/api/v1/auth/token",
            "POST /api/v1/auth/token",
            [
                *status(200),
                *has("access_token", "refresh_token", "token_type", "expires_in"),
                *save("accessToken", "body.access_token"),
                *save("refreshToken", "body.refresh_token"),
            ],
            body=token_body,
            auth=None,
        ),
        R(
            "token: wrong secret",
            "POST",
            "/api/v1/auth/token",
            "POST /api/v1/auth/token",
            problem(401),
            body=json.dumps({"client_id": "{{clientId}}", "client_secret": "wrong"}),
            auth=None,
        ),
        R(
            "refresh",
            "POST",
            "/api/v1/auth/refresh",
            "POST /api/v1/auth/refresh",
            [
                *status(200),
                *has("access_token", "refresh_token"),
                *save("accessToken", "body.access_token"),
                *save("refreshToken", "body.refresh_token"),
            ],
            auth="{{refreshToken}}",
        ),
        R(
            "task types",
            "GET",
            "/api/v1/task-types",
            "GET /api/v1/task-types",
            [
                *status(200),
                *expect("demo.echo is registered", 'body.some(t => t.name === "demo.echo")'),
            ],
        ),
    ]
    clients = [
        R(
            "create client",
            "POST",
            "/api/v1/clients",
            "POST /api/v1/clients",
            [
                *status(201),
                *has("client_id", "client_secret", "role"),
                *save("otherClientId", "body.client_id"),
                *save("otherSecret", "body.client_secret"),
            ],
            body=sample("clients/create.json"),
        ),
        R(
            "list clients",
            "GET",
            "/api/v1/clients",
            "GET /api/v1/clients",
            [
                *status(200),
                *expect(
                    "the new client is listed",
                    'body.some(c => c.client_id === pm.collectionVariables.get("otherClientId"))',
                ),
            ],
        ),
        R(
            "get client",
            "GET",
            "/api/v1/clients/{{otherClientId}}",
            "GET /api/v1/clients/{client_id}",
            [*status(200), *has("client_id", "role", "disabled")],
        ),
        R(
            "update client",
            "PATCH",
            "/api/v1/clients/{{otherClientId}}",
            "PATCH /api/v1/clients/{client_id}",
            [*status(200), *expect("renamed", 'body.name === "billing-service-v2"')],
            body=sample("clients/update.json"),
        ),
        R(
            "rotate secret",
            "POST",
            "/api/v1/clients/{{otherClientId}}/rotate-secret",
            "POST /api/v1/clients/{client_id}/rotate-secret",
            [*status(200), *has("client_secret"), *save("otherSecret", "body.client_secret")],
        ),
        R(
            "token of the new client",
            "POST",
            "/api/v1/auth/token",
            "POST /api/v1/auth/token",
            [*status(200), *save("otherToken", "body.access_token")],
            body=json.dumps({"client_id": "{{otherClientId}}", "client_secret": "{{otherSecret}}"}),
            auth=None,
        ),
        R(
            "submitter may not list clients",
            "GET",
            "/api/v1/clients",
            "GET /api/v1/clients",
            problem(403),
            auth="{{otherToken}}",
        ),
        R(
            "revoke its token",
            "POST",
            "/api/v1/auth/revoke",
            "POST /api/v1/auth/revoke",
            status(204),
            auth="{{otherToken}}",
        ),
        R(
            "revoked token is refused",
            "GET",
            "/api/v1/tasks",
            "GET /api/v1/tasks",
            problem(401),
            auth="{{otherToken}}",
        ),
        R(
            "delete client",
            "DELETE",
            "/api/v1/clients/{{otherClientId}}",
            "DELETE /api/v1/clients/{client_id}",
            status(204),
        ),
    ]
    tasks = [
        R(
            "submit",
            "POST",
            "/api/v1/tasks",
            "POST /api/v1/tasks",
            [
                *status(202),
                *has("id", "status", "task", "queue", "priority"),
                'pm.test("Location", () => pm.expect(pm.response.headers.get("Location")).to.include(pm.response.json().id));',
                *save("taskId"),
            ],
            body=sample("tasks/echo.json"),
        ),
        R(
            "submit delayed (idempotency key)",
            "POST",
            "/api/v1/tasks",
            "POST /api/v1/tasks",
            [*status(202), *expect("scheduled", 'body.status === "scheduled"'), *save("delayedId")],
            body=sample("tasks/delayed.json"),
            headers={"Idempotency-Key": "{{idemKey}}"},
            prerequest=['pm.collectionVariables.set("idemKey", "postman-" + Date.now());'],
        ),
        R(
            "submit again: replayed",
            "POST",
            "/api/v1/tasks",
            "POST /api/v1/tasks",
            [
                *status(200),
                'pm.test("Idempotent-Replayed", () => pm.expect(pm.response.headers.get("Idempotent-Replayed")).to.eql("true"));',
                *expect("same task", 'body.id === pm.collectionVariables.get("delayedId")'),
            ],
            body=sample("tasks/delayed.json"),
            headers={"Idempotency-Key": "{{idemKey}}"},
        ),
        R(
            "submit a batch",
            "POST",
            "/api/v1/tasks/batch",
            "POST /api/v1/tasks/batch",
            [*status(202), *expect("two tasks", "body.items.length === 2")],
            body=sample("tasks/batch.json"),
        ),
        R(
            "submit http.request",
            "POST",
            "/api/v1/tasks",
            "POST /api/v1/tasks",
            [*status(202), *save("httpId")],
            body=sample("tasks/http.json"),
        ),
        R(
            "submit a failing task",
            "POST",
            "/api/v1/tasks",
            "POST /api/v1/tasks",
            [*status(202), *save("failedId")],
            body=sample("tasks/fail.json"),
        ),
        R(
            "submit: unknown type",
            "POST",
            "/api/v1/tasks",
            "POST /api/v1/tasks",
            [*problem(422), *has("errors")],
            body=json.dumps({"task": "no.such.type"}),
        ),
        R(
            "wait: echo succeeds",
            "GET",
            "/api/v1/tasks/{{taskId}}",
            "GET /api/v1/tasks/{task_id}",
            [
                *poll("the echo task", ("succeeded",), TERMINAL),
                *expect(
                    "result", "body.status !== 'succeeded' || body.result.kwargs.hello === 'world'"
                ),
            ],
            prerequest=PAUSE,
        ),
        R(
            "wait: fail fails",
            "GET",
            "/api/v1/tasks/{{failedId}}",
            "GET /api/v1/tasks/{task_id}",
            [
                *poll("the failing task", ("failed",), TERMINAL),
                *expect(
                    "error type", "body.status !== 'failed' || body.error.type === 'DemoFailure'"
                ),
            ],
            prerequest=PAUSE,
        ),
        R(
            "list",
            "GET",
            "/api/v1/tasks?tag=sample&limit=10",
            "GET /api/v1/tasks",
            [
                *status(200),
                *has("items", "next_cursor"),
                *expect("newest first", "body.items.length >= 4"),
            ],
        ),
        R(
            "events",
            "GET",
            "/api/v1/tasks/{{taskId}}/events",
            "GET /api/v1/tasks/{task_id}/events",
            [
                *status(200),
                *expect("ends succeeded", "body[body.length - 1].status === 'succeeded'"),
            ],
        ),
        R(
            "cancel",
            "POST",
            "/api/v1/tasks/{{delayedId}}/cancel",
            "POST /api/v1/tasks/{task_id}/cancel",
            [*status(200), *expect("cancelled", "body.status === 'cancelled'")],
        ),
        R(
            "cancel again: 409",
            "POST",
            "/api/v1/tasks/{{delayedId}}/cancel",
            "POST /api/v1/tasks/{task_id}/cancel",
            problem(409),
        ),
        R(
            "cancel http.request",
            "POST",
            "/api/v1/tasks/{{httpId}}/cancel",
            "POST /api/v1/tasks/{task_id}/cancel",
            [*status(200)],
        ),
        R(
            "unknown task: 404",
            "GET",
            f"/api/v1/tasks/{NIL}",
            "GET /api/v1/tasks/{task_id}",
            problem(404),
        ),
        R(
            "explain",
            "GET",
            "/api/v1/tasks/{{delayedId}}/explain",
            "GET /api/v1/tasks/{task_id}/explain",
            [*status(200), *has("status", "reasons")],
        ),
        R(
            "deliveries",
            "GET",
            "/api/v1/tasks/{{taskId}}/deliveries",
            "GET /api/v1/tasks/{task_id}/deliveries",
            [*status(200), *has("items")],
        ),
        R(
            "redeliver unknown delivery: 404",
            "POST",
            f"/api/v1/deliveries/{NIL}/redeliver",
            "POST /api/v1/deliveries/{delivery_id}/redeliver",
            problem(404),
        ),
    ]
    dlq = [
        R(
            "list dead letters",
            "GET",
            "/api/v1/dlq?task=demo.fail&limit=100",
            "GET /api/v1/dlq",
            [
                *status(200),
                *has("items", "next_cursor"),
                *expect(
                    "the failed task has one",
                    'body.items.some(d => d.task_id === pm.collectionVariables.get("failedId"))',
                ),
                *save(
                    "deadLetterId",
                    'body.items.find(d => d.task_id === pm.collectionVariables.get("failedId")).id',
                ),
            ],
        ),
        R(
            "get dead letter",
            "GET",
            "/api/v1/dlq/{{deadLetterId}}",
            "GET /api/v1/dlq/{dead_letter_id}",
            [
                *status(200),
                *has("traceback", "error_type", "attempts"),
                *expect("DemoFailure", "body.error_type === 'DemoFailure'"),
            ],
        ),
        R(
            "replay by filter (dry run)",
            "POST",
            "/api/v1/dlq/replay",
            "POST /api/v1/dlq/replay",
            [
                *status(200),
                *expect(
                    "counted, nothing replayed", "body.count >= 1 && body.task_ids.length === 0"
                ),
            ],
            body=sample("dlq/replay.json"),
        ),
        R(
            "replay one",
            "POST",
            "/api/v1/dlq/{{deadLetterId}}/replay",
            "POST /api/v1/dlq/{dead_letter_id}/replay",
            [
                *status(202),
                *expect("linked", 'body.replay_of === pm.collectionVariables.get("failedId")'),
            ],
        ),
        R(
            "replay again: 409",
            "POST",
            "/api/v1/dlq/{{deadLetterId}}/replay",
            "POST /api/v1/dlq/{dead_letter_id}/replay",
            problem(409),
        ),
        R(
            "delete dead letter",
            "DELETE",
            "/api/v1/dlq/{{deadLetterId}}",
            "DELETE /api/v1/dlq/{dead_letter_id}",
            status(204),
        ),
        R(
            "purge by filter",
            "POST",
            "/api/v1/dlq/purge",
            "POST /api/v1/dlq/purge",
            [*status(200), *expect("a count", "Number.isInteger(body.count)")],
            body=sample("dlq/purge.json"),
        ),
    ]
    workflows = [
        R(
            "submit workflow",
            "POST",
            "/api/v1/workflows",
            "POST /api/v1/workflows",
            [*status(202), *has("id", "nodes", "status"), *save("workflowId")],
            body=sample("workflows/diamond.json"),
        ),
        R(
            "submit: a cycle is 422",
            "POST",
            "/api/v1/workflows",
            "POST /api/v1/workflows",
            problem(422),
            body=json.dumps(
                {
                    "name": "cycle",
                    "nodes": [
                        {"id": "a", "task": "demo.echo", "depends_on": ["b"]},
                        {"id": "b", "task": "demo.echo", "depends_on": ["a"]},
                    ],
                }
            ),
        ),
        R(
            "wait: workflow succeeds",
            "GET",
            "/api/v1/workflows/{{workflowId}}",
            "GET /api/v1/workflows/{workflow_id}",
            poll("the diamond", ("succeeded",), WORKFLOW_DONE),
            prerequest=PAUSE,
        ),
        R(
            "list workflows",
            "GET",
            "/api/v1/workflows?limit=10",
            "GET /api/v1/workflows",
            [
                *status(200),
                *expect(
                    "listed",
                    'body.items.some(w => w.id === pm.collectionVariables.get("workflowId"))',
                ),
            ],
        ),
        R(
            "graph",
            "GET",
            "/api/v1/workflows/{{workflowId}}/graph",
            "GET /api/v1/workflows/{workflow_id}/graph",
            [
                *status(200),
                'pm.test("mermaid", () => pm.expect(pm.response.text()).to.match(/^(flowchart|graph) /));',
            ],
        ),
        R(
            "retry a succeeded workflow: 409",
            "POST",
            "/api/v1/workflows/{{workflowId}}/retry",
            "POST /api/v1/workflows/{workflow_id}/retry",
            problem(409),
        ),
        R(
            "submit a failing workflow",
            "POST",
            "/api/v1/workflows",
            "POST /api/v1/workflows",
            [*status(202), *save("failingWorkflowId")],
            body=sample("workflows/failing.json"),
        ),
        R(
            "wait: workflow fails",
            "GET",
            "/api/v1/workflows/{{failingWorkflowId}}",
            "GET /api/v1/workflows/{workflow_id}",
            poll("the failing workflow", ("failed",), WORKFLOW_DONE),
            prerequest=PAUSE,
        ),
        R(
            "retry the failed workflow",
            "POST",
            "/api/v1/workflows/{{failingWorkflowId}}/retry",
            "POST /api/v1/workflows/{workflow_id}/retry",
            [*status(200), *expect("running again", "body.status === 'running'")],
        ),
        R(
            "submit a slow workflow",
            "POST",
            "/api/v1/workflows",
            "POST /api/v1/workflows",
            [*status(202), *save("slowWorkflowId")],
            body=sample("workflows/slow.json"),
        ),
        R(
            "cancel the slow workflow",
            "POST",
            "/api/v1/workflows/{{slowWorkflowId}}/cancel",
            "POST /api/v1/workflows/{workflow_id}/cancel",
            [*status(200), *expect("cancelled", "body.status === 'cancelled'")],
        ),
        R(
            "workflow deliveries",
            "GET",
            "/api/v1/workflows/{{workflowId}}/deliveries",
            "GET /api/v1/workflows/{workflow_id}/deliveries",
            [*status(200), *has("items")],
        ),
    ]
    schedules = [
        R(
            "create cron schedule",
            "POST",
            "/api/v1/schedules",
            "POST /api/v1/schedules",
            [
                *status(201),
                *has("id", "next_run_at", "last_run_at", "last_task_id"),
                *save("scheduleId"),
            ],
            body=sample("schedules/cron.json"),
        ),
        R(
            "create interval schedule",
            "POST",
            "/api/v1/schedules",
            "POST /api/v1/schedules",
            [*status(201), *save("intervalScheduleId")],
            body=sample("schedules/interval.json"),
        ),
        R(
            "create: bad cron is 422",
            "POST",
            "/api/v1/schedules",
            "POST /api/v1/schedules",
            problem(422),
            body=json.dumps({"name": "bad", "task": "demo.echo", "cron": "61 * * * *"}),
        ),
        R(
            "list schedules",
            "GET",
            "/api/v1/schedules?limit=50",
            "GET /api/v1/schedules",
            [
                *status(200),
                *expect(
                    "listed",
                    'body.items.some(s => s.id === pm.collectionVariables.get("scheduleId"))',
                ),
            ],
        ),
        R(
            "get schedule",
            "GET",
            "/api/v1/schedules/{{scheduleId}}",
            "GET /api/v1/schedules/{schedule_id}",
            [*status(200), *expect("cron", "body.cron === '0 3 * * *'")],
        ),
        R(
            "update schedule",
            "PATCH",
            "/api/v1/schedules/{{scheduleId}}",
            "PATCH /api/v1/schedules/{schedule_id}",
            [*status(200), *expect("new cron", "body.cron === '30 4 * * *'")],
            body=sample("schedules/update.json"),
        ),
        R(
            "pause schedule",
            "POST",
            "/api/v1/schedules/{{scheduleId}}/pause",
            "POST /api/v1/schedules/{schedule_id}/pause",
            [*status(200), *expect("paused", "body.enabled === false")],
        ),
        R(
            "resume schedule",
            "POST",
            "/api/v1/schedules/{{scheduleId}}/resume",
            "POST /api/v1/schedules/{schedule_id}/resume",
            [*status(200), *expect("enabled", "body.enabled === true")],
        ),
        R(
            "trigger schedule",
            "POST",
            "/api/v1/schedules/{{scheduleId}}/trigger",
            "POST /api/v1/schedules/{schedule_id}/trigger",
            [*status(202), *has("task_id"), *save("firedTaskId", "body.task_id")],
        ),
        R(
            "schedule runs",
            "GET",
            "/api/v1/schedules/{{scheduleId}}/runs",
            "GET /api/v1/schedules/{schedule_id}/runs",
            [
                *status(200),
                *expect(
                    "the manual firing",
                    'body.items.some(r => r.task_id === pm.collectionVariables.get("firedTaskId"))',
                ),
            ],
        ),
        R(
            "fired task names its schedule",
            "GET",
            "/api/v1/tasks/{{firedTaskId}}",
            "GET /api/v1/tasks/{task_id}",
            [
                *status(200),
                *expect(
                    "schedule_id", 'body.schedule_id === pm.collectionVariables.get("scheduleId")'
                ),
            ],
        ),
        R(
            "delete schedule",
            "DELETE",
            "/api/v1/schedules/{{scheduleId}}",
            "DELETE /api/v1/schedules/{schedule_id}",
            status(204),
        ),
        R(
            "delete interval schedule",
            "DELETE",
            "/api/v1/schedules/{{intervalScheduleId}}",
            "DELETE /api/v1/schedules/{schedule_id}",
            status(204),
        ),
        R(
            "deleted schedule: 404",
            "GET",
            "/api/v1/schedules/{{scheduleId}}",
            "GET /api/v1/schedules/{schedule_id}",
            problem(404),
        ),
    ]
    # Operator endpoints of DESIGN.md §4 (workers, queues, webhooks): included once the API
    # lists them.
    operations = [
        R(
            "list workers",
            "GET",
            "/api/v1/workers",
            "GET /api/v1/workers",
            [
                *status(200),
                *has("items"),
                *save(
                    "workerName",
                    "(body.items.find(w => w.status === 'online') || body.items[0] || {}).name",
                ),
            ],
        ),
        R(
            "pause worker",
            "POST",
            "/api/v1/workers/{{workerName}}/pause",
            "POST /api/v1/workers/{name}/pause",
            [*status(200)],
        ),
        R(
            "resume worker",
            "POST",
            "/api/v1/workers/{{workerName}}/resume",
            "POST /api/v1/workers/{name}/resume",
            [*status(200)],
        ),
        R(
            "scale worker",
            "POST",
            "/api/v1/workers/{{workerName}}/scale",
            "POST /api/v1/workers/{name}/scale",
            [*status(200)],
            body=sample("workers/scale.json"),
        ),
        R(
            "list queues",
            "GET",
            "/api/v1/queues",
            "GET /api/v1/queues",
            [*status(200), *expect("default queue", "body.items.some(q => q.name === 'default')")],
        ),
        R(
            "pause queue",
            "POST",
            "/api/v1/queues/low/pause",
            "POST /api/v1/queues/{name}/pause",
            [*status(200)],
        ),
        R(
            "resume queue",
            "POST",
            "/api/v1/queues/low/resume",
            "POST /api/v1/queues/{name}/resume",
            [*status(200)],
        ),
        R(
            "create webhook",
            "POST",
            "/api/v1/webhooks",
            "POST /api/v1/webhooks",
            [*status(201), *has("id", "secret"), *save("webhookId")],
            body=sample("webhooks/create.json"),
        ),
        R("list webhooks", "GET", "/api/v1/webhooks", "GET /api/v1/webhooks", [*status(200)]),
        R(
            "get webhook",
            "GET",
            "/api/v1/webhooks/{{webhookId}}",
            "GET /api/v1/webhooks/{id}",
            [*status(200)],
        ),
        R(
            "update webhook",
            "PATCH",
            "/api/v1/webhooks/{{webhookId}}",
            "PATCH /api/v1/webhooks/{id}",
            [*status(200)],
            body=json.dumps({"description": "renamed"}),
        ),
        R(
            "delete webhook",
            "DELETE",
            "/api/v1/webhooks/{{webhookId}}",
            "DELETE /api/v1/webhooks/{id}",
            status(204),
        ),
        R(
            "default signing key",
            "GET",
            "/api/v1/webhooks/default/secret",
            "GET /api/v1/webhooks/default/secret",
            [*status(200), *has("key")],
        ),
        R(
            "rotate default signing key",
            "POST",
            "/api/v1/webhooks/default/secret/rotate",
            "POST /api/v1/webhooks/default/secret/rotate",
            [*status(200)],
        ),
    ]
    finish = [
        R(
            "revoke the admin token",
            "POST",
            "/api/v1/auth/revoke",
            "POST /api/v1/auth/revoke",
            status(204),
        ),
        R(
            "revoked admin token is refused",
            "GET",
            "/api/v1/tasks",
            "GET /api/v1/tasks",
            problem(401),
        ),
    ]
    return [
        ("health and discovery", health),
        ("auth", auth),
        ("clients (admin)", clients),
        ("tasks", tasks),
        ("dead letters (operator)", dlq),
        ("workflows", workflows),
        ("schedules", schedules),
        ("workers, queues, webhooks (operator)", operations),
        ("sign out", finish),
    ]


def normalise(operation: str) -> str:
    """'GET /api/v1/tasks/{task_id}' -> 'GET /api/v1/tasks/{}' (parameter names vary)."""
    method, path = operation.split(" ", 1)
    parts = ["{}" if part.startswith("{") else part for part in path.split("/")]
    return f"{method} {'/'.join(parts)}"


def api_operations() -> set[str]:
    """The operations of the API's OpenAPI document, built offline (no database is reached)."""
    sys.path.insert(0, str(ROOT))
    from scheduler_app.app import create_app
    from scheduler_app.config import load_settings

    settings = load_settings(
        {
            "profile": "test",
            "database_url": "postgresql+psycopg2://nobody@127.0.0.1:9/none",
            "broker_url": "redis://127.0.0.1:9/0",
        },
        environ={},
    )
    document = create_app(settings).test_client().get("/api/openapi.json").json
    methods = {"get", "post", "put", "patch", "delete"}
    found = {
        normalise(f"{method.upper()} {path}")
        for path, item in document["paths"].items()
        for method in item
        if method in methods
    }
    # Served beside the API's own document (not operations of it).
    return found | {"GET /metrics", "GET /api/openapi.json"}


def build(operations: set[str]) -> dict[str, Any]:
    folders = []
    for name, items in requests():
        kept = [item.item() for item in items if normalise(item.operation) in operations]
        if kept:
            folders.append({"name": name, "item": kept})
    return {
        "info": {
            "_postman_id": "6f1d7b8e-2c1a-4d8e-9b3f-0a5c1e2d3f40",
            "name": "Job Scheduler API v1",
            "description": (
                "Every operation of the job scheduler's API, in running order, with tests. "
                "Generated by docs/postman/build.py from samples/; run it with newman "
                "(tests/e2e/test_postman.py does, against a live standalone)."
            ),
            "schema": SCHEMA,
        },
        "item": folders,
        "auth": {
            "type": "bearer",
            "bearer": [{"key": "token", "value": "{{accessToken}}", "type": "string"}],
        },
        "variable": [{"key": "polls", "value": "0"}],
    }


def covered() -> set[str]:
    return {normalise(item.operation) for _, items in requests() for item in items}


def render(collection: dict[str, Any]) -> str:
    return json.dumps(collection, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render(build(api_operations()))
    if "--check" in argv:
        if not COLLECTION.exists() or COLLECTION.read_text() != text:
            print(f"{COLLECTION} is stale: run python docs/postman/build.py", file=sys.stderr)
            return 1
        return 0
    COLLECTION.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
