"""``python -m bench --quick`` runs every scenario and prints every row (no timing assertions).

The bench starts its own database, redis-server, API, workers and peers, so this is an e2e test.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import Row, Target, render

ROOT = Path(__file__).resolve().parents[2]
ROWS = {
    "1a", "1b", "1c", "2a", "2b", "3a", "3b", "3c", "3d", "3e", "3f", "3g", "3h", "3i", "3j",
    "4a", "4b", "5a", "5b", "5c", "5d", "6a", "6b", "7a", "7b", "7c", "7d",
    "8a", "8b", "8c", "9a", "9b", "9c", "9d", "9e", "10a", "10b", "10c",
    "12a", "12b", "12c", "12d", "12e",
}  # fmt: skip
WITHOUT_RAW = {"5c", "5d", "6b", "12a", "12b", "12c"}  # raw Celery cannot (see the rows' notes)
COUNTS = {"9c", "9d", "9e"}  # missed/doubled slots: 0 is a value, so ours/raw may be undefined
# CPU during a quick drain of 40 tasks, counted in 10 ms ticks: PostgreSQL's during raw
# Celery's (its idle background only) and Redis's may be 0
COUNTS |= {"3f", "3g"}


@pytest.mark.e2e
def test_quick_bench_prints_every_scenario_row(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    printed = {line.split("|")[1].strip() for line in table[1:]}
    assert printed == ROWS, done.stdout
    assert "machine:" in done.stdout and "load average" in done.stdout
    rows = {row["key"]: row for row in json.loads(out.read_text())["rows"]}
    for key, row in rows.items():
        assert row["ours"] and all(math.isfinite(v) for v in row["ours"]), row
        if key not in WITHOUT_RAW:
            assert row["raw"] and all(math.isfinite(v) for v in row["raw"]), row
            assert key in COUNTS or math.isfinite(row["ratio"]), row


def test_missed_target_is_flagged_with_its_shortfall():
    missed = Row("9a", "example", "req/s", ours=[30.0], raw=[100.0], target=Target("ratio>=", 0.6))
    met = Row("9b", "example", "ms", ours=[20.0, 40.0], target=Target("ours<=", 50))
    table = render([missed, met])
    assert missed.met is False and met.met is True
    assert "| **NO** |" in table and "| yes " in table
    assert "9a example: 50% below the target" in table
