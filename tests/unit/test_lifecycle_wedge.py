"""The supervisor's last resort: a main process that outlives its stopped workers exits."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from app.ops import supervisor
from app.settings import load_settings


class _Process:
    def __init__(self, alive: bool) -> None:
        self.alive = alive

    def is_alive(self) -> bool:
        return self.alive


def _supervisor(workers_alive: bool, stopped_ago: float) -> supervisor.Supervisor:
    watcher = supervisor.Supervisor.__new__(supervisor.Supervisor)
    watcher.settings = load_settings(env_file=None, SHUTDOWN_DELAY=1, GRACEFUL_SHUTDOWN_TIMEOUT=2)
    watcher.manager = SimpleNamespace(transient_processes=[_Process(workers_alive)])  # type: ignore[assignment]
    watcher.stopping_since = time.monotonic() - stopped_ago
    return watcher


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    codes: list[int] = []

    def fake_exit(code: int) -> Any:
        codes.append(code)

    monkeypatch.setattr(supervisor.os, "_exit", fake_exit)
    monkeypatch.setattr(supervisor.logging, "shutdown", lambda: None)
    monkeypatch.setattr(supervisor.multiprocessing, "active_children", list)
    return codes


def test_exits_zero_once_the_drain_budget_has_passed_with_every_worker_gone(
    exits: list[int],
) -> None:
    _supervisor(
        workers_alive=False, stopped_ago=1 + 2 + supervisor.WEDGE_MARGIN + 1
    )._exit_if_wedged()
    assert exits == [0]


def test_waits_while_within_the_drain_budget(exits: list[int]) -> None:
    _supervisor(workers_alive=False, stopped_ago=1.0)._exit_if_wedged()
    assert exits == []


def test_never_exits_while_a_worker_still_runs(exits: list[int]) -> None:
    _supervisor(workers_alive=True, stopped_ago=3600)._exit_if_wedged()
    assert exits == []
