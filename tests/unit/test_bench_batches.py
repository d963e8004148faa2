"""The benchmark's batch figures: what moved in `items_db_batch_size` during a measurement."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from harness.batches import between
from harness.report import _batched
from harness.wrk import Measurement


def test_only_kinds_that_ran_a_statement_count_and_only_what_moved() -> None:
    before = {"by_id": (100.0, 10.0), "page": (5.0, 5.0)}
    after = {"by_id": (400.0, 30.0), "page": (5.0, 5.0), "insert": (64.0, 2.0)}
    assert between(before, after) == {"by_id": (300.0, 20.0), "insert": (64.0, 2.0)}
    assert between(None, after) is None


def test_a_summary_gives_the_median_size_and_share_per_kind() -> None:
    def measured(requests: int, served: float, statements: float) -> Measurement:
        return Measurement(
            server="ours",
            scenario="get",
            round=1,
            requests=requests,
            duration_s=10,
            rps=requests / 10,
            p50_ms=1,
            p99_ms=2,
            errors=0,
            non2xx=0,
            statuses={},
            socket_errors={},
            latency_us={},
            batches={"by_id": (served, statements)},
        )

    rounds = [measured(1000, 800, 100), measured(1000, 900, 50), measured(2000, 1000, 200)]
    assert _batched(rounds) == {"by_id": (8.0, 0.8)}
