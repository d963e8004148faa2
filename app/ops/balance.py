"""Keep-alive connections spread evenly over the workers.

Workers share one listening socket and each accepts greedily, so a burst of new connections
(a client pool or a load generator opening 64 at once) often lands far from even on two
workers (bench/README.md); those connections then stay where they landed for their whole
keep-alive life. The loaded worker answers slower, the other idles, and the clients on the
loaded one see the tail latency.

Every `BALANCE_INTERVAL` each worker writes its open connection count into a shared-memory
array (one cell per worker, each written by its worker only) and reads the others. A worker
holding more than its fair share plus `SLACK` answers that many of its next responses with
`Connection: close` (RFC 9112 section 9.6), so those clients reconnect; the kernel hands the
new connection to whichever worker is waiting in `accept`, which is the less busy one. Only
a response's end closes a connection, so nothing in flight is cut. A balanced server sheds
nothing and pays one integer test per request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Sequence
from multiprocessing.sharedctypes import RawArray
from typing import TYPE_CHECKING, Any, cast

from app.background import run_in_background
from app.settings import Settings
from app.shared_memory import share

if TYPE_CHECKING:
    from sanic import Request, Sanic
    from sanic.http import Http

log = logging.getLogger("app.balance")

BALANCE_INTERVAL = 0.5
# Connections a worker may hold beyond its fair share before it sheds: absorbs the counts'
# staleness (each worker reads the others' up to an interval old) without ping-pong.
SLACK = 1
# Sanic names its server workers Sanic-Server-<n>-<restart slot>, n in 0..WORKERS-1.
_WORKER_NAME = re.compile(r"Sanic-Server-(\d+)-\d+")


def worker_index(workers: int, name: str | None = None) -> int | None:
    """This process's cell in the shared counts, or None outside a numbered server worker."""
    match = _WORKER_NAME.fullmatch(
        name if name is not None else os.environ.get("SANIC_WORKER_NAME", "")
    )
    if match is None:
        return None
    index = int(match.group(1))
    return index if index < workers else None


def excess(counts: Sequence[int], me: int, slack: int = SLACK) -> int:
    """How many connections worker `me` holds beyond ceil(total / workers) + slack."""
    total = sum(counts)
    fair = -(-total // len(counts))
    return max(0, counts[me] - fair - slack)


class Balancer:
    """One worker's side: publishes its count, and how many connections it should shed."""

    __slots__ = ("connections", "counts", "me", "shed")

    def __init__(self, counts: Any, me: int) -> None:
        self.counts = counts
        self.me = me
        self.shed = 0
        # The server's set of open connections (Sanic's, one per worker), seen on the first
        # request: Sanic keeps it in its serve() call, not on the app.
        self.connections: set[Any] | None = None

    def note(self, request: Request) -> None:
        """Per request: learn the connection set once; close this connection when shedding."""
        stream = cast("Http", request.stream)
        if self.connections is None:
            self.connections = stream.protocol.connections
        if self.shed:
            if stream.keep_alive:
                self.shed -= 1
                stream.keep_alive = False

    def update(self) -> None:
        if self.connections is None:
            return
        self.counts[self.me] = len(self.connections)
        self.shed = excess(self.counts, self.me)
        if self.shed:
            log.debug(
                "worker %d sheds %d of %d connections", self.me, self.shed, self.counts[self.me]
            )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(BALANCE_INTERVAL)
            self.update()


def register(app: Sanic[Any, Any], settings: Settings) -> None:
    """Balance connections when several workers share the listener (CONNECTION_BALANCE)."""
    if not settings.CONNECTION_BALANCE or settings.WORKERS < 2:
        return
    workers = settings.WORKERS
    counts = share(app, "connection_counts", lambda: RawArray("q", workers))

    async def balance_connections(app: Sanic[Any, Any]) -> None:
        me = worker_index(workers)
        if not counts.across_workers or me is None:
            return  # a single-process server (tests): nothing to balance against
        balancer = Balancer(counts.memory, me)
        app.balancer = balancer
        try:
            await balancer.run()
        finally:
            # Stopping: this worker's connections no longer count against the others'.
            app.balancer = None
            balancer.counts[me] = 0

    run_in_background(app, "connection-balance", balance_connections)
