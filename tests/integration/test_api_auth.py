"""Authentication over HTTP: tokens, refresh, revoke, roles, and clients made by an admin."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt as pyjwt
import pytest
from flask_jwt_extended import create_access_token

TOKEN = "/api/v1/auth/token"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_token_for_valid_credentials_has_access_and_refresh_tokens(api, credentials, settings):
    client_id, secret = credentials("submitter")
    response = api.post(TOKEN, json={"client_id": client_id, "client_secret": secret})
    assert response.status_code == 200
    body = response.json
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.access_token_ttl
    assert body["access_token"] != body["refresh_token"]
    assert api.get("/api/v1/tasks", headers=bearer(body["access_token"])).status_code == 200


def test_token_with_wrong_secret_is_401(api, credentials, assert_problem):
    client_id, _ = credentials("submitter")
    response = api.post(TOKEN, json={"client_id": client_id, "client_secret": "wrong"})
    body = assert_problem(response, 401)
    assert "access_token" not in body


def test_token_for_unknown_client_is_401_like_a_wrong_secret(api, assert_problem):
    response = api.post(TOKEN, json={"client_id": "cl_nobody", "client_secret": "x"})
    body = assert_problem(response, 401)
    assert body["detail"] == "unknown client or wrong secret"


@pytest.mark.parametrize("missing", ["client_id", "client_secret"])
def test_token_without_a_field_is_422_naming_it(api, credentials, assert_problem, missing):
    client_id, secret = credentials("submitter")
    body = {"client_id": client_id, "client_secret": secret}
    del body[missing]
    assert_problem(api.post(TOKEN, json=body), 422, missing)


def test_token_with_malformed_json_is_400(api, assert_problem):
    response = api.post(TOKEN, data='{"client_id": ', content_type="application/json")
    body = assert_problem(response, 400)
    assert body["detail"] == "the request body is not valid JSON"


def test_refresh_gives_new_tokens_and_retires_the_old_refresh_token(
    api, credentials, assert_problem
):
    client_id, secret = credentials("submitter")
    tokens = api.post(TOKEN, json={"client_id": client_id, "client_secret": secret}).json
    response = api.post("/api/v1/auth/refresh", headers=bearer(tokens["refresh_token"]))
    assert response.status_code == 200
    fresh = response.json
    assert fresh["token_type"] == "Bearer"
    assert api.get("/api/v1/tasks", headers=bearer(fresh["access_token"])).status_code == 200
    # The refresh token that was exchanged cannot be exchanged again.
    again = api.post("/api/v1/auth/refresh", headers=bearer(tokens["refresh_token"]))
    assert_problem(again, 401)
    # The new one can.
    ok = api.post("/api/v1/auth/refresh", headers=bearer(fresh["refresh_token"]))
    assert ok.status_code == 200


def test_refresh_with_an_access_token_is_401(api, credentials, assert_problem):
    client_id, secret = credentials("submitter")
    tokens = api.post(TOKEN, json={"client_id": client_id, "client_secret": secret}).json
    response = api.post("/api/v1/auth/refresh", headers=bearer(tokens["access_token"]))
    assert_problem(response, 401)


def test_refresh_token_is_not_accepted_as_an_access_token(api, credentials, assert_problem):
    client_id, secret = credentials("submitter")
    tokens = api.post(TOKEN, json={"client_id": client_id, "client_secret": secret}).json
    assert_problem(api.get("/api/v1/tasks", headers=bearer(tokens["refresh_token"])), 401)


def test_revoked_token_is_refused_with_401(api, credentials, assert_problem):
    client_id, secret = credentials("submitter")
    tokens = api.post(TOKEN, json={"client_id": client_id, "client_secret": secret}).json
    headers = bearer(tokens["access_token"])
    assert api.get("/api/v1/tasks", headers=headers).status_code == 200

    response = api.post("/api/v1/auth/revoke", headers=headers)
    assert response.status_code == 204

    body = assert_problem(api.get("/api/v1/tasks", headers=headers), 401)
    assert "revoked" in body["detail"]
    # Another token of the same client is unaffected.
    other = api.post(TOKEN, json={"client_id": client_id, "client_secret": secret}).json
    assert api.get("/api/v1/tasks", headers=bearer(other["access_token"])).status_code == 200


def test_missing_token_is_401_problem_with_www_authenticate(api, assert_problem):
    response = api.get("/api/v1/tasks")
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "authorization",
    ["Bearer garbage", "Bearer a.b.c", "Basic dXNlcjpwYXNz", "Bearer", "bearer"],
)
def test_garbage_token_is_401_problem(api, assert_problem, authorization):
    response = api.get("/api/v1/tasks", headers={"Authorization": authorization})
    assert_problem(response, 401)


def test_expired_token_is_401_problem(api, app, assert_problem):
    with app.app_context():
        token = create_access_token(
            str(uuid.uuid4()),
            additional_claims={"role": "admin"},
            expires_delta=timedelta(seconds=-30),
        )
    body = assert_problem(api.get("/api/v1/tasks", headers=bearer(token)), 401)
    assert "expired" in body["detail"]


def test_a_token_accepted_before_is_refused_once_it_expires(api, app, assert_problem):
    """Verified tokens are remembered per process; their expiry still counts on every use."""
    with app.app_context():
        token = create_access_token(
            str(uuid.uuid4()),
            additional_claims={"role": "admin"},
            expires_delta=timedelta(seconds=2),
        )
    assert api.get("/api/v1/tasks", headers=bearer(token)).status_code == 200
    assert api.get("/api/v1/tasks", headers=bearer(token)).status_code == 200  # remembered
    time.sleep(2.1)
    body = assert_problem(api.get("/api/v1/tasks", headers=bearer(token)), 401)
    assert "expired" in body["detail"]


def test_token_signed_with_another_key_is_401(api, assert_problem):
    now = datetime.now(UTC)
    token = pyjwt.encode(
        {
            "sub": str(uuid.uuid4()),
            "role": "admin",
            "type": "access",
            "jti": uuid.uuid4().hex,
            "iat": now,
            "nbf": now,
            "exp": now + timedelta(minutes=5),
        },
        "not-the-server-secret-" + "x" * 32,
        algorithm="HS256",
    )
    assert_problem(api.get("/api/v1/tasks", headers=bearer(token)), 401)


def test_token_with_an_unknown_role_is_401(api, app, assert_problem):
    with app.app_context():
        token = create_access_token(str(uuid.uuid4()), additional_claims={"role": "root"})
    assert_problem(api.get("/api/v1/tasks", headers=bearer(token)), 401)


@pytest.mark.parametrize("role", ["submitter", "operator"])
def test_creating_a_client_below_admin_is_403(api, make_client, assert_problem, role):
    response = api.post(
        "/api/v1/clients", json={"name": "x", "role": "submitter"}, headers=make_client(role)
    )
    assert_problem(response, 403)


def test_creating_a_client_without_a_token_is_401(api, assert_problem):
    response = api.post("/api/v1/clients", json={"name": "x", "role": "submitter"})
    assert_problem(response, 401)


def test_admin_creates_a_client_whose_secret_works(api, admin):
    response = api.post(
        "/api/v1/clients", json={"name": "billing-team", "role": "operator"}, headers=admin
    )
    assert response.status_code == 201, response.json
    created = response.json
    assert created["name"] == "billing-team"
    assert created["role"] == "operator"
    assert created["disabled"] is False
    assert created["client_id"] and created["client_secret"]
    assert datetime.fromisoformat(created["created_at"]).tzinfo is not None

    tokens = api.post(
        TOKEN,
        json={"client_id": created["client_id"], "client_secret": created["client_secret"]},
    )
    assert tokens.status_code == 200
    # An operator token: it may read the task types but not create clients.
    headers = bearer(tokens.json["access_token"])
    assert api.get("/api/v1/task-types", headers=headers).status_code == 200
    assert (
        api.post("/api/v1/clients", json={"name": "y", "role": "admin"}, headers=headers)
    ).status_code == 403

    listed = api.get("/api/v1/clients", headers=admin).json
    mine = [c for c in listed if c["client_id"] == created["client_id"]]
    assert len(mine) == 1
    assert "client_secret" not in mine[0]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "role": "root"}, "role"),
        ({"name": "", "role": "submitter"}, "name"),
        ({"role": "submitter"}, "name"),
        ({"name": "x"}, "role"),
        ({"name": "x\u0000y", "role": "submitter"}, "name"),
    ],
)
def test_admin_creating_an_invalid_client_is_422_naming_the_field(
    api, admin, assert_problem, body, field
):
    assert_problem(api.post("/api/v1/clients", json=body, headers=admin), 422, field)


def test_revocation_survives_a_redis_flush(api, app, credentials, redis_server, assert_problem):
    """The Redis mirror of revoked tokens is only a cache: an emptied Redis reloads it."""
    client_id, secret = credentials("submitter")
    tokens = api.post(TOKEN, json={"client_id": client_id, "client_secret": secret}).json
    headers = bearer(tokens["access_token"])
    assert api.post("/api/v1/auth/revoke", headers=headers).status_code == 204

    redis_server.client().flushdb()  # a Redis restart without persistence looks like this
    assert_problem(api.get("/api/v1/tasks", headers=headers), 401)
    # ...and the reload brought the mirror back: a second check is answered by Redis again.
    assert redis_server.client().exists("scheduler:revoked:loaded")
    assert_problem(api.get("/api/v1/tasks", headers=headers), 401)


def test_revocation_is_checked_in_the_ledger_while_redis_is_down(app, credentials, settings):
    """With no Redis answering, a revoked token is still refused (and a valid one accepted)."""
    import redis as redis_lib

    from scheduler_app.services.clients.service import ClientService
    from tests.support import free_port

    ext = app.extensions["scheduler"]
    down = redis_lib.Redis(port=free_port(), socket_connect_timeout=0.2)
    clients = ClientService(ext.clients.sessions, down)
    jti = uuid.uuid4().hex
    clients.revoke(jti, datetime.now(UTC) + timedelta(minutes=5))  # ledger only; no raise
    assert clients.is_revoked(jti)
    assert not clients.is_revoked(uuid.uuid4().hex)


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/api/v1/tasks", {"task": "demo.echo", "args": ["x"]}, {}),
        ("/api/v1/tasks", {"task": "demo.echo", "args": ["x"]}, {"Idempotency-Key": "k-1"}),
        ("/api/v1/tasks/batch", {"tasks": [{"task": "demo.echo"}, {"task": "demo.echo"}]}, {}),
        ("/api/v1/tasks", {"task": "demo.echo", "priority": 99}, {}),  # invalid too: 401 first
    ],
)
def test_a_revoked_token_submits_nothing(api, credentials, assert_problem, path, body, headers):
    """A token used before (so remembered as verified by this process) and then revoked is
    refused with 401 on submits, and nothing of its request reaches the ledger."""
    client_id, secret = credentials("submitter")
    tokens = api.post(TOKEN, json={"client_id": client_id, "client_secret": secret}).json
    auth = bearer(tokens["access_token"])
    first = api.post("/api/v1/tasks", json={"task": "demo.echo"}, headers=auth)
    assert first.status_code == 202
    assert api.post("/api/v1/auth/revoke", headers=auth).status_code == 204

    refused = assert_problem(api.post(path, json=body, headers={**auth, **headers}), 401)
    assert "revoked" in refused["detail"]
    again = api.post(TOKEN, json={"client_id": client_id, "client_secret": secret}).json
    listed = api.get("/api/v1/tasks?limit=100", headers=bearer(again["access_token"])).json
    assert [t["id"] for t in listed["items"]] == [first.json["id"]]  # only the one before
