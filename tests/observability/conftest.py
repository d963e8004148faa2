"""Paths and the Prometheus binaries the observability tests use."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.support import ROOT

OBSERVABILITY = ROOT / "deploy" / "observability"
RULES = OBSERVABILITY / "prometheus" / "rules.yml"
RULE_TESTS = OBSERVABILITY / "prometheus" / "rules.test.yml"
PROMETHEUS_CONFIG = OBSERVABILITY / "prometheus" / "prometheus.yml"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "items-service.json"
DATASOURCES = OBSERVABILITY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
OPERATIONS = ROOT / "docs" / "operations.md"


def require(binary: str) -> str:
    """The binary's path; skipped without it, except in CI, where its absence fails."""
    path = shutil.which(binary)
    if path is None:
        reason = f"{binary} is not installed: run scripts/install-prometheus.sh (CI does)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return require("promtool")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    return require("prometheus")
