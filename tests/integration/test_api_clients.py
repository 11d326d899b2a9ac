"""Client management by admins: get, change, disable, delete, rotate; what it does to tokens."""

from __future__ import annotations

import os
import time
import uuid

import pytest
from sqlalchemy import select

from scheduler_app.models import Client
from scheduler_app.services.clients import service as client_service
from scheduler_app.services.clients.principal import Principal
from scheduler_app.services.clients.service import ClientService
from scheduler_app.services.clients.state import ClientState, ClientStates
from tests.integration.test_api_auth import app_with
from tests.support import wait_until

TOKEN = "/api/v1/auth/token"
CLIENTS = "/api/v1/clients"

# Negative controls: SCHEDULER_TEST_REMOVE=<name>[,<name>] runs these tests with that protection
# patched out; the tests naming it in their docstring must then fail.
REMOVALS = {
    # The token is believed: no look at its client (disabled, deleted, demoted, rotated).
    "client-check": lambda mp: mp.setattr(
        ClientService, "principal_for", lambda self, subject, role, gen: Principal(subject, role)
    ),
    # Lone surrogates go on to PostgreSQL.
    "surrogates": lambda mp: mp.setattr(client_service, "_encodable", lambda value: True),
}


@pytest.fixture(autouse=True)
def _negative_control(monkeypatch) -> None:
    for name in filter(None, os.environ.get("SCHEDULER_TEST_REMOVE", "").split(",")):
        if name in REMOVALS:
            REMOVALS[name](monkeypatch)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def created(api, admin):
    """Create a client through the API; return (its JSON with the secret, the client's API)."""

    def make(role: str = "submitter", name: str | None = None) -> dict:
        body = {"name": name or f"team-{uuid.uuid4().hex[:6]}", "role": role}
        response = api.post(CLIENTS, json=body, headers=admin)
        assert response.status_code == 201, response.json
        return response.json

    return make


def _tokens(api, client: dict) -> dict:
    response = api.post(
        TOKEN, json={"client_id": client["client_id"], "client_secret": client["client_secret"]}
    )
    assert response.status_code == 200, response.json
    return response.json


# --- the endpoints ----------------------------------------------------------------------------


def test_admin_gets_a_client_without_its_secret(api, admin, created):
    client = created("operator", "billing")
    response = api.get(f"{CLIENTS}/{client['client_id']}", headers=admin)
    assert response.status_code == 200
    got = response.json
    assert got == {k: v for k, v in client.items() if k != "client_secret"}


def test_admin_patches_name_role_and_disabled(api, admin, created):
    client = created("submitter", "before")
    path = f"{CLIENTS}/{client['client_id']}"
    response = api.patch(path, json={"name": "  after  ", "role": "operator"}, headers=admin)
    assert response.status_code == 200, response.json
    assert (response.json["name"], response.json["role"]) == ("after", "operator")
    assert response.json["disabled"] is False

    response = api.patch(path, json={"disabled": True}, headers=admin)
    assert response.status_code == 200 and response.json["disabled"] is True
    assert api.get(path, headers=admin).json["disabled"] is True
    assert api.patch(path, json={}, headers=admin).json == response.json  # nothing to change
    listed = {c["client_id"]: c for c in api.get(CLIENTS, headers=admin).json}
    assert listed[client["client_id"]] == response.json  # disabled ones are listed


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("get", ""), ("patch", ""), ("delete", ""), ("post", "/rotate-secret")],
)
@pytest.mark.parametrize("client_id", ["cl_0000000000000000nope", "x" * 64, "x" * 65, "%00", "é"])
def test_an_unknown_client_is_404(api, admin, assert_problem, method, suffix, client_id):
    kwargs = {"json": {"disabled": True}} if method == "patch" else {}
    response = getattr(api, method)(f"{CLIENTS}/{client_id}{suffix}", headers=admin, **kwargs)
    assert_problem(response, 404)


@pytest.mark.parametrize("role", ["submitter", "operator"])
@pytest.mark.parametrize(
    ("method", "suffix"),
    [("get", ""), ("patch", ""), ("delete", ""), ("post", "/rotate-secret")],
)
def test_managing_a_client_below_admin_is_403(
    api, make_client, created, assert_problem, role, method, suffix
):
    client = created()
    kwargs = {"json": {"disabled": True}} if method == "patch" else {}
    path = f"{CLIENTS}/{client['client_id']}{suffix}"
    assert_problem(getattr(api, method)(path, headers=make_client(role), **kwargs), 403)
    assert_problem(getattr(api, method)(path, **kwargs), 401)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "root"}, "role"),
        ({"role": None}, "role"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "a\nb"}, "name"),
        ({"name": None}, "name"),
        ({"disabled": "yes"}, "disabled"),
        ({"disabled": 1}, "disabled"),
        ({"owner": "me"}, "owner"),
    ],
)
def test_patching_an_invalid_field_is_422_naming_it(
    api, admin, created, assert_problem, body, field
):
    client = created()
    path = f"{CLIENTS}/{client['client_id']}"
    assert_problem(api.patch(path, json=body, headers=admin), 422, field)
    assert api.get(path, headers=admin).json == {
        k: v for k, v in client.items() if k != "client_secret"
    }


