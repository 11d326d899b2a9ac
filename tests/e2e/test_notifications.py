"""Notifications through real processes: a worker runs the tasks, the scheduler's sweep
announces their ends and its dispatcher sends Standard Webhooks calls (verified here with the
``standardwebhooks`` library) and emails (to a real SMTP server in the test).

Negative controls, each of which must make its test fail:
- SCHEDULER_TEST_REMOVE=delivery_hold: a claim holds its delivery for ever, so a delivery
  whose dispatcher was killed mid-call is never sent (the SIGKILL test);
- SCHEDULER_TEST_REMOVE=delivery_lease: a claim takes no lease, so the delivery comes due again
  while its call is under way (the two-dispatchers test sees calls twice);
- NOTIFY_RECOVERY_NEGATIVE_CONTROL=1: no scheduler is started after the Redis FLUSHALL (what
  the FLUSHALL test relies on is the ledger alone: nothing of a notification is in Redis).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from standardwebhooks.webhooks import Webhook

from scheduler_app.services.notifiers.dispatch import Dispatcher
from tests.notify_support import Receiver, SmtpSink
from tests.support import Stack, metric_series, wait_until

pytestmark = pytest.mark.e2e

NO_RESTART = bool(os.environ.get("NOTIFY_RECOVERY_NEGATIVE_CONTROL"))
# The schedulers of this module run with the protection the caller removed (if any).
CONTROL = {
    k: v
    for k, v in os.environ.items()
    if k == "SCHEDULER_TEST_REMOVE" and v.startswith("delivery_")
}
BACKOFF = 0.3


class Platform:
    """The module's stack, its receiver and SMTP server, and two clients."""

    def __init__(self, stack: Stack, receiver: Receiver, smtp: SmtpSink) -> None:
        self.stack, self.receiver, self.smtp = stack, receiver, smtp
        self.http = stack.app.test_client()
        self.alice = self.token("alice")
        self.bob = self.token("bob")

    def token(self, name: str, role: str = "submitter") -> dict[str, str]:
        client, secret = self.stack.ext.clients.create(name, role)
        response = self.http.post(
            "/api/v1/auth/token", json={"client_id": client.client_id, "client_secret": secret}
        )
        return {"Authorization": f"Bearer {response.json['access_token']}"}

    def submit(self, headers: dict, **body) -> dict:
        response = self.http.post("/api/v1/tasks", json=body, headers=headers)
        assert response.status_code == 202, response.json
        return response.json

    def get(self, path: str, headers: dict) -> dict:
        response = self.http.get(path, headers=headers)
        assert response.status_code == 200, response.json
        return response.json

    def deliveries(self, task_id: str, headers: dict) -> list[dict]:
        return self.get(f"/api/v1/tasks/{task_id}/deliveries", headers)["items"]

    def wait_deliveries(
        self, task_id: str, headers: dict, count: int = 1, timeout: float = 30
    ) -> list[dict]:
        """Wait until ``count`` deliveries of the task are no longer pending."""

        def settled():
            items = self.deliveries(task_id, headers)
            done = [d for d in items if d["status"] != "pending"]
            return len(done) >= count and items

        return wait_until(settled, timeout, 0.1, message=f"deliveries of {task_id}")

    def wait_task(self, task_id: str, headers: dict, timeout: float = 30) -> dict:
        return wait_until(
            lambda: (
                (t := self.get(f"/api/v1/tasks/{task_id}", headers))["status"]
                in ("succeeded", "failed", "cancelled")
                and t
            ),
            timeout,
            0.05,
            message=f"task {task_id} to end",
        )


