"""The Prometheus alert rules (docker/prometheus/alerts.yml) under `promtool test rules`.

Each alert has a case where it fires and one where it must not (docker/prometheus/tests/).
Negative control: the same tests against rules with each threshold moved fail.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

from tests.unit.test_deploy import DOCKER, report, run, tool

RULES = DOCKER / "prometheus" / "alerts.yml"
RULE_TESTS = DOCKER / "prometheus" / "tests" / "alerts_test.yml"


def alert_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"]}


def test_rules_pass_promtool_check() -> None:
    result = run(tool("promtool"), "check", "rules", str(RULES))
    assert result.returncode == 0, report(result)


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing, silent = set(), set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    assert firing == alert_names() and silent == alert_names()
    assert {"SchedulerDeadLettersGrowing", "SchedulerQueueOldestTaskTooOld"} <= alert_names()
    assert {"SchedulerNoWorkerForQueue", "SchedulerWebhookFailureRate"} <= alert_names()
    assert "SchedulerScheduleLag" in alert_names()


def test_promtool_rule_tests_pass() -> None:
    result = run(tool("promtool"), "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, report(result)


def test_rule_tests_fail_when_thresholds_move(tmp_path: Path) -> None:
    """Negative control: the cases pin the thresholds, so moved ones fail the tests."""
    moved = re.sub(
        r"> (600|60|0\.2)\b", lambda m: f"> {float(m.group(1)) * 100:g}", RULES.read_text()
    )
    assert moved != RULES.read_text()
    (tmp_path / "tests").mkdir()
    (tmp_path / "alerts.yml").write_text(moved)
    shutil.copy(RULE_TESTS, tmp_path / "tests" / "alerts_test.yml")
    result = run(tool("promtool"), "test", "rules", str(tmp_path / "tests" / "alerts_test.yml"))
    assert result.returncode != 0, report(result)