@pytest.mark.parametrize("name", ['"\\ud800"', '"team \\udfff"', '"\\ude00\\ud83d"'])
@pytest.mark.parametrize("operation", ["create", "patch"])
def test_a_name_with_a_lone_surrogate_is_422_naming_it(
    api, admin, created, assert_problem, name, operation
):
    """Negative control: SCHEDULER_TEST_REMOVE=surrogates (500 from PostgreSQL)."""
    if operation == "create":
        response = api.post(
            CLIENTS,
            data=f'{{"name": {name}, "role": "submitter"}}',
            content_type="application/json",
            headers=admin,
        )
    else:
        path = f"{CLIENTS}/{created()['client_id']}"
        response = api.patch(
            path, data=f'{{"name": {name}}}', content_type="application/json", headers=admin
        )
    assert_problem(response, 422, "name")


def test_a_name_with_a_surrogate_pair_is_fine(api, admin):
    response = api.post(
        CLIENTS,
        data='{"name": "team \\ud83d\\ude00", "role": "submitter"}',
        content_type="application/json",
        headers=admin,
    )
    assert response.status_code == 201 and response.json["name"] == "team \U0001f600"


# --- what a change does to the client's tokens ------------------------------------------------


def test_a_disabled_client_cannot_log_in_and_its_tokens_stop_at_once(
    api, admin, created, assert_problem
):
    """Negative control: SCHEDULER_TEST_REMOVE=client-check."""
    client = created()
    tokens = _tokens(api, client)
    access, refresh = bearer(tokens["access_token"]), bearer(tokens["refresh_token"])
    assert api.get("/api/v1/tasks", headers=access).status_code == 200
    path = f"{CLIENTS}/{client['client_id']}"
    assert api.patch(path, json={"disabled": True}, headers=admin).status_code == 200

    body = assert_problem(api.get("/api/v1/tasks", headers=access), 401)
    assert "disabled" in body["detail"]
    assert_problem(api.post("/api/v1/tasks", json={"task": "demo.echo"}, headers=access), 401)
    assert_problem(api.post("/api/v1/auth/refresh", headers=refresh), 401)
    login = {"client_id": client["client_id"], "client_secret": client["client_secret"]}
    assert_problem(api.post(TOKEN, json=login), 401)

    # Enabling it again lets the same tokens work (they were suspended, not revoked).
    assert api.patch(path, json={"disabled": False}, headers=admin).status_code == 200
    assert api.get("/api/v1/tasks", headers=access).status_code == 200


def test_a_deleted_client_keeps_its_tasks_and_loses_everything_else(
    api, app, admin, operator, created, assert_problem
):
    """Negative control: SCHEDULER_TEST_REMOVE=client-check."""
    client = created()
    tokens = _tokens(api, client)
    access = bearer(tokens["access_token"])
    task = api.post("/api/v1/tasks", json={"task": "demo.echo", "queue": "low"}, headers=access)
    assert task.status_code == 202
    path = f"{CLIENTS}/{client['client_id']}"

    assert api.delete(path, headers=admin).status_code == 204
    assert_problem(api.get("/api/v1/tasks", headers=access), 401)
    assert_problem(api.post("/api/v1/auth/refresh", headers=bearer(tokens["refresh_token"])), 401)
    login = {"client_id": client["client_id"], "client_secret": client["client_secret"]}
    assert_problem(api.post(TOKEN, json=login), 401)
    assert_problem(api.get(path, headers=admin), 404)
    assert_problem(api.delete(path, headers=admin), 404)
    assert_problem(api.patch(path, json={"disabled": False}, headers=admin), 404)
    assert client["client_id"] not in {c["client_id"] for c in api.get(CLIENTS, headers=admin).json}
    # Its task stays in the ledger, still naming its owner; the row is kept, marked deleted.
    kept = api.get(f"/api/v1/tasks/{task.json['id']}", headers=operator)
    assert kept.status_code == 200 and kept.json["owner"] == client["id"]
    with app.extensions["scheduler"].clients.sessions() as session:
        row = session.scalar(select(Client).where(Client.client_id == client["client_id"]))
    assert row is not None and row.deleted_at is not None


def test_a_role_change_applies_to_tokens_already_issued(api, admin, created, assert_problem):
    """A token's role counts only up to the stored role; a promotion needs a new token.
    Negative control: SCHEDULER_TEST_REMOVE=client-check."""
    client = created("admin")
    old = bearer(_tokens(api, client)["access_token"])
    assert api.get(CLIENTS, headers=old).status_code == 200
    path = f"{CLIENTS}/{client['client_id']}"

    assert api.patch(path, json={"role": "operator"}, headers=admin).status_code == 200
    assert_problem(api.get(CLIENTS, headers=old), 403)  # an admin token, acting as operator
    assert api.get("/api/v1/dlq", headers=old).status_code == 200
    assert api.patch(path, json={"role": "submitter"}, headers=admin).status_code == 200
    assert_problem(api.get("/api/v1/dlq", headers=old), 403)

    # Promoted again: the old admin token is an admin's again; a submitter's token is not.
    submitter_token = bearer(_tokens(api, client)["access_token"])
    assert api.patch(path, json={"role": "admin"}, headers=admin).status_code == 200
    assert api.get(CLIENTS, headers=old).status_code == 200
    assert_problem(api.get(CLIENTS, headers=submitter_token), 403)
    assert api.get(CLIENTS, headers=bearer(_tokens(api, client)["access_token"])).status_code == 200


