"""`TerminatingConnection` (app/db/pool.py): a statement abandoned by timeout or cancellation ends
its connection, at once, and the server is asked to stop the statement."""

from __future__ import annotations

import asyncio

import asyncpg

from app.db.pool import Database, TerminatingConnection
from tests.unit.test_pool_turns import bounded

SLEEP = "SELECT pg_sleep(30)"


async def _sleeping(conn: asyncpg.Connection) -> int:
    """Backends running the test's sleep right now."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'", SLEEP
    )
    return count


async def _until_no_sleeper(conn: asyncpg.Connection) -> None:
    while await _sleeping(conn):
        await asyncio.sleep(0.05)


def test_a_statement_that_times_out_ends_its_connection_and_the_server_stops_it(
    database_url: str,
) -> None:
    async def scenario() -> None:
        pool = await bounded(
            asyncpg.create_pool(
                database_url,
                min_size=1,
                max_size=1,
                command_timeout=0.3,
                connection_class=TerminatingConnection,
            )
        )
        db = Database(pool, acquire_timeout=1, command_timeout=0.3)
        watcher = await bounded(asyncpg.connect(database_url))
        try:
            before = await bounded(db.fetchval("SELECT pg_backend_pid()"))
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                await bounded(db.fetchval(SLEEP))
            except TimeoutError:
                pass
            else:
                raise AssertionError("the statement did not time out")
            assert loop.time() - started < 1.0
            # Not given back to be reused: the next call runs on a new connection...
            assert await bounded(db.fetchval("SELECT pg_backend_pid()")) != before
            # ...and the old backend was told to stop sleeping (in the background).
            await bounded(_until_no_sleeper(watcher))
        finally:
            await bounded(watcher.close())
            await bounded(pool.close())

    asyncio.run(scenario())


def test_a_cancelled_statement_ends_its_connection_and_the_pool_stays_whole(
    database_url: str,
) -> None:
    """A caller cancelled mid-statement (its client left, or an outer deadline such as
    readiness's): the connection ends, its turn and pool slot come back, nothing raises."""

    async def scenario() -> None:
        pool = await bounded(
            asyncpg.create_pool(
                database_url, min_size=1, max_size=1, connection_class=TerminatingConnection
            )
        )
        db = Database(pool, acquire_timeout=1)
        watcher = await bounded(asyncpg.connect(database_url))
        try:
            before = await bounded(db.fetchval("SELECT pg_backend_pid()"))
            for _ in range(3):
                task = asyncio.ensure_future(db.fetchval(SLEEP))
                await asyncio.sleep(0.2)
                task.cancel()
                done, _ = await asyncio.wait({task}, timeout=1)
                assert done and task.cancelled()
            assert db.queue.free == 1 and db.waiting == 0
            assert await bounded(db.fetchval("SELECT pg_backend_pid()")) != before
            await bounded(_until_no_sleeper(watcher))
        finally:
            await bounded(watcher.close())
            await bounded(pool.close())

    asyncio.run(scenario())


def test_a_turn_whose_wait_used_the_statements_time_gives_its_connection_back(
    database_url: str,
) -> None:
    """`held()` after a wait longer than DB_COMMAND_TIMEOUT (DB_ACQUIRE_TIMEOUT may be the
    longer): TimeoutError for that caller, and its turn and pool slot come back."""

    async def scenario() -> None:
        pool = await bounded(
            asyncpg.create_pool(
                database_url, min_size=1, max_size=1, connection_class=TerminatingConnection
            )
        )
        db = Database(pool, acquire_timeout=5, command_timeout=0.3)
        try:
            holder = await bounded(db.acquire())
            late = asyncio.ensure_future(db.held().__aenter__())
            await asyncio.sleep(0.5)  # the waiter's whole statement time goes by
            await db.release(holder)
            try:
                await bounded(late)
            except TimeoutError:
                pass
            else:
                raise AssertionError("a turn past its statement's time was served")
            assert await bounded(db.fetchval("SELECT 1")) == 1
        finally:
            await bounded(pool.close())

    asyncio.run(scenario())
