#!/usr/bin/env python3
"""Write deploy/k8s/prometheusrule.yaml: deploy/observability/prometheus/rules.yml as a
PrometheusRule (prometheus-operator), so Kubernetes and docker compose load the same rules.

The groups are copied as text (comments kept), indented under `spec:`.
tests/observability/test_rules.py fails when the file is not what this script writes.

Usage: scripts/prometheusrule.py           write the file
       scripts/prometheusrule.py --check   exit 1 when the file is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy/observability/prometheus/rules.yml"
TARGET = ROOT / "deploy/k8s/prometheusrule.yaml"

HEADER = """\
# The items service's recording and alerting rules for the Prometheus
# Operator. Generated from deploy/observability/prometheus/rules.yml by
# scripts/prometheusrule.py: edit that file, then run the script.
# The pods are scraped through the prometheus.io/* annotations of
# deployment.yaml; runbooks are in docs/operations.md.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: items-service
  labels:
    app.kubernetes.io/name: items-service
    app.kubernetes.io/part-of: items
spec:
"""


def render() -> str:
    lines = RULES.read_text().splitlines()
    # The file's own header comment describes rules.yml; the groups start at `groups:`.
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    body = "".join(f"  {line}\n" if line else "\n" for line in lines[start:])
    return HEADER + body


def main(argv: list[str]) -> int:
    text = render()
    if argv[1:] == ["--check"]:
        if not TARGET.is_file() or TARGET.read_text() != text:
            sys.stderr.write(f"{TARGET.relative_to(ROOT)} is out of date: run {sys.argv[0]}\n")
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
