"""The worker's database handle: the asyncpg pool, with a bounded wait for a connection.

`asyncpg.Pool.fetchrow` and friends wait forever for a free connection; a request that needs
the database must instead fail fast (503) when the pool is exhausted or the server is gone.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer


class Database:
    """`fetch` / `fetchrow` / `fetchval` / `execute` on a pool connection held for one call."""

    __slots__ = ("acquire_timeout", "pool", "waiting")

    def __init__(self, pool: asyncpg.Pool, acquire_timeout: float) -> None:
        self.pool = pool
        self.acquire_timeout = acquire_timeout
        # Calls waiting for a connection now; sampled into a gauge, so a plain int suffices.
        self.waiting = 0

    async def acquire(self) -> asyncpg.Connection:
        """A pool connection within `acquire_timeout`, else TimeoutError; give it back with
        `release`."""
        if self.pool.get_idle_size():
            # An idle open connection is handed over without waiting: skip the timer, which
            # costs more than the rest of the acquire (asyncpg's acquire(timeout=) makes a task).
            return await self.pool.acquire()
        self.waiting += 1
        try:
            async with asyncio.timeout(self.acquire_timeout):
                return await self.pool.acquire()
        finally:
            self.waiting -= 1

    async def release(self, conn: asyncpg.Connection) -> None:
        await self.pool.release(conn)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await self.acquire()
        try:
            return await conn.fetch(query, *args)  # type: ignore[no-any-return]
        finally:
            await self.pool.release(conn)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        conn = await self.acquire()
        try:
            return await conn.fetchrow(query, *args)
        finally:
            await self.pool.release(conn)

    async def fetchval(self, query: str, *args: Any) -> Any:
        conn = await self.acquire()
        try:
            return await conn.fetchval(query, *args)
        finally:
            await self.pool.release(conn)

    async def execute(self, query: str, *args: Any) -> str:
        conn = await self.acquire()
        try:
            return await conn.execute(query, *args)  # type: ignore[no-any-return]
        finally:
            await self.pool.release(conn)


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