@pytest.fixture(scope="module")
def platform(tmp_path_factory, logdir) -> Iterator[Platform]:
    receiver, smtp = Receiver(), SmtpSink()
    stack = Stack(
        tmp_path_factory.mktemp("notify"),
        logdir,
        webhook_backoff=BACKOFF,
        webhook_backoff_max=3.0,
        webhook_max_attempts=3,
        webhook_disable_after=2,
        webhook_timeout=2.0,  # a claim holds a delivery 2 x 2 s + 10 s (dispatch.hold)
        smtp_timeout=2.0,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        public_url="http://scheduler.example",
    )
    try:
        stack.scheduler(**CONTROL)  # its sweep announces, its dispatcher sends
        stack.worker("default", 2)
        yield Platform(stack, receiver, smtp)
    finally:
        stack.close()
        receiver.close()
        smtp.close()


def test_a_webhook_is_signed_with_the_owner_key_and_carries_the_task_as_get_returns_it(platform):
    p, path = platform, platform.receiver.path()
    key = p.get("/api/v1/webhooks/default/secret", p.alice)["key"]
    assert key.startswith("whsec_")
    task = p.submit(p.alice, task="demo.echo", args=[1], notify={"webhook": p.receiver.url(path)})
    [call] = p.receiver.wait_calls(path, 1)
    assert call.verified_with(key)
    assert not call.verified_with(p.get("/api/v1/webhooks/default/secret", p.bob)["key"])
    body = Webhook(key).verify(call.body, call.headers)
    assert body["type"] == "task.succeeded"
    assert body["data"] == p.get(f"/api/v1/tasks/{task['id']}", p.alice)
    assert call.headers["webhook-id"].startswith("msg_")
    [delivery] = p.wait_deliveries(task["id"], p.alice)
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 1 and delivery["last_status_code"] == 200
    assert delivery["webhook_id"] == call.headers["webhook-id"]
    assert delivery["type"] == "task.succeeded" and delivery["delivered_at"]
    # Someone else's task has no delivery log for them.
    assert p.http.get(f"/api/v1/tasks/{task['id']}/deliveries", headers=p.bob).status_code == 404


def test_retries_keep_one_webhook_id_back_off_and_honour_retry_after(platform):
    p, r = platform, platform.receiver
    path = r.script(r.path(), 503, (429, {"Retry-After": "2"}), 200)
    task = p.submit(p.alice, task="demo.echo", notify={"webhook": r.url(path)})
    calls = r.wait_calls(path, 3)
    assert len({c.headers["webhook-id"] for c in calls}) == 1
    first_gap, second_gap = calls[1].at - calls[0].at, calls[2].at - calls[1].at
    assert first_gap >= BACKOFF / 2 * 0.9  # at least half the first backoff (jitter)
    assert second_gap >= 1.9  # what Retry-After asked, above the backoff of 0.3-0.6 s
    [delivery] = p.wait_deliveries(task["id"], p.alice)
    assert delivery["status"] == "delivered" and delivery["attempts"] == 3


def test_other_4xx_and_redirects_fail_at_once_without_retry(platform):
    p, r = platform, platform.receiver
    gone = r.script(r.path(), 404)
    moved = r.script(r.path(), (302, {"Location": r.url("/elsewhere")}))
    tasks = [
        p.submit(p.alice, task="demo.echo", notify={"webhook": r.url(x)}) for x in (gone, moved)
    ]
    for task, code in zip(tasks, (404, 302), strict=True):
        [delivery] = p.wait_deliveries(task["id"], p.alice)
        assert delivery["status"] == "failed"
        assert delivery["attempts"] == 1 and delivery["last_status_code"] == code
    assert "redirects are not followed" in delivery["last_error"]
    time.sleep(BACKOFF * 3)
    assert len(r.calls_to(gone)) == 1 and len(r.calls_to(moved)) == 1
    assert r.calls_to("/elsewhere") == []


