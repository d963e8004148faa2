"""`bench/instructions.py`: reading callgrind's dump and the table it prints."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from harness import BenchError
from instructions import report, total_instructions


def test_the_total_is_read_from_the_workers_own_dump(tmp_path: Path) -> None:
    (tmp_path / "cached.41.1").write_bytes(b"events: Ir\nfn=(1) main\n5 7\ntotals: 1234567\n")
    (tmp_path / "cached.40.1").write_bytes(b"totals: 99\n")  # the main process's
    assert total_instructions(tmp_path, "cached", 41) == 1_234_567


def test_no_dump_is_an_error_not_a_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("instructions.time.monotonic", iter([0.0, 61.0]).__next__)
    with pytest.raises(BenchError, match="no callgrind dump"):
        total_instructions(tmp_path, "cached", 41)


def test_each_configuration_is_set_against_the_first() -> None:
    table = report([("cached", 700_000), ("no-rate-limit", 560_000)], 2, "/items/{id}")
    assert "| cached | 350,000 | +0 |" in table
    assert "| no-rate-limit | 280,000 | -70,000 |" in table
