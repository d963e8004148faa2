"""Natural batching of reads by key: when no pool connection is free, wait together.

A request that needs one row by its key and finds a connection free runs its own statement at
once (`Database.fetchrow`): light load sees no added latency. When none is free it would wait
in the fair queue anyway; instead it joins the batch that is waiting there. The batch holds one
place in the queue, taken when its first member arrived (so it keeps the turn of its oldest
member), and when that turn comes, one statement (`WHERE key = ANY($1)`) reads the rows of every
member that joined meanwhile, up to `limit`; each member gets its own row, or None for its own
miss. Later arrivals start the next batch. Under load the pool turn, the asyncpg call and the
round trip are paid once per batch instead of once per request.

Every deadline stays: the batch's wait for its turn is the oldest member's (DB_ACQUIRE_TIMEOUT
from its arrival, so no member waits longer than it would have alone), and its statement gets
what is left of DB_COMMAND_TIMEOUT after that wait. A batch that fails (no turn in time, the
connection lost) fails each member with the error its own statement would have raised. A member
whose request is cancelled leaves the batch without touching the others.
(tests/unit/test_batch.py; the sizes reached are the `items_db_batch_size` histogram.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncpg

    from app.db.pool import Database

# Upper bounds of the batch-size histogram's buckets (a batch of one is a request that found
# no connection free and nobody to share a statement with).
SIZE_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128)


class BatchSizes:
    """How many batches of each size this process ran since the metrics flush last took them
    (app/ops/metrics.py): a count per bucket of SIZE_BOUNDS and one past the last, plus the
    sum of the sizes."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(SIZE_BOUNDS) + 1)
        self.total = 0

    def add(self, size: int) -> None:
        self.total += size
        for index, bound in enumerate(SIZE_BOUNDS):
            if size <= bound:
                self.counts[index] += 1
                return
        self.counts[-1] += 1

    def take(self) -> tuple[list[int], int]:
        counts, total = self.counts, self.total
        self.counts, self.total = [0] * (len(SIZE_BOUNDS) + 1), 0
        return counts, total


# One per process (workers are spawned: each has its own).
BATCH_SIZES = BatchSizes()

Member = tuple[Any, "asyncio.Future[asyncpg.Record | None]"]


class KeyedReads:
    """Rows of one table by key, through `db`: alone when a connection is free, else batched.

    `one_sql` reads one row by `$1`; `many_sql` reads the rows whose key is in the array `$1`,
    returning the key as column `key_column`.
    """

    __slots__ = ("db", "key_column", "limit", "many_sql", "one_sql", "pending", "tasks")

    def __init__(
        self, db: Database, one_sql: str, many_sql: str, key_column: str, limit: int
    ) -> None:
        self.db = db
        self.one_sql = one_sql
        self.many_sql = many_sql
        self.key_column = key_column
        self.limit = limit
        # The batch still taking members (None: the next arrival starts one).
        self.pending: list[Member] | None = None
        # Running batches, kept until done (a task nobody references may be collected).
        self.tasks: set[asyncio.Task[None]] = set()

    async def fetchrow(self, key: Any) -> asyncpg.Record | None:
        db = self.db
        if db.queue.free or self.limit <= 1:
            return await db.fetchrow(self.one_sql, key)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[asyncpg.Record | None] = loop.create_future()
        batch = self.pending
        if batch is None:
            batch = self.pending = []
            task = loop.create_task(self._run(batch))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        batch.append((key, future))
        if len(batch) >= self.limit:
            self.pending = None
        return await future

    async def _run(self, batch: list[Member]) -> None:
        db = self.db
        try:
            conn, waited_until = await db.take_connection()
        except BaseException as exc:
            self._close(batch)
            _fail(batch, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self._close(batch)
        try:
            members = [(key, future) for key, future in batch if not future.done()]
            if not members:
                return
            BATCH_SIZES.add(len(members))
            timeout = db.statement_timeout(waited_until)
            rows = await conn.fetch(
                self.many_sql, list({key for key, _ in members}), timeout=timeout
            )
        except BaseException as exc:
            _fail(batch, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            by_key = {row[self.key_column]: row for row in rows}
            for key, future in members:
                if not future.done():
                    future.set_result(by_key.get(key))
        finally:
            await db.release(conn)

    def _close(self, batch: list[Member]) -> None:
        """No more members for `batch`: its turn came (or never will)."""
        if self.pending is batch:
            self.pending = None


def _fail(batch: Sequence[Member], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