def test_the_delivery_metrics_count_what_the_log_holds(platform):
    """scheduler_webhook_deliveries_total{result} is read from the delivery log."""
    p, r = platform, platform.receiver
    ok, gone = r.script(r.path(), 200), r.script(r.path(), 404)
    for path in (ok, gone):
        task = p.submit(p.alice, task="demo.echo", notify={"webhook": r.url(path)})
        p.wait_deliveries(task["id"], p.alice)
    with p.stack.ext.tasks.sessions() as session:
        logged = dict(
            session.execute(
                text(
                    "SELECT status, count(*) FROM deliveries WHERE channel = 'webhook'"
                    " AND status <> 'pending' GROUP BY 1"
                )
            ).all()
        )
    series = metric_series(p.http)
    assert logged["delivered"] >= 1 and logged["failed"] >= 1
    for result in ("delivered", "failed"):
        assert series[f'scheduler_webhook_deliveries_total{{result="{result}"}}'] == logged[result]


def test_the_on_filter_chooses_which_outcomes_notify(platform):
    p, r = platform, platform.receiver
    path = r.path()
    ok = p.submit(p.alice, task="demo.echo", notify={"webhook": r.url(path), "on": ["failed"]})
    bad = p.submit(
        p.alice,
        task="demo.fail",
        retry={"max_retries": 0},
        notify={"webhook": r.url(path), "on": ["failed"]},
    )
    [call] = r.wait_calls(path, 1)
    assert call.json["type"] == "task.failed" and call.json["data"]["id"] == bad["id"]
    p.wait_task(ok["id"], p.alice)
    assert p.deliveries(ok["id"], p.alice) == []


def test_endpoints_receive_their_owners_events_only_and_filter_them(platform):
    p, r = platform, platform.receiver
    a_path, b_path = r.path(), r.path()
    made = p.http.post(
        "/api/v1/webhooks",
        json={"url": r.url(a_path), "events": ["task.failed"], "description": "alerts"},
        headers=p.alice,
    )
    assert made.status_code == 201, made.json
    endpoint = made.json
    assert endpoint["secret"].startswith("whsec_") and endpoint["enabled"] is True
    b = p.http.post("/api/v1/webhooks", json={"url": r.url(b_path)}, headers=p.bob).json
    assert p.http.get(f"/api/v1/webhooks/{endpoint['id']}", headers=p.bob).status_code == 404
    assert [e["id"] for e in p.get("/api/v1/webhooks", p.bob)["items"]] == [b["id"]]
    ok = p.submit(p.alice, task="demo.echo")
    bad = p.submit(p.alice, task="demo.fail", retry={"max_retries": 0})
    [call] = r.wait_calls(a_path, 1)
    assert call.verified_with(endpoint["secret"])
    assert call.json["type"] == "task.failed" and call.json["data"]["id"] == bad["id"]
    p.wait_task(ok["id"], p.alice)
    [delivery] = p.wait_deliveries(bad["id"], p.alice)
    assert delivery["endpoint_id"] == endpoint["id"]
    bobs = p.submit(p.bob, task="demo.echo")
    [bob_call] = r.wait_calls(b_path, 1)
    assert bob_call.json["data"]["id"] == bobs["id"] and bob_call.verified_with(b["secret"])
    assert len(r.calls_to(a_path)) == 1
    for owner, endpoint_id in ((p.alice, endpoint["id"]), (p.bob, b["id"])):
        assert p.http.delete(f"/api/v1/webhooks/{endpoint_id}", headers=owner).status_code == 204


