"""Webhook targets under the outbound URL policy: refused at submission (notify.webhook and
endpoints) in production, and again at delivery after DNS resolution (a name that resolves
to 127.0.0.1), without a byte reaching the receiver.

Negative control (tests/outbound_support.py): OUTBOUND_POLICY_NEGATIVE_CONTROL=1 turns the
policy off: the refusal tests must then fail.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from scheduler_app.db import make_engine, make_session_factory
from scheduler_app.models.base import utcnow
from scheduler_app.services.ledger.unit import unit_of_work
from scheduler_app.services.notifiers import announce
from scheduler_app.services.notifiers.dispatch import Dispatcher
from tests import outbound_support as support
from tests.outbound_support import production_settings
from tests.support import TestDatabase

outbound_controls = support.outbound_controls  # the negative controls' switch
recorder, resolver = support.recorder, support.resolver


@pytest.fixture(scope="module")
def production(redis_server):
    """A production-profile app on a database of its own (a scheduler on the session's would
    dispatch its deliveries first), and the headers of a submitter's token on it."""
    from scheduler_app.app import create_app

    database = TestDatabase()
    database.create()
    app = create_app(production_settings(database_url=database.url, broker_url=redis_server.url))
    client, secret = app.extensions["scheduler"].clients.create("notify-prod", "submitter")
    token = (
        app.test_client()
        .post("/api/v1/auth/token", json={"client_id": client.client_id, "client_secret": secret})
        .json["access_token"]
    )
    yield app, {"Authorization": f"Bearer {token}"}, client.id
    app.extensions["scheduler"].engine.dispose()
    database.drop()


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/hook", "http://localhost/hook", "http://10.0.0.5/", "http://[::1]/"],
)
def test_production_refuses_private_and_loopback_webhook_targets_at_submission(
    production, url, assert_problem
):
    app, headers, _ = production
    http = app.test_client()
    response = http.post("/api/v1/webhooks", json={"url": url}, headers=headers)
    body = assert_problem(response, 422, "url")
    assert body["errors"]["url"][0].startswith("refused by the outbound policy: ")
    response = http.post(
        "/api/v1/workflows",
        json={"name": "n", "nodes": [{"id": "a", "task": "demo.echo"}], "notify": {"webhook": url}},
        headers=headers,
    )
    assert_problem(response, 422, "notify.webhook")


def test_metadata_targets_are_refused_in_every_profile(api, submitter, assert_problem):
    response = api.post(
        "/api/v1/webhooks", json={"url": "http://169.254.169.254/latest"}, headers=submitter
    )
    assert_problem(response, 422, "url")


def test_a_name_resolving_to_loopback_is_refused_at_delivery_and_nothing_is_sent(
    production, recorder, resolver
):
    """The name passes the submission check (it is not an address); at delivery it resolves
    to 127.0.0.1, which production refuses: the delivery fails without a retry."""
    app, headers, owner = production
    resolver("hooks.partner.example", ["127.0.0.1"])
    url = recorder.url("/hook", host="hooks.partner.example")
    response = app.test_client().post("/api/v1/webhooks", json={"url": url}, headers=headers)
    assert response.status_code == 201, response.json
    sessions = app.extensions["scheduler"].tasks.sessions
    with unit_of_work(sessions) as session:
        endpoints = announce._endpoints(session, {owner})
        body = {"type": "task.succeeded", "timestamp": utcnow().isoformat(), "data": {}}
        event = announce._Event("task.succeeded", "succeeded", owner, None, body)
        assert announce.write(session, [event], endpoints) == 1
        delivery_id = session.scalar(
            text("SELECT id FROM deliveries WHERE endpoint_id = :e"), {"e": response.json["id"]}
        )
    settings = app.extensions["scheduler"].settings
    dispatcher = Dispatcher(
        make_session_factory(make_engine(settings)), settings, threading.Event()
    )
    assert dispatcher.drain() >= 1
    assert recorder.hit_count == 0
    with sessions() as session:
        row = session.execute(
            text("SELECT status, last_error FROM deliveries WHERE id = :id"), {"id": delivery_id}
        ).one()
    assert row.status == "failed" and "refused by the outbound policy" in row.last_error
