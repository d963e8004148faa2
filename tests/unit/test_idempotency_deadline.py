"""An idempotent create's transaction has one deadline, like one statement: its statements
together get DB_COMMAND_TIMEOUT, not each of them (app/items/idempotency.py), on a real pool
and real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg

from app.db.pool import Database, TerminatingConnection
from app.items.idempotency import StoredResponse, create_once
from tests.support import bounded

COMMAND_TIMEOUT = 1.0
STEP = 0.4  # each statement alone is well within the timeout; three of them are not


def test_a_slow_transaction_ends_at_the_one_deadline_and_commits_nothing(
    database_url: str,
) -> None:
    key = str(uuid.uuid4())

    async def create(conn: asyncpg.Connection) -> StoredResponse:
        for _ in range(3):
            await conn.execute(f"SELECT pg_sleep({STEP})")
        await conn.execute("INSERT INTO items (name, price) VALUES ('never', 1)")
        return StoredResponse(201, {}, b"{}", None)

    async def scenario() -> tuple[Any, float, int, Any]:
        pool = await asyncpg.create_pool(
            database_url, min_size=1, max_size=1, connection_class=TerminatingConnection
        )
        db = Database(pool, 1.0, command_timeout=COMMAND_TIMEOUT)
        try:
            started = time.monotonic()
            try:
                result: Any = await bounded(create_once(db, "test", key, "f", 60, create))
            except Exception as exc:
                result = exc
            took = time.monotonic() - started
            items = await bounded(db.fetchval("SELECT count(*) FROM items WHERE name = 'never'"))
            stored = await bounded(
                db.fetchval("SELECT status FROM idempotency_keys WHERE key = $1", key)
            )
            return result, took, items, stored
        finally:
            await pool.close()

    result, took, items, stored = asyncio.run(scenario())
    assert isinstance(result, (TimeoutError, asyncpg.InterfaceError)), result
    assert took < COMMAND_TIMEOUT + 0.5, f"the transaction ran {took:.2f} s"
    assert items == 0 and stored is None, "a transaction past its deadline left a write"
