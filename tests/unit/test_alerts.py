"""deploy/prometheus/: the alert rules pass promtool's checks and their unit tests, every
alert has a case that fires and one that does not, and each rule names only series that
syncgate, the broker's plugin or Prometheus itself provide (tests/integration/
test_monitoring.py checks them against real scrapes)."""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from common.topology import ConsumerTopology
from tests.support.monitoring import (
    ALERT_TESTS,
    ALERTS,
    PROMETHEUS_OWN,
    SCRAPE_CONFIG,
    Selector,
    alert_rules,
    all_selectors,
    load_yaml,
    parse_exposition,
    queue_names,
    run_promtool,
    scrape_jobs,
    selectors,
    unmatched,
)

SEVERITIES = {"critical", "warning"}


def test_promtool_checks_the_rules() -> None:
    checked = run_promtool("check", "rules", str(ALERTS))
    print(checked.stdout, checked.stderr)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout


def test_promtool_runs_the_alerts_unit_tests() -> None:
    tested = run_promtool("test", "rules", str(ALERT_TESTS))
    print(tested.stdout, tested.stderr)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_promtool_checks_the_scrape_config_and_its_rule_files() -> None:
    checked = run_promtool("check", "config", str(SCRAPE_CONFIG))
    print(checked.stdout, checked.stderr)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout


def test_promtool_catches_a_broken_rule_and_a_wrong_expectation(tmp_path: Path) -> None:
    """The three checks above can fail."""
    good = ALERTS.read_text()
    rules = tmp_path / "alerts.yml"
    rules.write_text(good.replace("max by (queue) (syncgate_dlq_messages)", "max by (queue (x)", 1))
    assert run_promtool("check", "rules", str(rules)).returncode != 0

    rules.write_text(good)
    tests = tmp_path / "alerts.test.yml"
    expected = ALERT_TESTS.read_text()
    assert "              severity: warning\n" in expected
    tests.write_text(expected.replace("severity: warning\n", "severity: critical\n", 1))
    failed = run_promtool("test", "rules", str(tests))
    assert failed.returncode != 0
    assert "FAILED" in failed.stdout + failed.stderr
    shutil.copy(ALERT_TESTS, tests)
    assert run_promtool("test", "rules", str(tests)).returncode == 0


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    fires: dict[str, int] = defaultdict(int)
    quiet: dict[str, int] = defaultdict(int)
    for case in load_yaml(ALERT_TESTS)["tests"]:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else quiet)[check["alertname"]] += 1
    alerts = {rule["alert"] for rule in alert_rules()}
    assert set(fires) == alerts, alerts ^ set(fires)
    assert set(quiet) == alerts, alerts ^ set(quiet)


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: str(rule["alert"]))
def test_every_alert_says_how_bad_it_is_and_where_to_look(rule: dict[str, Any]) -> None:
    assert rule["alert"].startswith("Syncgate")
    assert rule["labels"]["severity"] in SEVERITIES
    # A blip never pages: each alert holds for a while first.
    assert rule["for"].endswith("m")
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description"}
    description = annotations["description"]
    assert len(description) > 150, "say what it means and what to look at first"
    places = ("management UI", "syncgate dlq", "log", "Prometheus UI")
    assert any(place in description for place in places), description


def test_the_rules_name_only_syncgate_broker_or_prometheus_series() -> None:
    for selector in all_selectors():
        assert (
            selector.name.startswith(("syncgate_", "rabbitmq_")) or selector.name in PROMETHEUS_OWN
        ), selector


def test_every_queue_named_is_one_the_default_settings_declare() -> None:
    declared = set(queue_names(ConsumerTopology()).values())
    named = [
        (selector, matcher)
        for selector in all_selectors()
        for matcher in selector.matchers
        if matcher.label == "queue"
    ]
    assert named
    for selector, matcher in named:
        # An exact name, so the cluster test can point it at its own queues.
        assert matcher.op == "=", selector
        assert matcher.value in declared, selector


def test_up_names_a_job_that_prometheus_scrapes() -> None:
    jobs = scrape_jobs()
    ups = [selector for selector in all_selectors() if selector.name == "up"]
    assert ups
    for selector in ups:
        [job] = [m for m in selector.matchers if m.label == "job"]
        assert job.op == "=", selector
        assert job.value in jobs, selector


EXPOSITION = """\
# TYPE syncgate_publish_total counter
syncgate_publish_total{outcome="confirmed"} 3.0
syncgate_publish_total{outcome="failed"} 0.0
"""


def test_the_metric_check_flags_a_wrong_name_or_label_value() -> None:
    """unmatched(), which the integration tests use, can fail."""
    scraped = parse_exposition(EXPOSITION, job="syncgate-gateway")

    def check(expr: str) -> list[str]:
        return unmatched(selectors(expr, "test"), scraped)

    assert check('rate(syncgate_publish_total{outcome!="confirmed"}[5m])') == []
    assert check('syncgate_publish_total{job="syncgate-gateway", outcome=~"conf.*"}') == []
    [wrong_name] = check("rate(syncgate_publishes_total[5m])")
    assert "no such metric" in wrong_name
    [wrong_value] = check('syncgate_publish_total{outcome="confirmd"}')
    assert "no series with those labels" in wrong_value
    assert check('syncgate_publish_total{job="syncgate-consumer"}') != []
    assert check('syncgate_publish_total{outcome!~"confirmed|failed"}') != []
    assert isinstance(selectors("up", "test")[0], Selector)
