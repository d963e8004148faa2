"""Natural batching of reads by key (app/db/batch.py), on a real pool and real PostgreSQL.

A pool of one connection, held by the test, makes every read find no connection free: they
join one batch, which runs when the test gives the connection back. Every await is bounded.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import asyncpg
import pytest

from app.db.batch import BATCH_SIZES, KeyedReads
from app.db.pool import Database
from tests.support import bounded

TABLE = f"batch_probe_{os.getpid()}"
ONE = f"SELECT k, v FROM {TABLE} WHERE k = $1"  # noqa: S608 (a test table)
MANY = f"SELECT k, v FROM {TABLE} WHERE k = ANY($1::int[])"  # noqa: S608
KEYS = range(1, 11)  # rows 1..10 exist


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def open_db(url: str, acquire_timeout: float = 2.0, limit: int = 64) -> Database:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    return Database(pool, acquire_timeout, command_timeout=5, batch_limit=limit)


def run(url: str, scenario: Any) -> Any:
    async def main() -> Any:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f"CREATE TABLE {TABLE} (k int PRIMARY KEY, v text)")
            await conn.executemany(
                f"INSERT INTO {TABLE} VALUES ($1, $2)",  # noqa: S608
                [(k, f"v{k}") for k in KEYS],
            )
            return await scenario()
        finally:
            await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
            await conn.close()

    return asyncio.run(main())


@pytest.fixture(autouse=True)
def no_sizes_left() -> None:
    BATCH_SIZES.take()


def test_a_read_that_finds_a_connection_free_runs_alone_at_once(database_url: str) -> None:
    async def scenario() -> tuple[Any, list[int]]:
        db = await open_db(database_url)
        try:
            reads = db.keyed_reads(ONE, MANY, "k")
            row = await bounded(reads.fetchrow(3))
            return row, BATCH_SIZES.take()[0]
        finally:
            await db.pool.close()

    row, batches = run(database_url, scenario)
    assert (row["k"], row["v"]) == (3, "v3")
    assert sum(batches) == 0, "a read on an idle pool waited for a batch"


def test_reads_waiting_together_each_get_their_own_row_or_their_own_miss(
    database_url: str,
) -> None:
    asked = [4, 99, 7, 4, 1, -5, 10]  # a duplicate, and two keys with no row

    async def scenario() -> tuple[list[Any], list[int], int]:
        db = await open_db(database_url)
        try:
            reads = db.keyed_reads(ONE, MANY, "k")
            held = await db.acquire()  # the pool's one connection: nothing is free now
            waiting = [asyncio.ensure_future(reads.fetchrow(k)) for k in asked]
            await settle()
            assert not any(w.done() for w in waiting)
            await db.release(held)
            rows = await bounded(asyncio.gather(*waiting))
            counts, total = BATCH_SIZES.take()
            return rows, counts, total
        finally:
            await db.pool.close()

    rows, counts, total = run(database_url, scenario)
    for key, row in zip(asked, rows, strict=True):
        if key in KEYS:
            assert (row["k"], row["v"]) == (key, f"v{key}")
        else:
            assert row is None, f"key {key} got someone else's row"
    assert sum(counts) == 1 and total == len(asked), "not one statement for the whole batch"


def test_a_batch_takes_at_most_its_limit_and_later_reads_form_the_next(database_url: str) -> None:
    async def scenario() -> tuple[list[Any], int, int]:
        db = await open_db(database_url, limit=3)
        try:
            reads = db.keyed_reads(ONE, MANY, "k")
            held = await db.acquire()
            waiting = [asyncio.ensure_future(reads.fetchrow(k)) for k in KEYS[:7]]
            await settle()
            await db.release(held)
            rows = await bounded(asyncio.gather(*waiting))
            counts, total = BATCH_SIZES.take()
            return rows, sum(counts), total
        finally:
            await db.pool.close()

    rows, batches, total = run(database_url, scenario)
    assert [row["k"] for row in rows] == list(KEYS[:7])
    assert (batches, total) == (3, 7)  # 3 + 3 + 1


def test_a_batch_with_no_turn_in_time_fails_each_member_with_the_timeout(
    database_url: str,
) -> None:
    async def scenario() -> list[Any]:
        db = await open_db(database_url, acquire_timeout=0.2)
        try:
            reads = db.keyed_reads(ONE, MANY, "k")
            held = await db.acquire()
            waiting = [asyncio.ensure_future(reads.fetchrow(k)) for k in (1, 2, 3)]
            results = await bounded(asyncio.gather(*waiting, return_exceptions=True))
            await db.release(held)
            # The pool is whole again: a read after the failure is served.
            results.append(await bounded(reads.fetchrow(2)))
            return results
        finally:
            await db.pool.close()

    *failed, after = run(database_url, scenario)
    assert all(isinstance(result, TimeoutError) for result in failed), failed
    assert after["k"] == 2


def test_a_failing_statement_fails_each_member_as_its_own_would_have(database_url: str) -> None:
    broken = f"SELECT k, nope FROM {TABLE} WHERE k = ANY($1::int[])"  # noqa: S608

    async def scenario() -> list[Any]:
        db = await open_db(database_url)
        try:
            reads = db.keyed_reads(ONE, broken, "k")
            held = await db.acquire()
            waiting = [asyncio.ensure_future(reads.fetchrow(k)) for k in (1, 2)]
            await settle()
            await db.release(held)
            results = await bounded(asyncio.gather(*waiting, return_exceptions=True))
            results.append(await bounded(db.fetchval("SELECT 1")))  # the pool is whole
            return results
        finally:
            await db.pool.close()

    *failed, after = run(database_url, scenario)
    assert all(isinstance(result, asyncpg.UndefinedColumnError) for result in failed), failed
    assert after == 1


def test_a_member_that_leaves_does_not_disturb_the_others(database_url: str) -> None:
    async def scenario() -> tuple[list[Any], bool]:
        db = await open_db(database_url)
        try:
            reads = db.keyed_reads(ONE, MANY, "k")
            held = await db.acquire()
            waiting = [asyncio.ensure_future(reads.fetchrow(k)) for k in (5, 6, 8)]
            await settle()
            waiting[1].cancel()  # its client went away
            await settle()
            await db.release(held)
            rows = await bounded(asyncio.gather(waiting[0], waiting[2]))
            return rows, waiting[1].cancelled()
        finally:
            await db.pool.close()

    rows, cancelled = run(database_url, scenario)
    assert cancelled
    assert [row["k"] for row in rows] == [5, 8]


def test_batching_off_runs_each_read_alone(database_url: str) -> None:
    async def scenario() -> tuple[list[Any], int]:
        db = await open_db(database_url, limit=0)
        try:
            reads = db.keyed_reads(ONE, MANY, "k")
            held = await db.acquire()
            waiting = [asyncio.ensure_future(reads.fetchrow(k)) for k in (1, 2, 3)]
            await settle()
            await db.release(held)
            rows = await bounded(asyncio.gather(*waiting))
            return rows, sum(BATCH_SIZES.take()[0])
        finally:
            await db.pool.close()

    rows, batches = run(database_url, scenario)
    assert [row["k"] for row in rows] == [1, 2, 3]
    assert batches == 0


def test_keyed_reads_are_one_per_statement_and_pool() -> None:
    class _Pool:
        def get_max_size(self) -> int:
            return 1

    db = Database(_Pool(), 1.0, batch_limit=8)  # type: ignore[arg-type]
    first = db.keyed_reads(ONE, MANY, "k")
    assert db.keyed_reads(ONE, MANY, "k") is first
    assert isinstance(first, KeyedReads) and first.limit == 8
