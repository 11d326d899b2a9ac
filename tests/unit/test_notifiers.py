"""Pieces of the notifiers without a network: signatures, backoff, Retry-After, email text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from standardwebhooks.webhooks import Webhook

from scheduler_app.config import load_settings
from scheduler_app.services.notifiers import email, signing
from scheduler_app.services.notifiers.deliveries import backoff
from scheduler_app.services.notifiers.webhook import excerpt, retry_after


def test_headers_carry_one_signature_per_key_each_verifiable_with_the_library():
    old, new = signing.new_secret(), signing.new_secret()
    assert old.startswith("whsec_") and old != new
    now = datetime.now(UTC)
    body = '{"type":"task.succeeded"}'
    headers = signing.headers([new, old], "msg_1", now, body)
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert len(headers["webhook-signature"].split(" ")) == 2
    for key in (old, new):
        Webhook(key).verify(body, headers)


def test_backoff_grows_with_jitter_within_the_cap_and_retry_after_wins_inside_it():
    settings = load_settings({"webhook_backoff": 1, "webhook_backoff_max": 10}, environ={})
    for attempt, (low, high) in {1: (0.5, 1), 2: (1, 2), 3: (2, 4), 9: (5, 10)}.items():
        delays = [backoff(attempt, settings) for _ in range(50)]
        assert all(low <= d <= high for d in delays), (attempt, delays)
    assert backoff(1, settings, asked=7) == 7
    assert backoff(1, settings, asked=3600) == 10


def test_retry_after_reads_seconds_and_http_dates():
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert retry_after("120") == 120
    later = (now + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert retry_after(later, now) == 30
    assert retry_after("soon") is None and retry_after(None) is None


def test_an_excerpt_is_one_short_line():
    text = excerpt("line one\nline two " + "x" * 500)
    assert "\n" not in text and len(text) <= 200 and text.startswith("line one line two")


def test_the_email_names_type_id_and_status_and_links_the_task():
    event = {
        "type": "task.failed",
        "data": {
            "id": "t1",
            "task": "demo.fail",
            "status": "failed",
            "error": {"type": "DemoFailure", "message": "boom"},
        },
    }
    subject, body = email.render(event, "https://jobs.example/")
    assert subject == "[scheduler] demo.fail t1 failed"
    assert "https://jobs.example/api/v1/tasks/t1" in body and "DemoFailure: boom" in body


def _claimed(**overrides):
    import uuid

    from scheduler_app.services.notifiers.dispatch import Claimed

    fields = {
        "id": uuid.uuid4(),
        "lease": uuid.uuid4(),
        "owner_id": uuid.uuid4(),
        "channel": "webhook",
        "target": "http://127.0.0.1:9/hook",
        "webhook_id": "msg_1",
        "payload": "{}",
        "endpoint_id": None,
        "endpoint_enabled": True,
        "keys": ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",),
        "round_attempts": 1,
        "age": 0.0,
    }
    return Claimed(**{**fields, **overrides})


def test_a_disabled_endpoint_or_a_spent_window_fails_the_delivery_without_a_call():
    """No call is made (the target is a closed port: a call would be a retry, not these)."""
    import uuid

    from scheduler_app.config import Settings
    from scheduler_app.services.notifiers.dispatch import attempt

    settings = Settings(webhook_retry_window=60.0)
    disabled = attempt(settings, _claimed(endpoint_id=uuid.uuid4(), endpoint_enabled=False))
    assert (disabled.result, disabled.tried, disabled.error) == (
        "failed",
        0,
        "the endpoint is disabled",
    )
    late = attempt(settings, _claimed(round_attempts=2, age=61.0))
    assert (late.result, late.tried) == ("failed", 0)
    assert "webhook_retry_window" in late.error


def test_an_endpoints_run_of_failures_restarts_at_each_delivered_event():
    """In the order the attempts ended: a delivered event resets the run, a retry is not an
    event's end, and a failure without a call does not count."""
    import uuid

    from scheduler_app.services.notifiers.dispatch import Result, _streaks

    a, b, lease = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    def r(result, endpoint, tried=1):
        return Result(uuid.uuid4(), lease, result, tried=tried, endpoint_id=endpoint)

    counts = {
        c["id"]: (c["reset"], c["failed"])
        for c in _streaks(
            [
                r("failed", a),
                r("delivered", a),
                r("failed", a),
                r("retry", a),
                r("failed", a, tried=0),
                r("failed", b),
                r("failed", b),
                r("delivered", None),
            ]
        )
    }
    assert counts == {str(a): (True, 1), str(b): (False, 2)}