def test_rotating_the_secret_returns_a_new_one_once_and_retires_the_old(
    api, admin, created, assert_problem
):
    """Negative control: SCHEDULER_TEST_REMOVE=client-check (old tokens keep working)."""
    client = created()
    tokens = _tokens(api, client)
    path = f"{CLIENTS}/{client['client_id']}"
    response = api.post(f"{path}/rotate-secret", headers=admin)
    assert response.status_code == 200
    rotated = response.json
    assert rotated["client_id"] == client["client_id"]
    assert rotated["client_secret"] and rotated["client_secret"] != client["client_secret"]
    assert "client_secret" not in api.get(path, headers=admin).json

    login = {"client_id": client["client_id"], "client_secret": client["client_secret"]}
    assert_problem(api.post(TOKEN, json=login), 401)
    body = assert_problem(api.get("/api/v1/tasks", headers=bearer(tokens["access_token"])), 401)
    assert "rotated" in body["detail"]
    refresh = bearer(tokens["refresh_token"])
    assert_problem(api.post("/api/v1/auth/refresh", headers=refresh), 401)

    fresh = _tokens(api, rotated)
    assert api.get("/api/v1/tasks", headers=bearer(fresh["access_token"])).status_code == 200
    renewed = api.post("/api/v1/auth/refresh", headers=bearer(fresh["refresh_token"]))
    assert renewed.status_code == 200
    assert api.get("/api/v1/tasks", headers=bearer(renewed.json["access_token"])).status_code == 200


@pytest.mark.parametrize(
    ("method", "body"),
    [("patch", {"disabled": True}), ("patch", {"role": "operator"}), ("delete", None)],
)
def test_an_admin_cannot_lock_itself_out(api, app, assert_problem, method, body):
    client, secret = app.extensions["scheduler"].clients.create("self", "admin")
    token = api.post(TOKEN, json={"client_id": client.client_id, "client_secret": secret}).json
    own = bearer(token["access_token"])
    path = f"{CLIENTS}/{client.client_id}"
    kwargs = {"json": body} if body is not None else {}
    assert_problem(getattr(api, method)(path, headers=own, **kwargs), 409)
    assert api.get(path, headers=own).json["role"] == "admin"
    assert api.patch(path, json={"name": "renamed"}, headers=own).status_code == 200


@pytest.mark.parametrize(
    ("change", "refused"),
    [({"disabled": True}, 401), ({"role": "submitter"}, 403), (None, 401)],
    ids=["disabled", "demoted", "deleted"],
)
def test_another_api_process_refuses_the_tokens_within_client_check_seconds(
    api, admin, settings, created, assert_problem, change, refused
):
    """Each API process remembers a client's state for client_check_seconds; a change made
    through another process reaches it within that time. Negative control:
    SCHEDULER_TEST_REMOVE=client-check (never refused)."""
    with app_with(settings, client_check_seconds=1.0) as other_process:
        other = other_process.test_client()
        client = created("admin")
        token = bearer(_tokens(other, client)["access_token"])
        assert other.get(CLIENTS, headers=token).status_code == 200  # remembered there now
        path = f"{CLIENTS}/{client['client_id']}"
        if change is None:
            assert api.delete(path, headers=admin).status_code == 204
        else:
            assert api.patch(path, json=change, headers=admin).status_code == 200
        started = time.monotonic()
        wait_until(
            lambda: other.get(CLIENTS, headers=token).status_code == refused,
            timeout=10,
            message=f"the other process to answer {refused}",
        )
        print(f"refused by the other process after {time.monotonic() - started:.2f} s")
        assert_problem(other.get(CLIENTS, headers=token), refused)


def test_client_states_are_remembered_for_their_ttl_and_bounded():
    loads: list[uuid.UUID] = []

    def load(client: uuid.UUID) -> ClientState:
        loads.append(client)
        return ClientState(role="admin", generation=0, active=True)

    states = ClientStates(load, ttl=0.2, size=3)
    first = uuid.uuid4()
    states.get(first)
    states.get(first)
    assert loads == [first]  # remembered
    time.sleep(0.25)
    states.get(first)
    assert loads == [first, first]  # looked up again after its ttl
    for _ in range(10):
        states.get(uuid.uuid4())
    assert len(states) <= 3  # bounded
    states.get(first)
    states.forget(first)
    states.get(first)
    assert loads[-2:] == [first, first]  # forgotten: looked up again at once
    uncached = ClientStates(load, ttl=0)
    uncached.get(first)
    uncached.get(first)
    assert loads[-2:] == [first, first] and len(uncached) == 0
