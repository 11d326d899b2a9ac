"""`make run` installs only what running needs; the dev extra comes with test, lint and bench.

Negative control: ``git show 77d5852:Makefile > /tmp/old.mk;
SCHEDULER_TEST_MAKEFILE=/tmp/old.mk pytest tests/unit/test_makefile.py`` runs these tests on the
Makefile from before (one stamp, dev extra for everything): they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = Path(os.environ.get("SCHEDULER_TEST_MAKEFILE") or ROOT / "Makefile")
RUNTIME_INSTALL = "pip install -q -e .\n"
DEV_INSTALL = "pip install -q -e '.[dev]'"


def dry_run(target: str, venv: Path) -> str:
    """What `make TARGET` would run (make -n) with the virtualenv at venv."""
    make = shutil.which("make")
    assert make, "make is not installed"
    run = subprocess.run(
        [make, "-n", "-f", str(MAKEFILE), "-C", str(ROOT), target, f"VENV={venv}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


@pytest.mark.parametrize("target", ["run", "api", "worker", "scheduler", "migrate"])
def test_running_targets_install_the_package_without_the_dev_extra(tmp_path, target):
    commands = dry_run(target, tmp_path / "venv")
    assert RUNTIME_INSTALL in commands, commands
    assert "[dev]" not in commands, commands


@pytest.mark.parametrize("target", ["test", "lint", "bench"])
def test_tool_targets_install_the_dev_extra(tmp_path, target):
    commands = dry_run(target, tmp_path / "venv")
    assert DEV_INSTALL in commands, commands


def test_a_venv_made_by_make_run_gets_the_dev_extra_for_make_test(tmp_path):
    venv = tmp_path / "venv"
    venv.mkdir()
    for stamp in (".installed-run", ".installed"):  # whatever make run left behind
        (venv / stamp).touch()
    assert DEV_INSTALL in dry_run("test", venv)
    (venv / ".installed-dev").touch()
    assert "pip install" not in dry_run("test", venv)
    assert "pip install" not in dry_run("run", venv)
