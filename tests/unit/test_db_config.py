"""What a worker's ORM set-up imports (app/db.tortoise_config)."""

from __future__ import annotations

import subprocess
import sys

WORKER_INIT = """
import asyncio, sys
from tortoise import Tortoise
from app.db.wiring import tortoise_config
from app.settings import load_settings

async def main():
    settings = load_settings(env_file=None, DATABASE_URL=sys.argv[1])
    await Tortoise.init(config=tortoise_config(settings))
    await Tortoise.close_connections()

asyncio.run(main())
print(sorted(m for m in sys.modules if m.split(".")[0] in ("aerich", "dictdiffer", "numpy")))
"""


def test_serving_never_imports_aerich(database_url: str) -> None:
    """aerich's model is only for migrating: importing it brings dictdiffer, which loads numpy
    when installed (the bench extra), 15 MB of RSS per worker."""
    result = subprocess.run(
        [sys.executable, "-c", WORKER_INIT, database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_migrating_still_knows_aerichs_model() -> None:
    from app.db.wiring import tortoise_config
    from app.settings import load_settings

    settings = load_settings(env_file=None, DATABASE_URL="postgres://u@h/db")
    assert tortoise_config(settings, pool=False)["apps"]["models"]["models"] == [
        "models",
        "aerich.models",
    ]


def test_other_replicas_pools_count_at_their_size_and_other_databases_only_as_they_are() -> None:
    from app.db.capacity import count_capacity
    from app.db.wiring import pool_application_name
    from app.settings import load_settings

    ours = pool_application_name(load_settings(env_file=None, DATABASE_URL="postgres://u@h/db"))
    assert ours.startswith("items-pool max=10 ") and len(ours) <= 63
    clients = [
        ("items-pool max=10 101@a", "10.0.0.1", True, 2),  # a worker of another replica
        ("items-pool max=10 102@a", "10.0.0.1", True, 12),  # grown past its declared size
        ("psql", None, True, 1),
        ("items-pool max=10 201@b", "10.0.0.2", False, 1),  # another database's pool
        ("items-pool max=x 301@c", "10.0.0.3", True, 1),  # not a size: counted as it is
    ]
    capacity = count_capacity(97, 22, clients, pgbouncer=False)
    assert (capacity.other_pools, capacity.pool_count) == (10 + 12, 2)
    assert (capacity.other_clients, capacity.elsewhere) == (1 + 1, 1)
    assert capacity.left == 97 - 22 - 22 - 2
    # Behind PgBouncer server connections carry whichever client used them last.
    behind = count_capacity(97, 2, clients, pgbouncer=True)
    assert (behind.other_pools, behind.other_clients) == (0, 2 + 12 + 1 + 1)


# asyncpg's default lifetime for a pool connection: closed by the release after this many queries.
ASYNCPG_MAX_QUERIES = 50_000


def test_a_pool_connection_is_never_closed_or_reopened_inside_a_request(database_url: str) -> None:
    """asyncpg closes a pool connection in the release after its 50,000th query and when it has
    been idle 300 s; the request that releases or next acquires it then waits for the close and
    a new backend. With every connection of a busy pool reaching 50,000 in the same seconds
    that was a burst of slow requests. The worker's pool keeps its connections until
    they fail."""
    import asyncio

    from app.db.pool import Database
    from app.db.wiring import open_pool
    from tests.support import app_settings

    async def scenario() -> tuple[int, int, list[float]]:
        settings = app_settings(database_url, DB_POOL_MIN=1, DB_POOL_MAX=1)
        orm, pool = await open_pool(settings)
        try:
            db = Database(pool, acquire_timeout=5, command_timeout=5)
            first = await db.fetchval("SELECT pg_backend_pid()")
            conn = await db.acquire()
            try:
                for _ in range(ASYNCPG_MAX_QUERIES):
                    await conn.execute("SELECT 1")
            finally:
                await db.release(conn)
            for _ in range(3):  # the releases past asyncpg's limit
                await db.fetchval("SELECT 1")
            last = await db.fetchval("SELECT pg_backend_pid()")
            idle = [holder._max_inactive_time for holder in pool._holders]
            return first, last, idle
        finally:
            await orm.close_connections()

    first, last, idle_lifetimes = asyncio.run(scenario())
    assert last == first, "the pool replaced its connection after 50,000 queries"
    assert idle_lifetimes == [0], "the pool closes idle connections (a request then reconnects)"


def test_a_worker_opens_its_whole_pool_before_it_serves_unless_told_otherwise(
    database_url: str,
) -> None:
    """No request waits for a connection to be opened while the pool grows: by default the
    pool opens DB_POOL_MAX connections at start; DB_POOL_MIN opens fewer."""
    import asyncio

    from app.db.wiring import open_pool
    from app.settings import load_settings

    async def opened(**overrides: object) -> int:
        settings = load_settings(
            env_file=None, DATABASE_URL=database_url, DB_POOL_MAX=3, **overrides
        )
        orm, pool = await open_pool(settings)
        try:
            return int(pool.get_size())
        finally:
            await orm.close_connections()

    assert asyncio.run(opened()) == 3
    assert asyncio.run(opened(DB_POOL_MIN=1)) == 1
