"""The benchmark's slowest server-side request: read from the access lines of one measurement."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from harness.accesslog import log_offset, slowest_since
from harness.options import parse_args
from harness.report import summarise
from harness.wrk import Measurement


def _line(ms: float, route: str = "/items/<item_id:int>", status: int = 200) -> bytes:
    entry = {"logger": "app.access", "route": route, "status": status, "duration_ms": ms}
    return orjson.dumps(entry) + b"\n"


def test_only_lines_after_the_offset_count(tmp_path: Path) -> None:
    log = tmp_path / "server-ours.log"
    log.write_bytes(_line(9000.0) + b"starting server\n")
    offset = log_offset(log)
    with log.open("ab") as out:
        out.write(_line(3.2) + _line(2586.4, status=200) + b'{"logger":"app.access","dura')
        out.write(b"\n" + _line(251.0) + b'{"logger":"app.db","duration_ms":99999}\n')
    slowest = slowest_since(log, offset, wait=0)
    assert slowest is not None
    assert (slowest.ms, slowest.status, slowest.route) == (2586.4, 200, "/items/<item_id:int>")
    assert (slowest.over_slow, slowest.lines) == (2, 3)


def test_a_server_without_access_lines_has_no_slowest(tmp_path: Path) -> None:
    log = tmp_path / "server-baseline.log"
    log.write_bytes(b"Sanic started\n")
    assert slowest_since(log, 0, wait=0) is None


def _measurement(server: str, round_no: int, slowest: float | None) -> Measurement:
    return Measurement(
        server=server,
        scenario="get",
        round=round_no,
        requests=1000,
        duration_s=10.0,
        rps=100.0,
        p50_ms=1.0,
        p99_ms=2.0,
        errors=0,
        non2xx=0,
        statuses={},
        socket_errors={},
        latency_us={},
        slowest_ms=slowest,
        over_250ms=None if slowest is None else int(slowest > 250),
    )


def test_the_summary_keeps_the_worst_round_and_counts_every_slow_request() -> None:
    opts = parse_args(["--scenarios", "get"])
    ms = [_measurement("ours", 1, 40.0), _measurement("ours", 2, 300.0)]
    ms += [_measurement("baseline", 1, None), _measurement("baseline", 2, None)]
    (summary,) = summarise(ms, opts)
    assert summary.slowest_ms == {"ours": 300.0}
    assert summary.over_250ms == {"ours": 1}
