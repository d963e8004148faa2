"""The shipped rules and dashboard, checked offline: promtool, structure, runbooks.

What the expressions return on a real server is tests/observability/test_live_prometheus.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.observability.conftest import (
    DASHBOARD,
    DATASOURCES,
    OPERATIONS,
    PROMETHEUS_CONFIG,
    RULE_TESTS,
    RULES,
)
from tests.support import ROOT

pytestmark = pytest.mark.observability


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_promtool_checks_the_rules_and_the_compose_config(promtool: str) -> None:
    assert "SUCCESS: 18 rules found" in _run(promtool, "check", "rules", str(RULES))
    assert "is valid prometheus config file syntax" in _run(
        promtool, "check", "config", str(PROMETHEUS_CONFIG)
    )


def test_every_alert_fires_in_its_promtool_unit_test(promtool: str) -> None:
    output = _run(promtool, "test", "rules", str(RULE_TESTS))
    assert "SUCCESS" in output
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    # Each alert has a case where it fires (exp_alerts with labels), not only silent ones.
    firing = set(
        re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", RULE_TESTS.read_text())
    )
    names = {rule["alert"] for rule in _alerts()}
    assert names <= tested, names - tested
    assert names <= firing, names - firing


def test_every_alert_has_a_for_a_severity_and_a_runbook_section() -> None:
    operations = OPERATIONS.read_text()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in operations.splitlines()
        if line.startswith("#")
    }
    for rule in _alerts():
        name = rule["alert"]
        assert rule.get("for"), f"{name} has no for:"
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        runbook = rule["annotations"]["runbook"]
        assert runbook == f"docs/operations.md#{name.lower()}", runbook
        assert name.lower() in headings, f"docs/operations.md has no section {name}"
        section = operations.split(f"### {name}", 1)[1].split("\n### ", 1)[0]
        assert "**Check first:**" in " ".join(section.split()), (
            f"{name}: the runbook says what to check first"
        )


def test_the_prometheusrule_carries_the_same_groups() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "prometheusrule.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    resource = yaml.safe_load((ROOT / "deploy" / "k8s" / "prometheusrule.yaml").read_text())
    assert resource["kind"] == "PrometheusRule"
    assert resource["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def _panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return panels


def test_the_dashboard_is_a_provisionable_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "items-service"
    assert isinstance(dashboard["schemaVersion"], int)
    datasource_uids = {
        source["uid"] for source in yaml.safe_load(DATASOURCES.read_text())["datasources"]
    }
    ids = [panel["id"] for panel in _panels()]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in _panels():
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        own = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not own & cells, f"{panel['title']} overlaps another panel"
        cells |= own
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in datasource_uids, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] in datasource_uids, panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] in datasource_uids


def test_the_dashboard_shows_what_the_on_call_needs() -> None:
    text = " ".join(target["expr"] for panel in _panels() for target in panel.get("targets", []))
    for metric in (
        "items_http_requests_total",  # request rate, error ratio
        "job:items_http_5xx:ratio_rate5m",
        "items_http_request_duration_seconds_bucket",  # p50 / p99 per route
        "items_http_requests_in_flight",
        "items_db_pool_connections",
        "items_db_pool_connections_in_use",
        "items_db_pool_waiting",
        "items_db_pool_max_connections",
        "items_cache_hits_total",
        "items_cache_misses_total",
        "items_rate_limit_rejections_total",
        "items_worker_crashes_total",
        "items_build_info",
        "items_ready",
        "items_tls_certificate_days_left",
        "items_idempotency_oldest_expired_seconds",
    ):
        assert re.search(rf"(?<![\w:]){re.escape(metric)}(?![\w:])", text), metric
