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


def test_a_delivery_task_row_has_every_column_a_submission_inserts():
    """The delivery's task goes through the submission's INSERT: a column added to tasks must
    be given here too (a missing one failed every announcement after a merge)."""
    import datetime
    import uuid

    from scheduler_app.services.notifiers.announce import delivery_task_row
    from scheduler_app.services.tasks.submission import TASK_COLUMNS

    row = delivery_task_row(uuid.uuid4(), uuid.uuid4(), datetime.datetime.now(datetime.UTC))
    assert set(row) == set(TASK_COLUMNS)
