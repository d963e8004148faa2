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
    BATCH_SIZES.take("by_id")
    BATCH_SIZES.take("page")


def test_a_read_that_finds_a_connection_free_runs_alone_at_once(database_url: str) -> None:
    async def scenario() -> tuple[Any, list[int]]:
        db = await open_db(database_url)
        try:
            reads = db.keyed_reads(ONE, MANY, "k")
            row = await bounded(reads.fetchrow(3))
            return row, BATCH_SIZES.take("by_id")[0]
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
            counts, total = BATCH_SIZES.take("by_id")
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
            counts, total = BATCH_SIZES.take("by_id")
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
            return rows, sum(BATCH_SIZES.take("by_id")[0])
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


# Pages of the probe table: rows after a key, in either direction, with a page size.
PAGE_UP = f"SELECT k, v FROM {TABLE} WHERE k > $1::int ORDER BY k LIMIT $2::int"  # noqa: S608
PAGE_DOWN = f"SELECT k, v FROM {TABLE} WHERE k < $1::int ORDER BY k DESC LIMIT $2::int"  # noqa: S608


def alone(sql: str, after: int, size: int) -> list[int]:
    """The keys the page holds (what the statement alone answers)."""
    if sql == PAGE_UP:
        return [k for k in KEYS if k > after][:size]
    return sorted((k for k in KEYS if k < after), reverse=True)[:size]


def test_pages_waiting_together_each_get_their_own_page_in_its_own_order(
    database_url: str,
) -> None:
    asked = [(0, 3), (5, 2), (0, 3), (9, 4), (10, 5), (3, 1), (0, 10)]  # a duplicate, an empty

    async def scenario() -> tuple[list[Any], list[Any], list[int], int]:
        db = await open_db(database_url)
        try:
            up = db.page_reads(PAGE_UP, ("int", "int"), ("k",))
            down = db.page_reads(PAGE_DOWN, ("int", "int"), ("k DESC",))
            held = await db.acquire()
            ups = [asyncio.ensure_future(up.fetch(args)) for args in asked]
            downs = [asyncio.ensure_future(down.fetch(args)) for args in asked]
            await settle()
            assert not any(w.done() for w in ups + downs)
            await db.release(held)
            pages_up = await bounded(asyncio.gather(*ups))
            pages_down = await bounded(asyncio.gather(*downs))
            counts, total = BATCH_SIZES.take("page")
            return pages_up, pages_down, counts, total
        finally:
            await db.pool.close()

    pages_up, pages_down, counts, total = run(database_url, scenario)
    for (after, size), page in zip(asked, pages_up, strict=True):
        assert [row["k"] for row in page] == alone(PAGE_UP, after, size), (after, size)
        assert all(row == {"k": row["k"], "v": f"v{row['k']}"} for row in page)
    for (after, size), page in zip(asked, pages_down, strict=True):
        assert [row["k"] for row in page] == alone(PAGE_DOWN, after, size), (after, size)
    # One statement per query shape, each serving all of its shape's members.
    assert sum(counts) == 2 and total == 2 * len(asked)


def test_a_page_read_on_an_idle_pool_runs_alone_and_equals_the_batched_one(
    database_url: str,
) -> None:
    async def scenario() -> tuple[Any, Any, list[int]]:
        db = await open_db(database_url)
        try:
            pages = db.page_reads(PAGE_DOWN, ("int", "int"), ("k DESC",))
            page = await bounded(pages.fetch((8, 3)))
            unbatched = BATCH_SIZES.take("page")[0]
            held = await db.acquire()
            batched = asyncio.ensure_future(pages.fetch((8, 3)))
            await settle()
            await db.release(held)
            return page, await bounded(batched), unbatched
        finally:
            await db.pool.close()

    page, batched, unbatched = run(database_url, scenario)
    assert sum(unbatched) == 0, "a page read on an idle pool waited for a batch"
    assert page == batched == [{"k": 7, "v": "v7"}, {"k": 6, "v": "v6"}, {"k": 5, "v": "v5"}]


