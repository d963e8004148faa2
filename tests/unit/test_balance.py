from __future__ import annotations

from app.ops.balance import excess, worker_index


def test_worker_index_comes_from_sanics_worker_name() -> None:
    assert worker_index(2, "Sanic-Server-0-0") == 0
    assert worker_index(2, "Sanic-Server-1-0") == 1
    # A worker beyond WORKERS (Sanic scaled up) or any other process has no cell.
    assert worker_index(2, "Sanic-Server-2-0") is None
    assert worker_index(2, "Sanic-Main") is None
    assert worker_index(2, "") is None


def test_a_worker_sheds_only_beyond_its_fair_share_and_the_slack() -> None:
    assert excess([40, 24], 0) == 40 - 32 - 1
    assert excess([40, 24], 1) == 0
    assert excess([33, 31], 0) == 0
    assert excess([35, 30], 0) == 35 - 33 - 1
    assert excess([0, 0], 0) == 0
    assert excess([5, 0, 0], 0, slack=0) == 3
