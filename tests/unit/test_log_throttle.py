"""During a database outage the "database unavailable" warning is throttled, not repeated."""

from __future__ import annotations

import logging

import pytest

from app.http import errors
from app.log_throttle import Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_first_event_is_logged_then_one_per_interval_with_the_count_in_between() -> None:
    clock = Clock()
    throttle = Throttle(10.0, clock)
    assert throttle.ready() == 0
    assert [throttle.ready() for _ in range(5)] == [None] * 5
    clock.now += 9.9
    assert throttle.ready() is None
    clock.now += 0.1
    assert throttle.ready() == 6
    clock.now += 60
    assert throttle.ready() == 0


def test_an_outage_logs_a_warning_per_interval_not_per_request(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    monkeypatch.setattr(
        errors, "database_down_log", Throttle(errors.DATABASE_DOWN_LOG_INTERVAL, clock)
    )
    down = ConnectionRefusedError(111, "Connection refused")
    with caplog.at_level(logging.WARNING, logger="app.errors"):
        for _ in range(1000):
            errors.log_database_down(down)
        clock.now += errors.DATABASE_DOWN_LOG_INTERVAL
        errors.log_database_down(down)

    first, second = caplog.records
    assert first.getMessage() == f"database unavailable: {down!r}"
    assert second.getMessage() == (
        f"database unavailable: {down!r} (999 more since the last such line, not logged)"
    )
    assert second.suppressed == 999  # type: ignore[attr-defined]