def test_an_endpoint_failing_every_event_is_disabled_and_says_so(platform):
    p, r = platform, platform.receiver
    path = r.script(r.path(), 410)
    endpoint = p.http.post("/api/v1/webhooks", json={"url": r.url(path)}, headers=p.alice).json
    for _ in range(2):  # webhook_disable_after
        task = p.submit(p.alice, task="demo.echo")
        [delivery] = p.wait_deliveries(task["id"], p.alice)
        assert delivery["status"] == "failed"
    shown = p.get(f"/api/v1/webhooks/{endpoint['id']}", p.alice)
    assert shown["enabled"] is False and shown["consecutive_failures"] == 2
    assert "disabled after 2 consecutive failed events" in shown["disabled_reason"]
    after = p.submit(p.alice, task="demo.echo")
    p.wait_task(after["id"], p.alice)
    time.sleep(1)
    assert p.deliveries(after["id"], p.alice) == []
    assert len(r.calls_to(path)) == 2
    enabled = p.http.patch(
        f"/api/v1/webhooks/{endpoint['id']}", json={"enabled": True}, headers=p.alice
    ).json
    assert enabled["enabled"] is True and enabled["consecutive_failures"] == 0
    p.http.delete(f"/api/v1/webhooks/{endpoint['id']}", headers=p.alice)


def test_after_a_rotation_both_keys_sign_and_redelivery_keeps_the_webhook_id(platform):
    p, r = platform, platform.receiver
    carol = p.token("carol")
    old = p.get("/api/v1/webhooks/default/secret", carol)["key"]
    rotated = p.http.post("/api/v1/webhooks/default/secret/rotate", headers=carol)
    assert rotated.status_code == 200
    new = rotated.json["key"]
    assert new != old and p.get("/api/v1/webhooks/default/secret", carol)["key"] == new
    path = r.path()
    task = p.submit(carol, task="demo.echo", notify={"webhook": r.url(path)})
    [call] = r.wait_calls(path, 1)
    assert len(call.headers["webhook-signature"].split(" ")) == 2
    assert call.verified_with(old) and call.verified_with(new)
    [delivery] = p.wait_deliveries(task["id"], carol)
    again = p.http.post(f"/api/v1/deliveries/{delivery['id']}/redeliver", headers=carol)
    assert again.status_code == 202, again.json
    assert (
        p.http.post(f"/api/v1/deliveries/{delivery['id']}/redeliver", headers=p.bob).status_code
        == 404
    )
    calls = r.wait_calls(path, 2)
    assert calls[1].headers["webhook-id"] == calls[0].headers["webhook-id"]
    assert calls[1].body == calls[0].body


def test_notify_email_and_email_send_reach_a_real_smtp_server(platform):
    p = platform
    task = p.submit(p.alice, task="demo.echo", notify={"email": "ops@example.com"})
    mail = p.smtp.wait_for("ops@example.com")
    assert mail["Subject"] == f"[scheduler] demo.echo {task['id']} succeeded"
    text = mail.get_payload()
    assert f"http://scheduler.example/api/v1/tasks/{task['id']}" in text
    [delivery] = p.wait_deliveries(task["id"], p.alice)
    assert delivery["status"] == "delivered" and delivery["channel"] == "email"
    sent = p.submit(
        p.alice,
        task="email.send",
        kwargs={"to": "dev@example.com", "subject": "hello", "body": "plain text"},
    )
    mail = p.smtp.wait_for("dev@example.com")
    assert mail["Subject"] == "hello" and "plain text" in mail.get_payload()
    assert p.wait_task(sent["id"], p.alice)["status"] == "succeeded"


def test_a_workflow_announces_its_end_with_the_workflow_as_get_returns_it(platform):
    p, r = platform, platform.receiver
    path = r.path()
    key = p.get("/api/v1/webhooks/default/secret", p.alice)["key"]
    response = p.http.post(
        "/api/v1/workflows",
        json={
            "name": "announced",
            "nodes": [
                {"id": "a", "task": "demo.echo"},
                {"id": "b", "task": "demo.sum", "depends_on": ["a"]},
            ],
            "notify": {"webhook": r.url(path)},
        },
        headers=p.alice,
    )
    assert response.status_code == 202, response.json
    wf = response.json
    [call] = r.wait_calls(path, 1)
    body = Webhook(key).verify(call.body, call.headers)
    assert body["type"] == "workflow.succeeded"
    assert body["data"] == p.get(f"/api/v1/workflows/{wf['id']}", p.alice)
    items = wait_until(
        lambda: [
            d
            for d in p.get(f"/api/v1/workflows/{wf['id']}/deliveries", p.alice)["items"]
            if d["status"] == "delivered"
        ],
        20,
        message="the workflow's delivery",
    )
    assert items[0]["type"] == "workflow.succeeded" and items[0]["workflow_id"] == wf["id"]


