import textwrap
from tests.integration.test_api_openapi import _schemathesis, _summary, MAX_EXAMPLES


def test_fuzz_retention_endpoints(live_server, credentials, tmp_path):
    client_id, secret = credentials("admin")
    config = tmp_path / "schemathesis.toml"
    config.write_text(textwrap.dedent(f"""
        [auth.dynamic.openapi.bearerAuth]
        path = "/api/v1/auth/token"
        payload = {{ client_id = "{client_id}", client_secret = "{secret}" }}
        extract_selector = "/access_token"

        [[operations]]
        include-path = "/api/v1/workflows"
        include-method = "POST"
        checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]
        """))
    run = _schemathesis(config, f"{live_server.url}/api/openapi.json", "--checks", "all",
        "--max-examples", str(MAX_EXAMPLES), "--generation-database", "none", "--workers", "1",
        "--include-path", "/api/v1/tasks", "--include-path", "/api/v1/tasks/batch",
        "--include-path", "/api/v1/workflows", "--include-path", "/api/v1/schedules",
        "--include-path-regex", "^/api/v1/(tasks|workflows|schedules)/\\{[a-z_]+\\}$",
        cwd=tmp_path)
    assert run.returncode == 0, _summary(run)
    print(_summary(run)[-1500:])
