"""Schemathesis against a live server, in shards of the OpenAPI document.

The CLI runs every phase (examples, coverage, fuzzing, stateful) against the app served over real
HTTP. (Its pytest plugin, ``schemathesis.pytest.from_fixture``, fails on pytest 9 with "'Function'
object has no attribute '_nodeid'".) Tokens come from /api/v1/auth/token and are fetched again on a
401, because the fuzzer also calls /api/v1/auth/revoke. The document is fuzzed in shards, one test
file each, so that the suite's parallel runners share the work; together they select every
operation but the three fuzzed with tokens of their own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

MAX_EXAMPLES = 15
SCHEMATHESIS = [sys.executable, "-m", "schemathesis.cli", "--no-color"]
ROTATE = "/api/v1/clients/{client_id}/rotate-secret"

# Revoking or rotating its own credentials would end a run's logins, and refresh wants a refresh
# token: those three are fuzzed by test_api_openapi.py with tokens of their own.
OWN_TOKEN = r"^/api/v1/auth/(revoke|refresh)$|^/api/v1/clients/\{client_id\}/rotate-secret$"
SHARDS = {
    "tasks": r"^/api/v1/(tasks|dlq|deliveries)(/|$)",
    "workflows": r"^/api/v1/workflows(/|$)",
    "schedules": r"^/api/v1/schedules(/|$)",
}
# Every other operation: health, auth, clients, task types, and whatever a later domain adds.
REST = "|".join([OWN_TOKEN, *SHARDS.values()])

# Rules a JSON Schema cannot state are the one refusal of a document-valid request (a 422 naming
# the fields): the graph rules of a workflow (no cycle, parents that exist, unique node ids), and
# a schedule's end_at before its start_at (given, or stored when a change gives one of them).
TOLERATED_422 = [
    ("/api/v1/workflows", "POST"),
    ("/api/v1/schedules", "POST"),
    ("/api/v1/schedules/{schedule_id}", "PATCH"),
    # The stateful phase fills the list's uuid filter from a response field that is null (a
    # task outside a workflow) and sends the string "None", then reports the 422 as a
    # schema-valid request refused (seen once in 2026-12-02's CI run, test case 7RAQE1).
    ("/api/v1/tasks", "GET"),
]
# A document-invalid body may also be refused for its size: up to 10,000 nodes (or 1,000 batch
# tasks) with every option can pass max_body_bytes, which is a 413.
TOLERATED_413 = [("/api/v1/workflows", "POST"), ("/api/v1/tasks/batch", "POST")]
ACCEPTED = '"2xx", "401", "403", "404", "409", "422", "429"'
REJECTED = '"400", "401", "403", "404", "406", "413", "422", "428"'

COMMON = [
    # Every check: no 5xx, and no contradiction of the document either way (a request valid per
    # the document is accepted, an invalid one refused; responses match their schemas).
    "--checks",
    "all",
    "--max-examples",
    str(MAX_EXAMPLES),
    "--generation-database",
    "none",
    # One worker: hypothesis parses lambda sources with ast, which on Python 3.11 can fail in
    # threads ("AST constructor recursion depth mismatch") and abort the coverage phase.
    "--workers",
    "1",
]


def schemathesis(config: Path | None, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``schemathesis run``; SCHEMATHESIS_SEED replays the seed a failed run printed."""
    seed = os.environ.get("SCHEMATHESIS_SEED")
    argv = [
        *SCHEMATHESIS,
        *(["--config-file", str(config)] if config else []),
        "run",
        *args,
        *(["--seed", seed] if seed else []),
    ]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)


def summary(run: subprocess.CompletedProcess) -> str:
    return (run.stdout + run.stderr)[-12000:]


def _config(path: Path, client_id: str, secret: str) -> Path:
    checks: dict[tuple[str, str], list[str]] = {}
    for key in TOLERATED_422:
        checks.setdefault(key, []).append(
            f"checks.positive_data_acceptance.expected-statuses = [{ACCEPTED}]"
        )
    for key in TOLERATED_413:
        checks.setdefault(key, []).append(
            f"checks.negative_data_rejection.expected-statuses = [{REJECTED}]"
        )
    operations = "".join(
        f'\n[[operations]]\ninclude-path = "{route}"\ninclude-method = "{method}"\n'
        + "\n".join(lines)
        + "\n"
        for (route, method), lines in checks.items()
    )
    path.write_text(
        textwrap.dedent(
            f"""
            [auth.dynamic.openapi.bearerAuth]
            path = "/api/v1/auth/token"
            payload = {{ client_id = "{client_id}", client_secret = "{secret}" }}
            extract_selector = "/access_token"
            """
        )
        + operations
    )
    return path


def fuzz_shard(shard: str, live_server, credentials, tmp_path: Path) -> int:
    """Fuzz one shard with every check and phase; assert it is clean; return operations tested."""
    client_id, secret = credentials("admin")
    config = _config(tmp_path / "schemathesis.toml", client_id, secret)
    selection = (
        ["--exclude-path-regex", REST]
        if shard == "rest"
        else ["--include-path-regex", SHARDS[shard]]
    )
    # SCHEMATHESIS_PATHS (a regular expression of paths) narrows a shard while working on some
    # operations, e.g. SCHEMATHESIS_PATHS='^/api/v1/schedules/{schedule_id}$' with the schedules
    # shard.
    only = os.environ.get("SCHEMATHESIS_PATHS")
    if only:
        selection += ["--include-path-regex", only]
    run = schemathesis(
        config, f"{live_server.url}/api/openapi.json", *COMMON, *selection, cwd=tmp_path
    )
    assert run.returncode == 0, summary(run)
    # Every selected operation was exercised, and no phase was skipped for an error.
    selected = re.search(r"Selected: (\d+)/(\d+)", run.stdout)
    tested = re.search(r"Tested: (\d+)", run.stdout)
    assert selected and tested, summary(run)
    assert int(tested.group(1)) == int(selected.group(1)) > 0, summary(run)
    assert "Coverage" in run.stdout and "Runtime Error" not in run.stdout, summary(run)
    return int(tested.group(1))
