"""The shipped alert rules: promtool checks them, and every alert has a unit test that fires it.

promtool comes with Debian's ``prometheus`` package, which ``make test`` installs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support import project_root

RULES = project_root() / "deploy" / "prometheus" / "wincert-alerts.yml"
TESTS = project_root() / "deploy" / "prometheus" / "tests" / "wincert-alerts.test.yml"


def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        raise AssertionError("promtool is not installed; `make test` installs Debian's prometheus package")
    return binary


def alert_names() -> list[str]:
    data: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule["alert"] for group in data["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_checks_the_rules() -> None:
    proc = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_unit_tests_pass() -> None:
    proc = subprocess.run(
        [promtool(), "test", "rules", TESTS.name],
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    data: dict[str, Any] = yaml.safe_load(TESTS.read_text(encoding="utf-8"))
    fired = {
        case["alertname"]
        for test in data["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    names = alert_names()
    assert len(names) == len(set(names)), "alert names must be unique"
    assert sorted(set(names) - fired) == [], "alerts without a firing unit test"


def test_every_alert_has_a_severity_summary_and_description() -> None:
    data: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in data["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_rules_directory_is_where_deployments_expect_it() -> None:
    assert Path(RULES).is_file() and RULES.parent.name == "prometheus"