def test_two_dispatchers_never_send_one_delivery_twice(platform):
    """A second dispatcher (in this process) works the table beside the scheduler's: each of
    a batch's deliveries is claimed by one of them, and sent once."""
    p, r = platform, platform.receiver
    path, count = r.path(), 60
    stop = threading.Event()
    second = Dispatcher(p.stack.ext.tasks.sessions, p.stack.settings, stop)
    thread = threading.Thread(target=second.run, daemon=True)
    thread.start()
    try:
        response = p.http.post(
            "/api/v1/tasks/batch",
            json={
                "tasks": [
                    {"task": "demo.echo", "args": [i], "notify": {"webhook": r.url(path)}}
                    for i in range(count)
                ]
            },
            headers=p.alice,
        )
        assert response.status_code == 202, response.json
        ids = [t["id"] for t in response.json["items"]]
        for task_id in ids:
            p.wait_deliveries(task_id, p.alice)
        time.sleep(1.0)  # a duplicate call would arrive within a dispatcher's pass or two
    finally:
        stop.set()
        thread.join(10)
    calls = r.calls_to(path)
    assert len({c.headers["webhook-id"] for c in calls}) == count
    assert len(calls) == count, "a delivery was sent more than once"


def _scheduler(p: Platform):
    [current] = [
        proc
        for proc in p.stack.processes
        if proc.name == "scheduler" and proc.process.poll() is None
    ]
    return current


def test_a_delivery_survives_its_dispatcher_killed_mid_call(platform):
    """The only scheduler is SIGKILLed while the receiver holds its call: the delivery stays
    claimed in the ledger until the claim's hold ends, then the next scheduler sends it, with
    the same webhook-id."""
    p, r = platform, platform.receiver
    victim = _scheduler(p)
    r.held.clear()
    path = "/hold" + r.path()
    task = p.submit(p.alice, task="demo.echo", notify={"webhook": r.url(path)})
    r.wait_calls(path, 1)
    # The receiver holds the call: the task itself has ended already (delivery is off its path).
    assert p.get(f"/api/v1/tasks/{task['id']}", p.alice)["status"] == "succeeded"
    victim.signal(signal.SIGKILL)
    victim.process.wait(10)
    r.held.set()
    [pending] = p.deliveries(task["id"], p.alice)
    assert pending["status"] == "pending"
    p.stack.scheduler(**CONTROL)
    [delivery] = p.wait_deliveries(task["id"], p.alice, timeout=40)
    assert delivery["status"] == "delivered"
    calls = r.calls_to(path)
    assert len(calls) == 2 and len({c.headers["webhook-id"] for c in calls}) == 1


def test_a_notification_survives_a_redis_flushall(platform):
    """Nothing of a notification is in Redis: with no scheduler running a task ends (its
    outcome waits in the ledger), Redis loses everything, and the next scheduler announces and
    delivers it."""
    p, r = platform, platform.receiver
    _scheduler(p).stop()
    path = r.path()
    task = p.submit(p.alice, task="demo.echo", notify={"webhook": r.url(path)})
    p.wait_task(task["id"], p.alice)
    assert p.deliveries(task["id"], p.alice) == []  # not announced yet: the sweep does that
    p.stack.redis.client().flushall()
    if not NO_RESTART:
        p.stack.scheduler(**CONTROL)
    [delivery] = p.wait_deliveries(task["id"], p.alice, timeout=30)
    assert delivery["status"] == "delivered"
    assert len(r.calls_to(path)) == 1
