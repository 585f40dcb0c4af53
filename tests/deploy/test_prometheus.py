"""The shipped Prometheus config and alert rules, checked and unit-tested by promtool itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES = ROOT / "deploy" / "prometheus" / "wattshift-alerts.yml"
RULE_TESTS = Path(__file__).with_name("prometheus_alerts_test.yml")

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None,
                                reason="promtool missing: `make test` installs Debian's prometheus")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_the_scrape_config_and_its_rule_file_are_valid():
    result = promtool("check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_the_rules_are_valid():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_every_alert_rule_passes_its_unit_tests():
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_both_firing_and_not_firing():
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    missing = []
    for rule in alert_rules():
        name = rule["alert"]
        firing = [c for c in cases if c["alertname"] == name and c["exp_alerts"]]
        silent = [c for c in cases if c["alertname"] == name and not c["exp_alerts"]]
        if not firing:
            missing.append(f"{name}: no case where it fires")
        if not silent:
            missing.append(f"{name}: no case where it stays silent")
    assert missing == []


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_each_alert_says_how_bad_what_and_how_much(rule):
    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert rule.get("for"), "an alert without `for:` pages on a single bad scrape"
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    text = rule["annotations"]["summary"] + rule["annotations"]["description"]
    flag = rule["expr"].strip().endswith(("== 0", "== 1"))  # a 0/1 state: its value says nothing
    assert flag or "{{ $value" in text, "the annotations should carry the value that crossed the line"
