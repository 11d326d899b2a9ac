"""Authentication over HTTP: tokens, refresh, revoke, roles, and clients made by an admin."""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import jwt as pyjwt
import pytest
from flask_jwt_extended import create_access_token
from sqlalchemy import func, select, text

from scheduler_app.api import security
from scheduler_app.app import create_app
from scheduler_app.models import Task
from scheduler_app.services.clients import service as client_service
from scheduler_app.services.clients.principal import Principal
from scheduler_app.services.clients.service import ClientService
from scheduler_app.services.clients.throttle import LoginThrottle
from tests.support import free_port

TOKEN = "/api/v1/auth/token"

# Negative controls: SCHEDULER_TEST_REMOVE=<name>[,<name>] runs these tests with that protection
# patched out; the tests naming it in their docstring must then fail.
REMOVALS = {
    # Claims taken as they come (what the code did before): a missing jti reaches the
    # revocation check, a missing exp the revoke view.
    "claims-check": lambda mp: mp.setattr(
        security,
        "parse_claims",
        lambda claims: security.VerifiedToken(
            claims, uuid.UUID(claims["sub"]), security.Role(claims["role"]), 0
        ),
    ),
    # The token is believed: no look at its client (disabled, deleted, demoted, rotated).
    "client-check": lambda mp: mp.setattr(
        ClientService, "principal_for", lambda self, subject, role, gen: Principal(subject, role)
    ),
    # A statement failing on the foreign key to clients is not taken as "client gone".
    "fk-guard": lambda mp: mp.setattr(security, "_client_row_missing", lambda exc: False),
    # /auth/revoke takes access tokens only, as it did.
    "revoke-any": lambda mp: mp.setattr(
        security,
        "_authenticate",
        (lambda original: lambda kind: original("access" if kind == "any" else kind))(
            security._authenticate
        ),
    ),
    # No login limiter.
    "login-limit": lambda mp: mp.setattr(LoginThrottle, "check", lambda self, *args: None),
    # Lone surrogates go on to Redis, PostgreSQL and the hash.
    "surrogates": lambda mp: mp.setattr(client_service, "_encodable", lambda value: True),
}


@pytest.fixture(autouse=True)
def _negative_control(monkeypatch) -> None:
    for name in filter(None, os.environ.get("SCHEDULER_TEST_REMOVE", "").split(",")):
        if name in REMOVALS:
            REMOVALS[name](monkeypatch)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def app_with(settings, **changes) -> Iterator:
    """Another API process on the same database and Redis, with some settings changed."""
    application = create_app(dataclasses.replace(settings, **changes))
    application.config["TESTING"] = True
    try:
        yield application
    finally:
        application.extensions["scheduler"].engine.dispose()


@pytest.fixture(scope="module")
def limited_app(settings):
    """An API process with the login limiter on (the test profile turns it off)."""
    with app_with(settings, login_max_failures=10, login_failure_window=60.0) as application:
        yield application


@pytest.fixture(scope="module")
def remembering_app(settings):
    """An API process that remembers client states for an hour."""
    with app_with(settings, client_check_seconds=3600.0) as application:
        yield application


def _address() -> str:
    """A remote address of the test's own, so its failure counts are its own."""
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"


