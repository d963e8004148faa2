"""A worker's background task: started with the server, stopped (cancelled and awaited) with it.

Every loop a worker runs beside its requests (the metrics sampler, the cache's LISTEN
connection, the idempotency purge, the token-revocation poll, ...) goes through
`run_in_background`, so each is started, stopped and reported the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from sanic import Sanic

log = logging.getLogger("app.background")

StartEvent = Literal["before_server_start", "after_server_start"]
StopEvent = Literal["before_server_stop", "after_server_stop"]


def run_in_background(
    app: Sanic[Any, Any],
    name: str,
    work: Callable[[Sanic[Any, Any]], Coroutine[Any, Any, None]],
    *,
    start: StartEvent = "after_server_start",
    stop: StopEvent = "before_server_stop",
) -> None:
    """Run `work(app)` as a task named `name` in each worker, from `start` until `stop`.

    `work(app)` is called in the `start` listener (a plain function returning a coroutine can
    read the worker's state there, as `app.auth.endpoints` does), and the coroutine runs as a
    plain task: `app.add_task` needs Sanic's own loop, absent from in-process test servers.
    A task that ends with an exception is logged at once, with its traceback.

    When each stops, and why that is enough (the rules every caller relies on):

    - `before_server_stop` runs as the worker begins to stop, before it drains in-flight
      requests; `after_server_stop` runs once they are answered. A task that requests still
      depend on while they finish (the token-revocation poll) stops in `after_server_stop`.
    - Sanic runs the stop listeners of one event in reverse order of registration. The pool
      closes in `app.db.wiring.register`'s `after_server_stop`, which `app.factory` registers
      before anything that uses the pool, so a task registered here after it is cancelled and
      awaited before the pool closes, whichever stop event it names.
    - The stop listener returns only when the task has finished: nothing of it runs after,
      so a listener registered *before* this call for the same stop event (it runs after
      this one) has the last word, e.g. a gauge set to "not ready" or a final flush.
    """
    tasks: list[asyncio.Task[None]] = []

    async def start_task(app: Sanic[Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work(app), name=name)
        task.add_done_callback(_report_crash)
        tasks.append(task)

    async def stop_task(app: Sanic[Any, Any]) -> None:  # noqa: ARG001
        while tasks:
            task = tasks.pop()
            task.cancel()
            # asyncio.wait neither raises the task's exception (already logged) nor the
            # CancelledError it ends with.
            await asyncio.wait([task])

    app.register_listener(start_task, start)
    app.register_listener(stop_task, stop)


def _report_crash(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.error("background task %s failed: %r", task.get_name(), error, exc_info=error)