def test_a_failing_page_batch_fails_each_member(database_url: str) -> None:
    async def scenario() -> list[Any]:
        db = await open_db(database_url, acquire_timeout=0.2)
        try:
            pages = db.page_reads(PAGE_UP, ("int", "int"), ("k",))
            held = await db.acquire()
            waiting = [asyncio.ensure_future(pages.fetch((k, 2))) for k in (1, 2)]
            results = await bounded(asyncio.gather(*waiting, return_exceptions=True))
            await db.release(held)
            results.append(await bounded(pages.fetch((1, 2))))
            return results
        finally:
            await db.pool.close()

    *failed, after = run(database_url, scenario)
    assert all(isinstance(result, TimeoutError) for result in failed), failed
    assert [row["k"] for row in after] == [2, 3]


INSERTS = f"insert_probe_{os.getpid()}"
INSERT_ONE = f"INSERT INTO {INSERTS} (u, v) VALUES ($1, $2) RETURNING id, u, v"  # noqa: S608
INSERT_MANY = (
    f"WITH m AS MATERIALIZED (SELECT nextval(pg_get_serial_sequence('{INSERTS}', 'id')) AS id, "  # noqa: S608
    "m.* FROM unnest($1::text[], $2::int[]) WITH ORDINALITY AS m(u, v, n)), "
    f"inserted AS (INSERT INTO {INSERTS} (id, u, v) SELECT id, u, v FROM m ORDER BY n "
    "ON CONFLICT (u) DO NOTHING RETURNING id, u, v) "
    "SELECT m.n AS batch_member, inserted.* FROM m LEFT JOIN inserted ON inserted.id = m.id"
)


def run_inserts(url: str, asked: list[tuple[str | None, int]]) -> tuple[list[Any], Any, Any]:
    """Insert `asked` while the pool's one connection is held, so they wait together; the
    results, the batch sizes and the table afterwards."""

    async def scenario() -> tuple[list[Any], Any, Any]:
        setup = await asyncpg.connect(url)
        await setup.execute(
            f"CREATE TABLE {INSERTS} (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
            "u text UNIQUE, v int NOT NULL CHECK (v >= 0))"
        )
        await setup.execute(f"INSERT INTO {INSERTS} (u, v) VALUES ('taken', 0)")  # noqa: S608
        db = await open_db(url)
        try:
            writes = db.row_inserts(INSERT_ONE, INSERT_MANY, "id")
            held = await db.acquire()
            waiting = [asyncio.ensure_future(writes.insert(args)) for args in asked]
            await settle()
            assert not any(w.done() for w in waiting)
            await db.release(held)
            results = await bounded(asyncio.gather(*waiting, return_exceptions=True))
            table = await setup.fetch(f"SELECT u, v FROM {INSERTS} WHERE id > 1 ORDER BY id")  # noqa: S608
            return results, BATCH_SIZES.take("insert"), table
        finally:
            await db.pool.close()
            await setup.execute(f"DROP TABLE IF EXISTS {INSERTS}")
            await setup.close()

    return asyncio.run(scenario())


def test_inserts_waiting_together_are_one_statement_and_each_gets_its_own_row(
    database_url: str,
) -> None:
    # Two free values, one taken, one value asked twice, two without a value.
    asked = [("a", 1), (None, 2), ("taken", 3), ("b", 4), ("b", 5), (None, 6)]
    results, (counts, total), table = run_inserts(database_url, asked)
    assert sum(counts) == 1 and total == len(asked), "not one statement for the batch"
    expected = {0: ("a", 1), 1: (None, 2), 3: ("b", 4), 5: (None, 6)}
    for index, result in enumerate(results):
        if index in expected:
            assert (result["u"], result["v"]) == expected[index], (index, result)
        else:
            assert result is None, f"member {index} got a row for a taken value"
    assert [(row["u"], row["v"]) for row in table] == list(expected.values())


def test_a_row_that_breaks_a_rule_fails_alone_and_the_others_are_inserted(
    database_url: str,
) -> None:
    asked = [("c", 1), ("d", -1), ("taken", 2), (None, 3)]
    results, (counts, total), table = run_inserts(database_url, asked)
    assert (sum(counts), total) == (1, len(asked))
    assert (results[0]["u"], results[3]["v"]) == ("c", 3)
    assert isinstance(results[1], asyncpg.CheckViolationError), results[1]
    assert isinstance(results[2], asyncpg.UniqueViolationError), results[2]  # alone, it raises
    assert [(row["u"], row["v"]) for row in table] == [("c", 1), (None, 3)]