def _from(application, address: str):
    client = application.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def _login(client, client_id: str, secret: str):
    return client.post(TOKEN, json={"client_id": client_id, "client_secret": secret})


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
    client, _ = app.extensions["scheduler"].clients.create("expiring", "admin")
    with app.app_context():
        token = create_access_token(
            str(client.id),
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


# --- tokens that are signed correctly but are not ours to trust ------------------------------


def _signed(settings, **claims) -> str:
    """A token signed with the server's own key, with exactly these claims (None drops one)."""
    now = int(time.time())
    body = {
        "sub": str(uuid.uuid4()),
        "role": "submitter",
        "type": "access",
        "jti": uuid.uuid4().hex,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        **claims,
    }
    return pyjwt.encode(
        {k: v for k, v in body.items() if v is not None}, settings.jwt_secret, algorithm="HS256"
    )


MALFORMED_CLAIMS = [
    pytest.param({"jti": None}, id="no-jti"),
    pytest.param({"jti": 12345}, id="jti-number"),
    pytest.param({"jti": ""}, id="jti-empty"),
    pytest.param({"jti": "j" * 65}, id="jti-too-long"),
    pytest.param({"exp": None}, id="no-exp"),
    pytest.param({"exp": 10**15}, id="exp-beyond-year-9999"),
    pytest.param({"sub": "not-a-uuid"}, id="sub-not-a-uuid"),
    pytest.param({"role": None}, id="no-role"),
    pytest.param({"type": "id_token"}, id="unknown-type"),
    pytest.param({"gen": "1"}, id="gen-string"),
    pytest.param({"gen": True}, id="gen-boolean"),
]


def test_a_correctly_signed_well_formed_token_is_accepted(api, app, settings):
    """The positive control of the malformed-claims tests: only the named claim is wrong."""
    client, _ = app.extensions["scheduler"].clients.create("claims", "submitter")
    token = _signed(settings, sub=str(client.id))
    assert api.get("/api/v1/tasks", headers=bearer(token)).status_code == 200


@pytest.mark.parametrize("claims", MALFORMED_CLAIMS)
@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/api/v1/tasks"), ("post", "/api/v1/auth/revoke"), ("post", "/api/v1/tasks")],
)
def test_a_correctly_signed_token_with_malformed_claims_is_401(
    api, app, settings, assert_problem, claims, method, path
):
    """Negative control: SCHEDULER_TEST_REMOVE=claims-check (no-jti, no-exp: 500)."""
    client, _ = app.extensions["scheduler"].clients.create("claims", "submitter")
    token = _signed(settings, **{"sub": str(client.id), **claims})
    kwargs = {"json": {"task": "demo.echo"}} if path == "/api/v1/tasks" and method == "post" else {}
    response = getattr(api, method)(path, headers=bearer(token), **kwargs)
    body = assert_problem(response, 401)
    assert body["detail"].startswith("invalid token"), body


def test_a_refresh_token_without_jti_is_401_on_refresh(api, app, settings, assert_problem):
    """Negative control: SCHEDULER_TEST_REMOVE=claims-check."""
    client, _ = app.extensions["scheduler"].clients.create("claims", "submitter")
    token = _signed(settings, sub=str(client.id), type="refresh", jti=None)
    assert_problem(api.post("/api/v1/auth/refresh", headers=bearer(token)), 401)


def _delete_row(app, client_id: uuid.UUID) -> None:
    """Delete a client's row with SQL, as an operator might (the API keeps the row)."""
    with app.extensions["scheduler"].engine.begin() as conn:
        conn.execute(text("DELETE FROM clients WHERE id = :id"), {"id": client_id})


def _owned(app, client_id: uuid.UUID) -> int:
    with app.extensions["scheduler"].engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(Task).where(Task.owner_id == client_id))


SUBMITS = [
    pytest.param("/api/v1/tasks", {"task": "demo.echo"}, {}, id="single"),
    pytest.param("/api/v1/tasks", {"task": "demo.echo"}, {"Idempotency-Key": "k"}, id="keyed"),
    pytest.param("/api/v1/tasks/batch", {"tasks": [{"task": "demo.echo"}]}, {}, id="batch"),
]


@pytest.mark.parametrize(("path", "body", "headers"), SUBMITS)
def test_a_token_of_a_client_deleted_from_the_database_is_401(
    api, app, assert_problem, path, body, headers
):
    """A token whose client row is gone is refused before anything is written (it was a 500:
    the foreign key of tasks.owner_id). Negative control: SCHEDULER_TEST_REMOVE=client-check."""
    client, secret = app.extensions["scheduler"].clients.create("gone", "submitter")
    auth = bearer(_login(api, client.client_id, secret).json["access_token"])
    _delete_row(app, client.id)

    refused = assert_problem(api.post(path, json=body, headers={**auth, **headers}), 401)
    assert "no longer exists" in refused["detail"]
    assert_problem(api.get("/api/v1/tasks", headers=auth), 401)
    assert_problem(_login(api, client.client_id, secret), 401)
    assert _owned(app, client.id) == 0


