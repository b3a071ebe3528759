"""The alert rules, the dashboard and the scrape config in deploy/, read as a test reads them:
the PromQL they hold, the series each of its selectors asks for, and whether a real scrape
has such a series.

A selector is satisfied when at least one scraped series has its name and meets every one of
its label matchers, as Prometheus would match it (a missing label reads as ""). The scraped
series carry the `job` label of the prometheus.yml job that would collect them. Queue names
in the files are the default settings'; a test that declares its own names maps them with
`queue_renames`.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from common.topology import ConsumerTopology

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
SCRAPE_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "syncgate.json"
ENSURE_PROMTOOL = ROOT / "scripts" / "ensure-promtool.sh"

# Series Prometheus writes itself for every target, found in no /metrics.
PROMETHEUS_OWN = frozenset({"up"})
# Grafana's own variables, with a value that makes the expression valid PromQL.
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}

Series = frozenset[tuple[str, str]]  # label pairs, the metric name under "__name__"


@dataclass(frozen=True)
class Matcher:
    op: str  # "=", "!=", "=~" or "!~"
    label: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        found = labels.get(self.label, "")
        if self.op == "=":
            return found == self.value
        if self.op == "!=":
            return found != self.value
        matched = re.fullmatch(self.value, found) is not None
        return matched if self.op == "=~" else not matched

    def __str__(self) -> str:
        return f"{self.label}{self.op}{json.dumps(self.value)}"


@dataclass(frozen=True)
class Selector:
    """One vector selector of an expression, and where it was found."""

    name: str
    matchers: tuple[Matcher, ...]
    where: str

    def matches(self, series: Series) -> bool:
        labels = dict(series)
        return labels.get("__name__") == self.name and all(
            matcher.matches(labels) for matcher in self.matchers
        )

    def __str__(self) -> str:
        return f"{self.name}{{{', '.join(map(str, self.matchers))}}} ({self.where})"


# promql_parser's MatchOp members are not hashable: keyed by their names.
_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}


def selectors(expr: str, where: str) -> list[Selector]:
    """Every vector selector in `expr` (ValueError if it is not PromQL)."""
    found: list[Selector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name is None or node.matchers.or_matchers:
                raise ValueError(f"{where}: a selector without a plain metric name: {expr}")
            matchers = tuple(
                Matcher(_OPS[str(m.op)], m.name, m.value)
                for m in node.matchers.matchers
                if m.name != "__name__"
            )
            found.append(Selector(node.name, matchers, where))

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


# --- the files ------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of alerts.yml, in order."""
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def alert_expressions() -> dict[str, str]:
    return {f"alert {rule['alert']}": rule["expr"] for rule in alert_rules()}


def dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


def dashboard_variables(board: Mapping[str, Any]) -> dict[str, str]:
    """The dashboard's own variables with their default values (the datasource's aside)."""
    values = {}
    for variable in board["templating"]["list"]:
        if variable["type"] in {"textbox", "constant", "custom"}:
            values[variable["name"]] = str(variable["query"])
    return values


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """`expr` with Grafana's $name and ${name} replaced; KeyError on an unknown variable."""
    known = {**GRAFANA_BUILTINS, **variables}
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: known[m.group(1) or m.group(2)], expr)


def dashboard_expressions(board: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Every target's expression, with the variables' defaults, by panel title and refId."""
    board = dashboard() if board is None else board
    variables = dashboard_variables(board)
    return {
        f"panel {panel['title']!r} {target['refId']}": substitute(target["expr"], variables)
        for panel in board["panels"]
        for target in panel.get("targets", [])
    }


def all_selectors() -> list[Selector]:
    expressions = {**alert_expressions(), **dashboard_expressions()}
    return [found for where, expr in expressions.items() for found in selectors(expr, where)]


@dataclass(frozen=True)
class ScrapeJob:
    name: str
    metrics_path: str
    params: dict[str, list[str]]


def scrape_jobs() -> dict[str, ScrapeJob]:
    """prometheus.yml's jobs: what each one would fetch from its targets."""
    return {
        job["job_name"]: ScrapeJob(
            job["job_name"], job.get("metrics_path", "/metrics"), job.get("params", {})
        )
        for job in load_yaml(SCRAPE_CONFIG)["scrape_configs"]
    }


# --- scrapes --------------------------------------------------------------------------------


def parse_exposition(text: str, *, job: str) -> set[Series]:
    """Every sample of a scrape as a label set, with the job Prometheus would add."""
    return {
        frozenset({("__name__", sample.name), ("job", job), *sample.labels.items()})
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def unmatched(wanted: Iterable[Selector], scraped: set[Series]) -> list[str]:
    """The selectors no scraped series satisfies, each with the names that do exist."""
    names = {dict(series)["__name__"] for series in scraped}
    missing = []
    for selector in wanted:
        if not any(selector.matches(series) for series in scraped):
            hint = "no such metric" if selector.name not in names else "no series with those labels"
            missing.append(f"{selector}: {hint}")
    return missing


def queue_names(topology: ConsumerTopology) -> dict[str, str]:
    """The queues the consumer's topology declares, by role."""
    roles = {
        "work": topology.queue,
        "dlq": topology.dead_letter_queue,
        "unrouted": topology.events.unrouted,
    }
    for attempt in range(1, topology.max_attempts):
        roles[f"retry {attempt}"] = topology.retry_queue(attempt)
    return roles


def queue_renames(actual: ConsumerTopology) -> dict[str, str]:
    """The default settings' queue names -> the same queues' names in `actual`."""
    default = queue_names(ConsumerTopology())
    ours = queue_names(actual)
    return {default[role]: ours[role] for role in default}


def renamed(selector: Selector, renames: Mapping[str, str]) -> Selector:
    """The selector with its `queue="..."` matchers pointed at renamed queues."""
    matchers = tuple(
        replace(m, value=renames.get(m.value, m.value)) if m.label == "queue" and m.op == "=" else m
        for m in selector.matchers
    )
    return replace(selector, matchers=matchers)


# --- promtool -------------------------------------------------------------------------------


def find_promtool() -> tuple[str | None, int, str]:
    """scripts/ensure-promtool.sh --find: (its path or None, exit code, what it said)."""
    found = subprocess.run(  # noqa: S603 - our own script
        [str(ENSURE_PROMTOOL), "--find"], capture_output=True, text=True, timeout=60, check=False
    )
    path = found.stdout.strip() if found.returncode == 0 else None
    return path, found.returncode, found.stderr.strip()


def promtool() -> str:
    """A working promtool's path. Fails the test when it is missing on a machine that could
    fetch it (CI does, through scripts/test.sh); skips only where it cannot be had."""
    path, code, said = find_promtool()
    if path is not None:
        return path
    if code == 3:
        pytest.skip(said)
    pytest.fail(
        "promtool is missing, and this machine could fetch it: run scripts/ensure-promtool.sh"
        f" (scripts/test.sh does). It said: {said}"
    )


def run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - promtool, on our own files
        [promtool(), *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )
