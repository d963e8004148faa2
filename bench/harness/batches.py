"""How many requests our server served through batched statements during a measurement.

Read from its `/metrics` (the `items_db_batch_size{kind}` histogram, app/db/batch.py) before
and after: per kind, the requests served by batched statements and the statements run. A
server without that histogram (the baseline, or metrics off) gives None.
"""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from harness.servers import Server, request

METRIC = "items_db_batch_size"
# Our metrics are flushed to the scrape every 0.5 s (app/ops/metrics.py): wait one flush so a
# scrape holds everything before it.
FLUSH_WAIT_S = 0.6

Totals = dict[str, tuple[float, float]]  # kind -> (requests served, statements)


def scrape(server: Server) -> Totals | None:
    time.sleep(FLUSH_WAIT_S)
    try:
        status, _, data = request(server, "GET", "/metrics")
    except OSError:
        return None
    if status != 200:
        return None
    totals: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(data.decode()):
        if family.name != METRIC:
            continue
        for sample in family.samples:
            kind = sample.labels.get("kind")
            if kind is None:
                continue
            entry = totals.setdefault(kind, [0.0, 0.0])
            if sample.name == f"{METRIC}_sum":
                entry[0] = sample.value
            elif sample.name == f"{METRIC}_count":
                entry[1] = sample.value
    return {kind: (served, statements) for kind, (served, statements) in totals.items()}


def between(before: Totals | None, after: Totals | None) -> Totals | None:
    """What was batched between two scrapes, per kind that ran a statement."""
    if before is None or after is None:
        return None
    moved = {}
    for kind, (served, statements) in after.items():
        was_served, was_run = before.get(kind, (0.0, 0.0))
        if statements > was_run:
            moved[kind] = (served - was_served, statements - was_run)
    return moved
