"""A worker's background task (`app.background`) and shared memory (`app.shared_memory`) on a
real in-process server: when a task runs and stops, what a crash leaves in the log, and what
a single-process server's worker gets instead of the main process's memory."""

from __future__ import annotations

import asyncio
import logging
from multiprocessing.sharedctypes import RawArray
from typing import Any

import pytest
from sanic import Request, Sanic, text
from sanic_testing.reusable import ReusableClient

from app.background import run_in_background
from app.shared_memory import share
from tests.support import free_port


def _app(name: str) -> Sanic[Any, Any]:
    app: Sanic[Any, Any] = Sanic(name, configure_logging=False)
    app.config.update(MOTD=False, ACCESS_LOG=False)

    @app.get("/")
    async def index(request: Request) -> Any:
        return text(",".join(request.app.ctx.events))

    app.ctx.events = []
    return app


def test_task_serves_requests_and_has_stopped_before_earlier_stop_listeners() -> None:
    app = _app("background_order")
    events: list[str] = app.ctx.events

    @app.after_server_stop
    async def close_pool(app: Sanic[Any, Any]) -> None:
        events.append("pool closed")

    async def poll(app: Sanic[Any, Any]) -> None:
        events.append("polling")
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.05)  # a goodbye that takes a while: awaited all the same
            events.append("poll stopped")

    run_in_background(app, "poll", poll, start="before_server_start", stop="after_server_stop")

    with ReusableClient(app, port=free_port()) as client:
        _, response = client.get("/")
        assert response.text == "polling"
    assert events == ["polling", "poll stopped", "pool closed"]


def test_a_crashed_task_is_logged_with_its_name(caplog: pytest.LogCaptureFixture) -> None:
    app = _app("background_crash")

    async def fail(app: Sanic[Any, Any]) -> None:
        raise RuntimeError("the database went away")

    run_in_background(app, "failing-loop", fail)

    with (
        caplog.at_level(logging.ERROR, "app.background"),
        ReusableClient(app, port=free_port()) as client,
    ):
        client.get("/")  # the loop runs while the request is served: the task runs and fails
    [record] = [r for r in caplog.records if r.name == "app.background"]
    assert "failing-loop" in record.getMessage()
    assert "the database went away" in record.getMessage()
    assert record.exc_info is not None


def test_a_single_process_server_gets_its_own_memory() -> None:
    app = _app("shared_alone")
    counts = share(app, "counts", lambda: RawArray("q", 4), alone=lambda: RawArray("q", 1))
    seen: list[tuple[bool, int]] = []

    @app.before_server_start
    async def open_counts(app: Sanic[Any, Any]) -> None:
        seen.append((counts.across_workers, len(counts.memory)))

    with ReusableClient(app, port=free_port()):
        pass
    assert seen == [(False, 1)]
