"""The ORM's client (app/db/orm.py): its statements take the worker's turns and keep the same
deadlines as the SQL, on a real PostgreSQL.

Each scenario opens a worker's Tortoise and pool (`open_pool`) over one connection and hands the
client a `Database` of its own, as `app/db/wiring.py` does with the worker's. Every await is
bounded (`bounded`): a deadline that is never armed fails a test in seconds instead of hanging.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest

import models
from app.db.orm import FairQueueClient
from app.db.pool import Database
from app.db.wiring import open_pool, orm_client
from tests.support import app_settings, bounded

T = TypeVar("T")

ACQUIRE_TIMEOUT = 0.3
COMMAND_TIMEOUT = 0.6


@asynccontextmanager
async def one_connection(database_url: str) -> AsyncIterator[tuple[FairQueueClient, Database]]:
    """The ORM's client and the SQL's `Database`, sharing one pool connection and its turn."""
    settings = app_settings(
        database_url,
        DB_POOL_MIN=1,
        DB_POOL_MAX=1,
        DB_ACQUIRE_TIMEOUT=ACQUIRE_TIMEOUT,
        DB_COMMAND_TIMEOUT=COMMAND_TIMEOUT,
    )
    orm, pool = await open_pool(settings)
    try:
        client = orm_client(orm)
        db = Database(pool, ACQUIRE_TIMEOUT, COMMAND_TIMEOUT)
        client.share(db)
        yield client, db
    finally:
        await orm.close_connections()


def run(database_url: str, scenario: Callable[[FairQueueClient, Database], Awaitable[T]]) -> T:
    async def main() -> T:
        async with one_connection(database_url) as (client, db):
            return await bounded(scenario(client, db))

    return asyncio.run(main())


def test_an_orm_query_waits_for_a_turn_and_gives_up_at_the_acquire_timeout(
    database_url: str,
) -> None:
    async def scenario(client: FairQueueClient, db: Database) -> tuple[int, float]:
        held = await db.acquire()  # the only turn, as a request's SQL would hold it
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            query = asyncio.ensure_future(models.Item.all().using_db(client).count())
            await asyncio.sleep(0.05)
            waiting = db.waiting
            with pytest.raises(TimeoutError):
                await query
            return waiting, loop.time() - started
        finally:
            await db.release(held)

    waiting, seconds = run(database_url, scenario)
    assert waiting == 1, "the ORM's query did not wait in the fair queue"
    assert ACQUIRE_TIMEOUT - 0.05 < seconds < ACQUIRE_TIMEOUT + 0.5


def test_orm_queries_and_sql_get_the_connection_in_arrival_order(database_url: str) -> None:
    async def scenario(client: FairQueueClient, db: Database) -> list[str]:
        served: list[str] = []

        async def sql(name: str) -> None:
            await db.fetchval("SELECT 1")
            served.append(name)

        async def orm(name: str) -> None:
            await models.Item.all().using_db(client).count()
            served.append(name)

        held = await db.acquire()
        arrivals = []
        for name, call in [("orm-1", orm), ("sql-2", sql), ("orm-3", orm), ("sql-4", sql)]:
            arrivals.append(asyncio.ensure_future(call(name)))
            await asyncio.sleep(0.01)  # each in the line before the next arrives
        await db.release(held)
        await asyncio.gather(*arrivals)
        return served

    assert run(database_url, scenario) == ["orm-1", "sql-2", "orm-3", "sql-4"]


def test_an_overrunning_orm_statement_ends_at_the_command_timeout_and_frees_its_turn(
    database_url: str,
) -> None:
    async def scenario(client: FairQueueClient, db: Database) -> tuple[float, int, int]:
        loop = asyncio.get_running_loop()
        before = await db.fetchval("SELECT pg_backend_pid()")
        started = loop.time()
        with pytest.raises(TimeoutError):
            await client.execute_query("SELECT pg_sleep(30)")
        seconds = loop.time() - started
        # The turn is back and the stuck connection was ended: the next call gets a new one.
        after = await db.fetchval("SELECT pg_backend_pid()")
        return seconds, before, after

    seconds, before, after = run(database_url, scenario)
    assert COMMAND_TIMEOUT - 0.05 < seconds < COMMAND_TIMEOUT + 0.5
    assert after != before


def test_a_transaction_holds_one_turn_and_one_deadline_and_rolls_back_when_it_overruns(
    database_url: str,
) -> None:
    async def scenario(client: FairQueueClient, db: Database) -> tuple[float, int, int]:
        loop = asyncio.get_running_loop()
        free_inside = -1
        started = loop.time()
        with pytest.raises(TimeoutError):
            async with client._in_transaction() as conn:
                free_inside = db.queue.free
                await models.Item.create(name="never", price=1, using_db=conn)
                # Within the deadline on its own, past it after the statement before it.
                await conn.execute_query(f"SELECT pg_sleep({COMMAND_TIMEOUT * 0.9})")
                await conn.execute_query(f"SELECT pg_sleep({COMMAND_TIMEOUT * 0.9})")
        seconds = loop.time() - started
        kept = await db.fetchval("SELECT count(*) FROM items WHERE name = 'never'")
        return seconds, free_inside, kept

    seconds, free_inside, kept = run(database_url, scenario)
    assert free_inside == 0, "the transaction ran without its turn"
    assert COMMAND_TIMEOUT - 0.05 < seconds < COMMAND_TIMEOUT + 0.5
    assert kept == 0


def test_a_committed_transaction_gives_its_turn_back(database_url: str) -> None:
    async def scenario(client: FairQueueClient, db: Database) -> tuple[int, int]:
        async with client._in_transaction() as conn:
            item = await models.Item.create(name="kept", price=1, using_db=conn)
        try:
            return db.queue.free, await db.fetchval(
                "SELECT count(*) FROM items WHERE id = $1", item.id
            )
        finally:
            await db.execute("DELETE FROM items WHERE id = $1", item.id)

    assert run(database_url, scenario) == (1, 1)
