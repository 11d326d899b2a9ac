"""The OpenAPI document is valid, and fuzzing every operation of it never gets a 5xx."""

from __future__ import annotations

import re

import pytest
import requests
from openapi_spec_validator import validate

from tests.integration.fuzzing import (
    COMMON,
    OWN_TOKEN,
    REST,
    ROTATE,
    SHARDS,
    fuzz_shard,
    schemathesis,
    summary,
)

EXPECTED_PATHS = {
    "/healthz",
    "/readyz",
    "/api/v1/auth/token",
    "/api/v1/auth/refresh",
    "/api/v1/auth/revoke",
    "/api/v1/clients",
    "/api/v1/clients/{client_id}",
    ROTATE,
    "/api/v1/task-types",
    "/api/v1/tasks",
    "/api/v1/tasks/batch",
    "/api/v1/tasks/{task_id}",
    "/api/v1/tasks/{task_id}/events",
    "/api/v1/tasks/{task_id}/cancel",
    "/api/v1/workflows",
    "/api/v1/workflows/{workflow_id}",
    "/api/v1/workflows/{workflow_id}/cancel",
    "/api/v1/workflows/{workflow_id}/retry",
    "/api/v1/workflows/{workflow_id}/graph",
    "/api/v1/tasks/{task_id}/explain",
    "/api/v1/workers",
    "/api/v1/workers/{name}/pause",
    "/api/v1/workers/{name}/resume",
    "/api/v1/workers/{name}/scale",
    "/api/v1/queues",
    "/api/v1/queues/{name}/pause",
    "/api/v1/queues/{name}/resume",
    "/api/v1/workflows/{workflow_id}/deliveries",
    "/api/v1/tasks/{task_id}/deliveries",
    "/api/v1/deliveries/{delivery_id}/redeliver",
    "/api/v1/webhooks",
    "/api/v1/webhooks/{endpoint_id}",
    "/api/v1/webhooks/default/secret",
    "/api/v1/webhooks/default/secret/rotate",
}
PUBLIC = {"/healthz", "/readyz", "/api/v1/auth/token"}


@pytest.fixture(scope="module")
def spec(app) -> dict:
    response = app.test_client().get("/api/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.json


def test_openapi_document_is_valid_openapi_3(spec):
    validate(spec)
    assert spec["openapi"].startswith("3.")


def test_openapi_document_describes_the_v1_api_and_its_bearer_auth(spec):
    assert set(spec["paths"]) >= EXPECTED_PATHS
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for path in EXPECTED_PATHS:
        for method, operation in spec["paths"][path].items():
            if method == "parameters":
                continue
            secured = bool(operation.get("security"))
            assert secured == (path not in PUBLIC), (method, path)


def test_openapi_document_is_served_without_a_token(api):
    assert api.get("/api/openapi.json").status_code == 200


# --- schemathesis against a live server (tests/integration/fuzzing.py) ---------------------


def test_fuzz_shards_select_every_operation_once(spec):
    """Each path is fuzzed by exactly one shard, or by a test with a token of its own."""
    for path in spec["paths"]:
        chosen = [name for name, pattern in SHARDS.items() if re.search(pattern, path)]
        if not re.search(REST, path):
            chosen.append("rest")
        if re.search(OWN_TOKEN, path):
            chosen.append("own-token")
        assert len(chosen) == 1, (path, chosen)


def test_fuzzing_the_remaining_operations_finds_no_server_error(
    fuzz_server, fuzz_credentials, tmp_path
):
    assert fuzz_shard("rest", fuzz_server, fuzz_credentials, tmp_path) >= 8


@pytest.mark.parametrize(
    ("path", "token"),
    [("/api/v1/auth/refresh", "refresh_token"), (ROTATE, "access_token")],
    ids=["refresh", "rotate-secret"],
)
def test_fuzzing_an_operation_that_needs_its_own_token_finds_nothing(
    live_server, credentials, tmp_path, path, token
):
    """Refresh wants a refresh token; rotation ends the token's logins: each gets its own."""
    client_id, secret = credentials("admin")
    tokens = requests.post(
        f"{live_server.url}/api/v1/auth/token",
        json={"client_id": client_id, "client_secret": secret},
        timeout=10,
    ).json()
    run = schemathesis(
        None,
        f"{live_server.url}/api/openapi.json",
        "--include-path",
        path,
        "--header",
        f"Authorization: Bearer {tokens[token]}",
        *COMMON,
        cwd=tmp_path,
    )
    assert run.returncode == 0, summary(run)
