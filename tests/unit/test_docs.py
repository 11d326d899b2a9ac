"""The documentation holds: every Mermaid block parses (mermaid's own parser, from npm via
`make tools`), the README starts with its two commands and links only to files that exist, the
changelog follows Keep a Changelog and names the declared version, whose release notes exist.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def mermaid(*files: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if not node or not (ROOT / "node_modules" / "mermaid").exists():
        pytest.fail("mermaid (npm) is not installed: run `make tools`")
    return subprocess.run(
        [node, str(ROOT / "tools" / "mermaid-parse.mjs"), *map(str, files)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip


def version() -> str:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    return setup["metadata"]["version"]


def test_every_mermaid_block_parses(tmp_path: Path) -> None:
    result = mermaid(*DOCS)
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = re.findall(r": ok (\S+)", result.stdout)
    assert "stateDiagram" in kinds and kinds.count("flowchart-v2") >= 2, result.stdout

    broken = tmp_path / "broken.md"
    broken.write_text("```mermaid\nstateDiagram-v2\n    [*] --> \n```\n")
    result = mermaid(broken)
    assert result.returncode == 1 and "1 failed" in result.stdout, "negative control"


def test_readme_starts_with_its_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = text[text.index("```sh\n") + 6 :].split("```", 1)[0].splitlines()
    assert [line.split()[:2] for line in first_block[:2]] == [["make", "run"], ["make", "test"]]


def test_readme_and_docs_link_to_files_that_exist() -> None:
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#]+)\)", doc.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            assert (doc.parent / target).exists(), f"{doc.name}: {target}"
    readme = (ROOT / "README.md").read_text()
    for linked in ("docs/architecture.md", "docs/operations.md", "docs/api.md", "CHANGELOG.md"):
        assert f"({linked})" in readme, linked


def test_architecture_and_runbook_cover_their_topics() -> None:
    architecture = (ROOT / "docs" / "architecture.md").read_text().lower()
    for topic in ("## components", "stateDiagram".lower(), "## guarantees", "## failure modes"):
        assert topic in architecture, topic
    runbook = (ROOT / "docs" / "operations.md").read_text().lower()
    for topic in ("dead-letter triage", "pausing", "scaling", "backups", "upgrading"):
        assert f"## {topic}" in runbook, topic
    assert "/api/openapi.json" in (ROOT / "docs" / "api.md").read_text()


def test_changelog_and_release_notes_of_the_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "Keep a Changelog" in changelog and "## [Unreleased]" in changelog
    assert re.search(rf"^## \[{re.escape(version())}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M)
    notes = ROOT / "docs" / "releases" / f"v{version()}.md"
    assert notes.read_text().startswith(f"# Job Scheduler {version()}")
