"""``manage.py webhook-receiver`` as a real process: it verifies Standard Webhooks signatures
(401 to a bad one) and shows what it received, newest first, as JSON and HTML."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from scheduler_app.services.notifiers.signing import new_secret
from tests.support import Process, free_port


def _post(url: str, body: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _signed(key: str, msg_id: str, body: str) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(key).sign(msg_id, now, body),
    }


@pytest.fixture
def receiver(tmp_path):
    key, port = new_secret(), free_port()
    argv = [sys.executable, "manage.py", "webhook-receiver", "--port", str(port), "--secret", key]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = Process("receiver", argv, env, tmp_path).start()
    proc.wait_for_log("webhook receiver on", 20)
    yield f"http://127.0.0.1:{port}", key
    proc.stop()


def test_the_receiver_verifies_signatures_and_lists_calls_newest_first(receiver):
    base, key = receiver
    good = json.dumps({"type": "task.succeeded", "timestamp": "t", "data": {"id": "1"}})
    assert _post(f"{base}/hook", good, _signed(key, "msg_good", good)) == 200
    bad = json.dumps({"type": "task.failed", "timestamp": "t", "data": {"id": "2"}})
    assert _post(f"{base}/hook", bad, _signed(new_secret(), "msg_bad", bad)) == 401
    assert _post(f"{base}/hook", bad, {}) == 401
    with urllib.request.urlopen(f"{base}/api/received", timeout=5) as response:
        received = json.load(response)
    assert [(c["id"], c["type"], c["verified"]) for c in received] == [
        (None, "task.failed", False),
        ("msg_bad", "task.failed", False),
        ("msg_good", "task.succeeded", True),
    ]
    assert set(received[0]) >= {"id", "type", "verified", "headers", "body", "received_at"}
    assert received[2]["body"] == json.loads(good)
    with urllib.request.urlopen(f"{base}/", timeout=5) as response:
        page = response.read().decode()
    assert page.index("msg_bad") < page.index("msg_good")
