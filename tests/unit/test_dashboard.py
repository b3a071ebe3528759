"""deploy/grafana/syncgate.json, checked without Grafana (which is not packaged here): its
structure, its data source variable, every target's PromQL (parsed, and checked by
promtool), and which series it shows (tests/integration/test_monitoring.py checks that
each exists on real scrapes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.monitoring import (
    DASHBOARD,
    all_selectors,
    dashboard,
    dashboard_expressions,
    run_promtool,
    selectors,
    substitute,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    return dashboard()


def test_the_dashboard_is_a_dashboard(board: dict[str, Any]) -> None:
    assert board["uid"] == "syncgate"
    assert board["title"]
    assert isinstance(board["schemaVersion"], int)
    panels = board["panels"]
    assert isinstance(panels, list)
    assert panels
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids repeat"
    for panel in panels:
        assert panel["type"] in {"timeseries", "stat"}, panel["title"]
        assert panel["title"]
        assert panel["description"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({target["refId"] for target in targets}) == len(targets)
        assert all(target["expr"].strip() for target in targets)


def test_every_panel_reads_the_datasource_variable(board: dict[str, Any]) -> None:
    [variable] = [v for v in board["templating"]["list"] if v["name"] == "datasource"]
    assert variable["type"] == "datasource"
    assert variable["query"] == "prometheus"
    for panel in board["panels"]:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_every_expression_is_promql(board: dict[str, Any]) -> None:
    expressions = dashboard_expressions(board)
    assert len(expressions) == sum(len(panel["targets"]) for panel in board["panels"])
    for where, expr in expressions.items():
        assert "$" not in expr, where
        assert selectors(expr, where), where


def test_an_unknown_variable_or_bad_promql_is_caught() -> None:
    with pytest.raises(KeyError):
        substitute("rate(x[$nope])", {})
    with pytest.raises(ValueError, match="parenthesis"):
        selectors("sum(rate(x[5m])", "test")


def test_promtool_parses_every_expression(tmp_path: Path, board: dict[str, Any]) -> None:
    """As recording rules, the one form promtool 2.42 checks PromQL in without a server."""
    expressions = list(dashboard_expressions(board).values())
    recorded = [
        {"record": f"syncgate:dashboard:target{i}", "expr": expr}
        for i, expr in enumerate(expressions)
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    checked = run_promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(expressions)} rules found" in checked.stdout
    # And it would say so if one were not.
    recorded.append({"record": "syncgate:dashboard:broken", "expr": "sum(x"})
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    assert run_promtool("check", "rules", str(path)).returncode != 0


def test_the_dashboard_shows_what_an_operator_needs(board: dict[str, Any]) -> None:
    shown = {s.name for s in all_selectors() if s.where.startswith("panel ")}
    assert shown >= {
        "syncgate_publish_total",  # publish outcomes
        "syncgate_publish_duration_seconds_bucket",  # publish latency
        "syncgate_http_requests_total",  # HTTP statuses
        "syncgate_consumer_messages_total",  # consumer settlements
        "syncgate_handler_duration_seconds_bucket",  # handler time
        "syncgate_dlq_messages",  # DLQ depth
        "rabbitmq_detailed_queue_messages",  # unrouted depth
        "rabbitmq_detailed_queue_messages_ready",  # work-queue backlog
        "rabbitmq_detailed_queue_consumers",  # its consumers
        "syncgate_gateway_ready",  # gateway readiness
    }


def test_the_file_is_plain_json_with_a_final_newline() -> None:
    text = DASHBOARD.read_text()
    assert text.endswith("}\n")
    assert "\t" not in text