@pytest.mark.parametrize(("path", "body", "headers"), SUBMITS)
def test_a_client_deleted_from_the_database_while_remembered_submits_nothing(
    remembering_app, assert_problem, path, body, headers
):
    """A process that still remembers the client as active (here for an hour) learns it is gone
    from the foreign key, answers 401 and forgets it. Negative control:
    SCHEDULER_TEST_REMOVE=fk-guard (500)."""
    api = remembering_app.test_client()
    client, secret = remembering_app.extensions["scheduler"].clients.create("gone", "submitter")
    auth = bearer(_login(api, client.client_id, secret).json["access_token"])
    assert api.get("/api/v1/tasks", headers=auth).status_code == 200  # remembered as active
    _delete_row(remembering_app, client.id)

    refused = assert_problem(api.post(path, json=body, headers={**auth, **headers}), 401)
    assert "no longer exists" in refused["detail"]
    assert_problem(api.get("/api/v1/tasks", headers=auth), 401)  # forgotten, then looked up
    assert _owned(remembering_app, client.id) == 0


# --- revoke: the bearer token, access or refresh --------------------------------------------


def test_revoke_with_a_refresh_token_revokes_that_refresh_token(api, credentials, assert_problem):
    """Negative control: SCHEDULER_TEST_REMOVE=revoke-any (401 on the revoke)."""
    client_id, secret = credentials("submitter")
    tokens = _login(api, client_id, secret).json
    refresh = bearer(tokens["refresh_token"])
    assert api.post("/api/v1/auth/revoke", headers=refresh).status_code == 204

    body = assert_problem(api.post("/api/v1/auth/refresh", headers=refresh), 401)
    assert "revoked" in body["detail"]
    assert_problem(api.post("/api/v1/auth/revoke", headers=refresh), 401)  # already revoked
    # The access token issued with it is a token of its own and still works.
    assert api.get("/api/v1/tasks", headers=bearer(tokens["access_token"])).status_code == 200


def test_a_refresh_token_is_honoured_once_even_when_revoked_twice(app):
    """The exchange revokes the old refresh token; of two racing exchanges one gets False."""
    clients = app.extensions["scheduler"].clients
    jti, expires = uuid.uuid4().hex, datetime.now(UTC) + timedelta(minutes=5)
    assert clients.revoke(jti, expires) is True
    assert clients.revoke(jti, expires) is False


# --- failed logins are limited per client id and per address --------------------------------


def _wrong(client, client_id: str, times: int) -> list[int]:
    return [_login(client, client_id, "wrong-secret").status_code for _ in range(times)]


def test_failed_logins_of_one_client_id_are_limited_with_429_and_retry_after(
    limited_app, assert_problem
):
    """Negative control: SCHEDULER_TEST_REMOVE=login-limit."""
    client, secret = limited_app.extensions["scheduler"].clients.create("target", "submitter")
    api = _from(limited_app, _address())
    assert _wrong(api, client.client_id, 10) == [401] * 10

    response = _login(api, client.client_id, "wrong-secret")
    body = assert_problem(response, 429)
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert "client id" in body["detail"]
    # Limited is limited: the right secret too, and from any address (the count is per id).
    assert_problem(_login(_from(limited_app, _address()), client.client_id, secret), 429)
    # Another client id from another address is not affected.
    other, other_secret = limited_app.extensions["scheduler"].clients.create("o", "submitter")
    assert _login(_from(limited_app, _address()), other.client_id, other_secret).status_code == 200


def test_failed_logins_from_one_address_are_limited_across_client_ids(limited_app, assert_problem):
    """Negative control: SCHEDULER_TEST_REMOVE=login-limit."""
    address = _address()
    api = _from(limited_app, address)
    statuses = [_login(api, f"cl_guess{i}", "x").status_code for i in range(10)]
    assert statuses == [401] * 10
    client, secret = limited_app.extensions["scheduler"].clients.create("bystander", "operator")
    response = _login(api, client.client_id, secret)
    body = assert_problem(response, 429)
    assert "address" in body["detail"] and int(response.headers["Retry-After"]) >= 1
    assert _login(_from(limited_app, _address()), client.client_id, secret).status_code == 200


