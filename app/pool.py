"""The worker's database handle: the asyncpg pool, with a bounded wait for a connection.

`asyncpg.Pool.fetchrow` and friends wait forever for a free connection; a request that needs
the database must instead fail fast (503) when the pool is exhausted or the server is gone.

Waiters are also served first come, first served. asyncpg's pool hands connections out through
an `asyncio.Queue`, which is not fair: a released connection wakes the longest waiter, but a
request that arrives before that waiter runs takes the connection, and the waiter goes to the
back of the line. Under load (64 connections on a pool of 10 per worker) some requests lost
that race again and again: server-side p50 5.5 ms, p99 57 ms on GET /items/{id}, where a pool
large enough never to wait gave a p99 of 21 ms (issue 9). `Turns` (one turn per pool
connection, handed out in arrival order) now decides who goes next; the pool's queue behind it
then has a free connection for every turn holder.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer


class Turns:
    """At most `count` holders at once; the others wait in arrival order, each at most `timeout`
    seconds (then `acquire` raises TimeoutError).

    An `asyncio.Semaphore` (fair since Python 3.11.1) inside `asyncio.timeout` would do, but
    makes a Timeout object and a timer per wait: 4 % of a worker's time on GET /items/{id} with
    one worker, in a profile. Here all waits are equally long, so deadlines come in arrival
    order and one timer, armed for the oldest waiter, serves the whole line.
    """

    __slots__ = ("free", "timeout", "timer", "waiters")

    def __init__(self, count: int, timeout: float) -> None:
        self.free = count
        self.timeout = timeout
        # (deadline, future) per waiter, oldest first. A future here is pending, or done and
        # not yet removed: its task was cancelled while waiting (see `acquire`).
        self.waiters: deque[tuple[float, asyncio.Future[None]]] = deque()
        self.timer: asyncio.TimerHandle | None = None

    async def acquire(self) -> float | None:
        """Take a turn; returns the deadline the wait ran to, or None when there was no wait."""
        # `free` is only above zero when nobody waits: `release` hands a turn straight to the
        # oldest waiter, so a new arrival can never overtake the line.
        if self.free:
            self.free -= 1
            return None
        loop = asyncio.get_running_loop()
        entry = (loop.time() + self.timeout, loop.create_future())
        self.waiters.append(entry)
        if self.timer is None:
            self.timer = loop.call_at(entry[0], self._expire, loop)
        try:
            await entry[1]
            return entry[0]
        except asyncio.CancelledError:
            # The task was cancelled (the client went away). Leave the line, or, if the turn
            # was handed over just before, pass it on.
            waiter = entry[1]
            if waiter.cancelled():
                try:
                    self.waiters.remove(entry)
                except ValueError:
                    pass
            elif waiter.exception() is None:
                self.release()
            raise

    def release(self) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()[1]
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1

    @property
    def waiting(self) -> int:
        return len(self.waiters)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self.timer = None
        waiters = self.waiters
        now = loop.time()
        while waiters and waiters[0][0] <= now:
            waiter = waiters.popleft()[1]
            if not waiter.done():
                waiter.set_exception(TimeoutError("no database connection was free in time"))
        if waiters:
            self.timer = loop.call_at(waiters[0][0], self._expire, loop)


class Database:
    """`fetch` / `fetchrow` / `fetchval` / `execute` on a pool connection held for one call."""

    __slots__ = ("acquire_timeout", "pool", "turns")

    def __init__(self, pool: asyncpg.Pool, acquire_timeout: float) -> None:
        self.pool = pool
        self.acquire_timeout = acquire_timeout
        self.turns = Turns(pool.get_max_size(), acquire_timeout)

    @property
    def waiting(self) -> int:
        """Calls waiting for a connection now (a gauge, app/metrics.py)."""
        return self.turns.waiting

    async def acquire(self) -> asyncpg.Connection:
        """A pool connection within `acquire_timeout`, else TimeoutError; give it back with
        `release`."""
        deadline = await self.turns.acquire()
        try:
            if self.pool.get_idle_size():
                # No timer: asyncpg's acquire(timeout=) makes a task, asyncio.timeout a timer.
                return await self.pool.acquire()
            # A turn but no idle connection: the ORM's own queries (which do not take turns)
            # hold some, or one is being reopened. Bounded by what is left of the same wait.
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + self.acquire_timeout
            async with asyncio.timeout_at(deadline):
                return await self.pool.acquire()
        except BaseException:
            self.turns.release()
            raise

    async def release(self, conn: asyncpg.Connection) -> None:
        try:
            await self.pool.release(conn)
        finally:
            self.turns.release()

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await self.acquire()
        try:
            return await conn.fetch(query, *args)  # type: ignore[no-any-return]
        finally:
            await self.release(conn)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        conn = await self.acquire()
        try:
            return await conn.fetchrow(query, *args)
        finally:
            await self.release(conn)

    async def fetchval(self, query: str, *args: Any) -> Any:
        conn = await self.acquire()
        try:
            return await conn.fetchval(query, *args)
        finally:
            await self.release(conn)

    async def execute(self, query: str, *args: Any) -> str:
        conn = await self.acquire()
        try:
            return await conn.execute(query, *args)  # type: ignore[no-any-return]
        finally:
            await self.release(conn)


class TracedDatabase(Database):
    """A `Database` that wraps every query in a client span (used only when tracing is on)."""

    __slots__ = ("tracer",)

    def __init__(self, pool: asyncpg.Pool, acquire_timeout: float, tracer: Tracer) -> None:
        super().__init__(pool, acquire_timeout)
        self.tracer = tracer

    def _span(self, operation: str, query: str) -> Any:
        from opentelemetry.trace import SpanKind

        return self.tracer.start_as_current_span(
            f"db.{operation}",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system": "postgresql",
                "db.operation": operation,
                "db.statement": query,
            },
        )

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        with self._span("fetch", query):
            return await super().fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        with self._span("fetchrow", query):
            return await super().fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        with self._span("fetchval", query):
            return await super().fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        with self._span("execute", query):
            return await super().execute(query, *args)
