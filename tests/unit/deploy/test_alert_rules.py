"""deploy/prometheus/alerts.yml: valid for Prometheus, and every alert unit-tested by promtool.

promtool comes with Debian's ``prometheus`` package; ``.ci/ensure-prometheus`` installs it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

PROMETHEUS_DIR = Path(__file__).parents[3] / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "alerts.yml"
RULE_TESTS = PROMETHEUS_DIR / "alerts.test.yml"


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not on PATH: run .ci/ensure-prometheus (installs Debian's prometheus "
            "package: apt-get install -y --no-install-recommends prometheus)"
        )
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


@pytest.mark.component  # runs promtool
def test_promtool_check_rules() -> None:
    result = _run("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


@pytest.mark.component  # runs promtool
def test_promtool_test_rules() -> None:
    result = _run("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_issue_alerts_exist() -> None:
    names = {rule["alert"] for rule in _alerts()}
    assert {
        "InspectorDown",
        "InspectorNotReady",
        "InspectorConsumerLagGrowing",
        "InspectorLatencySLOBreach",
        "InspectorAnomalyRateSpike",
        "InspectorScoreDrift",
        "InspectorDeadLetterRate",
        "InspectorModelReloadFailed",
    } <= names
    assert len(names) == len(_alerts()), "alert names must be unique"


def test_every_alert_has_a_severity_and_a_summary() -> None:
    for rule in _alerts():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_every_alert_has_a_promtool_case_where_it_fires() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())
    assert tests["rule_files"] == [RULES.name]
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    quiet = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    names = {rule["alert"] for rule in _alerts()}
    assert names - fired == set(), "alerts without a test that expects them to fire"
    # ...and one where they must not: a rule that always fires passes the first check alone.
    assert names - quiet == set(), "alerts without a test that expects silence"
