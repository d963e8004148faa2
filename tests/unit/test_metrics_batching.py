"""Batched request metrics add up to what per-request prometheus-client calls would record."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from app.db.batch import BATCH_SIZES, KINDS
from app.ops.metrics import DB_BATCH_SIZE, LATENCY, RequestStats, add_observations

DURATIONS = [0.0004, 0.001, 0.0011, 0.003, 0.05, 0.05, 0.7, 12.0, 0.0]


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def test_one_batch_equals_one_observe_per_request() -> None:
    observed, batched = CollectorRegistry(), CollectorRegistry()
    buckets = LATENCY._upper_bounds[:-1]  # the +Inf bound is implied
    one_by_one = Histogram("latency", "l", buckets=buckets, registry=observed)
    in_one_go = Histogram("latency", "l", buckets=buckets, registry=batched)
    stats = RequestStats()
    for seconds in DURATIONS:
        one_by_one.observe(seconds)
        stats.record("GET", "/x", 200, seconds)
    [entry] = stats._latency.values()
    add_observations(in_one_go, entry)
    assert _samples(batched) == _samples(observed)


def test_in_flight_is_started_minus_finished() -> None:
    stats = RequestStats()
    stats.started += 3
    stats.record("GET", "/x", 200, 0.01)
    assert stats.started - stats.finished == 2


def test_batch_sizes_reach_the_histogram_by_kind() -> None:
    def count(kind: str) -> float:
        return float(DB_BATCH_SIZE.labels(kind)._sum.get())

    before = {kind: count(kind) for kind in KINDS}
    BATCH_SIZES.add("page", 5)
    BATCH_SIZES.add("insert", 40)
    BATCH_SIZES.add("insert", 2)
    RequestStats().flush()
    assert {kind: count(kind) - before[kind] for kind in KINDS} == {
        "by_id": 0,
        "page": 5,
        "insert": 42,
    }
