"""Natural batching: requests that find no pool connection free wait together.

A read or an insert that finds a connection free runs its own statement at once
(`Database`): light load sees no added latency. When none is free it would wait in the fair
queue anyway; instead it joins the batch of its statement that is waiting there. The batch
holds one place in the queue, taken when its first member arrived (so it keeps the turn of
its oldest member), and when that turn comes one statement answers every member that joined
meanwhile, up to `limit`; each member gets its own answer (its row or its own miss, its own
page, its own new row or its own conflict). Later arrivals start the next batch. Under load
the pool turn, the asyncpg call and the round trip are paid once per batch instead of once
per request.

Three kinds of statement batch:
- `KeyedReads`, rows by key: `WHERE key = ANY($1)`, rows handed back by key;
- `PageReads`, pages of one query shape: the members' parameters as arrays, `unnest` ... WITH
  ORDINALITY, and the page query once per member in a `LATERAL` subquery; rows handed back by
  their member's ordinal. Members asking for the same page share its row of parameters.
- `RowInserts`, one new row per member: one multi-row INSERT, committed once, in which a
  member whose row conflicts (a duplicate unique value) gets its own miss, and the others
  their rows. A batch that fails on the data (a constraint) retries each member alone on the
  same connection, so each gets its own statement's answer or error.

Every deadline stays: the batch's wait for its turn is the oldest member's (DB_ACQUIRE_TIMEOUT
from its arrival, so no member waits longer than it would have alone), and its statement gets
what is left of DB_COMMAND_TIMEOUT after that wait. A batch that fails (no turn in time, the
connection lost) fails each member with the error its own statement would have raised. A member
whose request is cancelled leaves the batch without touching the others.
(tests/unit/test_batch.py; the sizes reached are the `items_db_batch_size` histogram.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import asyncpg

if TYPE_CHECKING:
    from app.db.pool import Database

# Upper bounds of the batch-size histogram's buckets (a batch of one is a read that found
# no connection free and nobody to share a statement with).
SIZE_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128)
# What a batch serves: the histogram's label values.
KINDS = ("by_id", "page", "insert")


class BatchSizes:
    """How many batches of each size this process ran since the metrics flush last took them
    (app/ops/metrics.py), per kind of statement: a count per bucket of SIZE_BOUNDS and one
    past the last, plus the sum of the sizes."""

    __slots__ = ("counts", "totals")

    def __init__(self) -> None:
        self.counts = {kind: [0] * (len(SIZE_BOUNDS) + 1) for kind in KINDS}
        self.totals = dict.fromkeys(KINDS, 0)

    def add(self, kind: str, size: int) -> None:
        self.totals[kind] += size
        counts = self.counts[kind]
        for index, bound in enumerate(SIZE_BOUNDS):
            if size <= bound:
                counts[index] += 1
                return
        counts[-1] += 1

    def take(self, kind: str) -> tuple[list[int], int]:
        counts, total = self.counts[kind], self.totals[kind]
        self.counts[kind], self.totals[kind] = [0] * (len(SIZE_BOUNDS) + 1), 0
        return counts, total


# One per process (workers are spawned: each has its own).
BATCH_SIZES = BatchSizes()

Answer = TypeVar("Answer")
Member = tuple[Any, "asyncio.Future[Any]"]


class Batched(Generic[Answer]):
    """Runs `_alone` when a connection is free, else batches members for `_serve`."""

    __slots__ = ("db", "kind", "limit", "pending", "tasks")

    def __init__(self, db: Database, kind: str, limit: int) -> None:
        self.db = db
        self.kind = kind
        self.limit = limit
        # The batch still taking members (None: the next arrival starts one).
        self.pending: list[Member] | None = None
        # Running batches, kept until done (a task nobody references may be collected).
        self.tasks: set[asyncio.Task[None]] = set()

    async def _alone(self, question: Any) -> Answer:
        raise NotImplementedError

    async def _serve(
        self, conn: asyncpg.Connection, members: list[Member], timeout: float | None
    ) -> None:
        """Run one statement for `members` (each still waiting) and answer every one."""
        raise NotImplementedError

    async def _ask(self, question: Any) -> Answer:
        if self.db.queue.free or self.limit <= 1:
            return await self._alone(question)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        batch = self.pending
        if batch is None:
            batch = self.pending = []
            task = loop.create_task(self._run(batch))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        batch.append((question, future))
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
            members = [member for member in batch if not member[1].done()]
            if not members:
                return
            BATCH_SIZES.add(self.kind, len(members))
            await self._serve(conn, members, db.statement_timeout(waited_until))
        except BaseException as exc:
            _fail(batch, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            await db.release(conn)

    def _close(self, batch: list[Member]) -> None:
        """No more members for `batch`: its turn came (or never will)."""
        if self.pending is batch:
            self.pending = None


class KeyedReads(Batched["asyncpg.Record | None"]):
    """Rows of one table by key, through `db`: alone when a connection is free, else batched.

    `one_sql` reads one row by `$1`; `many_sql` reads the rows whose key is in the array `$1`,
    returning the key as column `key_column`.
    """

    __slots__ = ("key_column", "many_sql", "one_sql")

    def __init__(
        self, db: Database, one_sql: str, many_sql: str, key_column: str, limit: int
    ) -> None:
        super().__init__(db, "by_id", limit)
        self.one_sql = one_sql
        self.many_sql = many_sql
        self.key_column = key_column

    async def fetchrow(self, key: Any) -> asyncpg.Record | None:
        return await self._ask(key)

    async def _alone(self, question: Any) -> asyncpg.Record | None:
        return await self.db.fetchrow(self.one_sql, question)

    async def _serve(
        self, conn: asyncpg.Connection, members: list[Member], timeout: float | None
    ) -> None:
        keys = list({key for key, _ in members})
        rows = await conn.fetch(self.many_sql, keys, timeout=timeout)
        by_key = {row[self.key_column]: row for row in rows}
        for key, future in members:
            if not future.done():
                future.set_result(by_key.get(key))


MEMBER_COLUMN = "batch_member"


class PageReads(Batched[list[dict[str, Any]]]):
    """Pages of one query shape through `db`: alone when a connection is free, else batched.

    `one_sql` reads one page with parameters `$1..$n` of PostgreSQL types `types`, in the
    order of the columns `order` (e.g. `("price DESC", "id DESC")`). The batched statement
    runs `one_sql` once per member in a LATERAL subquery over the members' parameters (`$k`
    becomes column `pk` of the unnested arrays), and adds the member's ordinal as column
    MEMBER_COLUMN, which the rows handed back no longer carry. A page is a list of dicts
    (what a response serialises), in `one_sql`'s order; members asking for the same page
    share it, so it is read-only.
    """

    __slots__ = ("many_sql", "one_sql")

    def __init__(
        self, db: Database, one_sql: str, types: Sequence[str], order: Sequence[str], limit: int
    ) -> None:
        super().__init__(db, "page", limit)
        self.one_sql = one_sql
        self.many_sql = _lateral(one_sql, types, order)

    async def fetch(self, args: tuple[Hashable, ...]) -> list[dict[str, Any]]:
        return await self._ask(args)

    async def _alone(self, question: Any) -> list[dict[str, Any]]:
        return [dict(row) for row in await self.db.fetch(self.one_sql, *question)]

    async def _serve(
        self, conn: asyncpg.Connection, members: list[Member], timeout: float | None
    ) -> None:
        ordinals: dict[tuple[Hashable, ...], int] = {}
        for args, _ in members:
            ordinals.setdefault(args, len(ordinals) + 1)
        columns = [list(column) for column in zip(*ordinals, strict=True)]
        rows = await conn.fetch(self.many_sql, *columns, timeout=timeout)
        pages: dict[int, list[dict[str, Any]]] = {n: [] for n in ordinals.values()}
        for row in rows:
            page = dict(row)
            pages[page.pop(MEMBER_COLUMN)].append(page)
        for args, future in members:
            if not future.done():
                future.set_result(pages[ordinals[args]])


class RowInserts(Batched["asyncpg.Record | dict[str, Any] | None"]):
    """Rows inserted through `db`: alone when a connection is free, else batched.

    `one_sql` inserts the row of parameters `$1..$n` and returns it (a duplicate unique value
    raises, as ever). `many_sql` inserts the rows of the arrays `$1..$n`, one element per
    member in member order, and returns one row per member: its ordinal (from 1) as column
    MEMBER_COLUMN, then its inserted row, all NULL where the row conflicted and was not
    inserted (ON CONFLICT DO NOTHING); `key_column` is never NULL in an inserted row. Members
    get their row (a dict) or None for a conflict.
    """

    __slots__ = ("key_column", "many_sql", "one_sql")

    def __init__(
        self, db: Database, one_sql: str, many_sql: str, key_column: str, limit: int
    ) -> None:
        super().__init__(db, "insert", limit)
        self.one_sql = one_sql
        self.many_sql = many_sql
        self.key_column = key_column

    async def insert(self, args: tuple[Any, ...]) -> asyncpg.Record | dict[str, Any] | None:
        return await self._ask(args)

    async def _alone(self, question: Any) -> asyncpg.Record | None:
        return await self.db.fetchrow(self.one_sql, *question)

    async def _serve(
        self, conn: asyncpg.Connection, members: list[Member], timeout: float | None
    ) -> None:
        columns = [list(column) for column in zip(*(args for args, _ in members), strict=True)]
        try:
            rows = await conn.fetch(self.many_sql, *columns, timeout=timeout)
        except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError):
            # One member's data broke a rule: nothing was inserted. Each runs alone, for
            # its own answer or error (the batch's deadline still holds).
            await self._one_by_one(conn, members, timeout)
            return
        for row in rows:
            inserted = dict(row)
            future = members[inserted.pop(MEMBER_COLUMN) - 1][1]
            if not future.done():
                future.set_result(inserted if inserted[self.key_column] is not None else None)

    async def _one_by_one(
        self, conn: asyncpg.Connection, members: list[Member], timeout: float | None
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        for args, future in members:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise TimeoutError("the batch's statements used its time")
            try:
                row = await conn.fetchrow(self.one_sql, *args, timeout=left)
            except asyncpg.PostgresError as exc:  # the server's answer to this member's row
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(row)


def _lateral(one_sql: str, types: Sequence[str], order: Sequence[str]) -> str:
    """`one_sql` once per row of its parameters, unnested from one array per parameter."""
    inner = one_sql
    # Highest first, so that $1 is not replaced inside $10.
    for position in range(len(types), 0, -1):
        inner = inner.replace(f"${position}", f"b.p{position}")
    arrays = ", ".join(f"${n}::{kind}[]" for n, kind in enumerate(types, 1))
    names = ", ".join(f"p{n}" for n in range(1, len(types) + 1))
    # Each member's rows in the page's own order: a sort by the ordinal alone need not keep it.
    by = ", ".join(["b.n", *(f"page.{term}" for term in order)])
    return (
        f"SELECT b.n AS {MEMBER_COLUMN}, page.* "  # noqa: S608 (our own statement text)
        f"FROM unnest({arrays}) WITH ORDINALITY AS b({names}, n) "
        f"CROSS JOIN LATERAL ({inner}) AS page ORDER BY {by}"
    )


def _fail(batch: Sequence[Member], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