def test_limited_logins_are_refused_before_the_password_hash(limited_app, monkeypatch):
    """30 wrong secrets in a row cost 10 hash checks, not 30 (~70 ms of CPU each).
    Negative control: SCHEDULER_TEST_REMOVE=login-limit (30 checks)."""
    hashed: list[str] = []
    original = client_service.check_password_hash

    def counting(stored: str, secret: str) -> bool:
        hashed.append(secret)
        return original(stored, secret)

    monkeypatch.setattr(client_service, "check_password_hash", counting)
    client, _ = limited_app.extensions["scheduler"].clients.create("hammered", "submitter")
    api = _from(limited_app, _address())
    started = time.process_time()
    statuses = _wrong(api, client.client_id, 30)
    cpu = time.process_time() - started
    print(f"30 wrong secrets: {len(hashed)} hash checks, {cpu * 1000:.0f} ms of CPU")
    assert statuses == [401] * 10 + [429] * 20
    assert len(hashed) == 10


def test_failed_logins_are_counted_across_api_processes(limited_app, settings, assert_problem):
    """Two API processes share the counts (they live in Redis)."""
    client, _ = limited_app.extensions["scheduler"].clients.create("shared", "submitter")
    with app_with(settings, login_max_failures=10) as other_process:
        address = _address()
        assert _wrong(_from(limited_app, address), client.client_id, 5) == [401] * 5
        assert _wrong(_from(other_process, address), client.client_id, 5) == [401] * 5
        assert_problem(_login(_from(other_process, _address()), client.client_id, "x"), 429)
        assert_problem(_login(_from(limited_app, _address()), client.client_id, "x"), 429)


def test_the_limit_ends_with_its_window(settings, assert_problem):
    with app_with(settings, login_max_failures=3, login_failure_window=1.0) as short:
        client, secret = short.extensions["scheduler"].clients.create("patient", "submitter")
        api = _from(short, _address())
        assert _wrong(api, client.client_id, 3) == [401] * 3
        assert_problem(_login(api, client.client_id, secret), 429)
        time.sleep(1.1)
        assert _login(api, client.client_id, secret).status_code == 200


def test_with_redis_down_logins_are_not_limited_but_still_checked(settings):
    """The limiter fails open; wrong secrets still get 401, the right one a token."""
    down = f"redis://127.0.0.1:{free_port()}/0"
    with app_with(settings, broker_url=down, login_max_failures=3) as no_redis:
        client, secret = no_redis.extensions["scheduler"].clients.create("no-redis", "admin")
        api = _from(no_redis, _address())
        assert _wrong(api, client.client_id, 6) == [401] * 6
        assert _login(api, client.client_id, secret).status_code == 200


# --- lone surrogates in the credentials -----------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        '{"client_id": "\\ud800", "client_secret": "x"}',
        '{"client_id": "cl_x", "client_secret": "\\udfff"}',
        '{"client_id": "a\\ud83d", "client_secret": "b\\ude00c\\ud800"}',
    ],
)
@pytest.mark.parametrize("limiter", ["off", "on"])
def test_credentials_with_lone_surrogates_are_400(api, limited_app, assert_problem, raw, limiter):
    """Negative control: SCHEDULER_TEST_REMOVE=surrogates (500)."""
    client = api if limiter == "off" else _from(limited_app, _address())
    response = client.post(TOKEN, data=raw, content_type="application/json")
    body = assert_problem(response, 400)
    assert "Unicode" in body["detail"]


def test_credentials_with_a_surrogate_pair_are_an_ordinary_401(api, assert_problem):
    raw = '{"client_id": "cl_\\ud83d\\ude00", "client_secret": "x"}'  # a valid emoji
    assert_problem(api.post(TOKEN, data=raw, content_type="application/json"), 401)
