"""The benchmark harness's `--scale`: naming, databases, and what each server is compared with."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from harness.options import parse_args
from harness.report import counterpart, reference, summarise
from harness.servers import make_servers
from harness.wrk import Measurement


def _measurement(server: str, round_no: int, rps: float, p99_ms: float) -> Measurement:
    return Measurement(
        server=server,
        scenario="list",
        round=round_no,
        requests=int(rps * 10),
        duration_s=10.0,
        rps=rps,
        p50_ms=p99_ms / 2,
        p99_ms=p99_ms,
        errors=0,
        non2xx=0,
        statuses={},
        socket_errors={},
        latency_us={},
    )


def test_scale_copies_each_server_onto_its_own_database(tmp_path: Path) -> None:
    opts = parse_args(["--scale", "1000000", "--database-url", "postgres://u@db:5432/items_bench"])
    assert opts.scale_label == "1M"
    assert opts.scale_database_url == "postgres://u@db:5432/items_bench_1000000"
    servers = {s.name: s for s in make_servers(opts, tmp_path)}
    assert list(servers) == ["ours", "baseline", "ours@1M", "baseline@1M"]
    assert servers["ours@1M"].n_items == 1_000_000
    assert servers["ours"].n_items == 10_000
    assert servers["baseline@1M"].env["DATABASE_URL"].endswith("/items_bench_1000000")
    assert servers["ours"].env["DATABASE_URL"].endswith("/items_bench")
    # The copy keeps the profile's settings.
    assert servers["ours@1M"].env["RATE_LIMIT"] == servers["ours"].env["RATE_LIMIT"]


@pytest.mark.parametrize(("scale", "label"), [(100_000, "100k"), (2_500, "2500"), (3_000, "3k")])
def test_scale_labels(scale: int, label: str) -> None:
    assert parse_args(["--scale", str(scale)]).scale_label == label


def test_scale_equal_to_the_seeded_size_is_refused() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--scale", "10000"])


def test_each_server_is_compared_with_its_own_size_and_reference() -> None:
    assert counterpart("ours@1M") == "baseline@1M"
    assert counterpart("no-metrics") == "baseline"
    assert reference("ours@1M") == "ours"
    assert reference("baseline@1M") == "baseline"
    assert reference("no-metrics") == "ours"
    assert reference("ours") is None

    opts = parse_args(["--scale", "1000000", "--scenarios", "list"])
    rows = [
        # round, ours, baseline, ours@1M, baseline@1M: (req/s, p99 ms)
        (1, (100, 20.0), (100, 25.0), (90, 22.0), (80, 30.0)),
        (2, (100, 20.0), (100, 25.0), (110, 30.0), (120, 30.0)),
        (3, (100, 20.0), (100, 25.0), (100, 24.0), (100, 30.0)),
    ]
    names = ["ours", "baseline", "ours@1M", "baseline@1M"]
    measurements = [
        _measurement(name, round_no, *values)
        for round_no, *per_server in rows
        for name, values in zip(names, per_server, strict=True)
    ]
    (summary,) = summarise(measurements, opts)
    assert summary.p99_vs_ref["ours@1M"] == pytest.approx(1.2)  # 1.1, 1.5, 1.2
    assert summary.vs_ref["ours@1M"] == pytest.approx(1.0)  # 0.9, 1.1, 1.0
    assert summary.vs_ref["baseline@1M"] == pytest.approx(1.0)
    # ours@1M against baseline@1M, not against the baseline at 10k.
    assert summary.ratios["ours@1M"] == pytest.approx([90 / 80, 110 / 120, 1.0])
    assert "ours" not in summary.vs_ref and "baseline@1M" not in summary.ratio
