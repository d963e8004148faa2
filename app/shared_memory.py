"""Memory every worker of a server shares: made by the main process before it spawns them.

Sanic hands what the main process puts on `app.shared_ctx` in `main_process_start` to every
worker it spawns. A single-process server (the tests' in-process servers) has no main
process, so its one worker gets an allocation of its own. `share` does both, for every
table the workers share (rate-limit windows, cache generations, connection counts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from sanic import Sanic

T = TypeVar("T")


class Shared(Generic[T]):
    """The memory as this worker sees it, set in `before_server_start`."""

    __slots__ = ("across_workers", "memory")

    # The main process's allocation (True), or this single-process server's own (False).
    across_workers: bool
    memory: T


def share(
    app: Sanic[Any, Any],
    name: str,
    allocate: Callable[[], T],
    *,
    alone: Callable[[], T] | None = None,
) -> Shared[T]:
    """Allocate `allocate()` in the main process as `app.shared_ctx.<name>`, for each worker.

    Each worker's `before_server_start` sets the returned `Shared`: the main process's memory,
    or in a single-process server `alone()` (default: `allocate()`). Call this before
    registering the listeners that read it: start-up listeners run in registration order.
    """
    shared: Shared[T] = Shared()

    async def allocate_shared(app: Sanic[Any, Any]) -> None:
        setattr(app.shared_ctx, name, allocate())

    async def open_shared(app: Sanic[Any, Any]) -> None:
        memory: T | None = getattr(app.shared_ctx, name, None)
        shared.across_workers = memory is not None
        shared.memory = memory if memory is not None else (alone or allocate)()

    app.register_listener(allocate_shared, "main_process_start")
    app.register_listener(open_shared, "before_server_start")
    return shared
