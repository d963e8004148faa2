"""Database wiring: Tortoise per worker, capacity check, migrations."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import tortoise.context
from tortoise import Tortoise
from tortoise.backends.base.config_generator import expand_db_url

from app.pool import Database, TracedDatabase
from app.settings import Settings, SettingsError

if TYPE_CHECKING:
    from sanic import Sanic

log = logging.getLogger("app.db")

MODELS_APP = "models"
MIGRATIONS_DIR = Path("migrations")
# Taken by `migrate` while it applies migrations, so replicas never migrate concurrently.
MIGRATION_LOCK_ID = 0x17E45


async def keep_session(conn: asyncpg.Connection) -> None:
    """Release a pool connection without asyncpg's reset query.

    asyncpg's default runs `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`
    on every release: one more round trip per request, measured at ~17 % of a worker's time
    on GET /items/{id}. Request code never leaves session state behind (no SET, advisory
    locks, cursors or LISTEN on pool connections: LISTEN has its own connection), and asyncpg
    still rolls back an unfinished transaction before calling this.
    """
    del conn


def tortoise_config(settings: Settings, *, pool: bool = True) -> dict[str, Any]:
    """The Tortoise config for `settings.DATABASE_URL`, with the pool sized by settings.

    Without a pool (aerich, `migrate`) it goes to `settings.direct_database_url`.
    """
    url = settings.DATABASE_URL if pool else settings.direct_database_url
    connection = expand_db_url(url)
    credentials = connection["credentials"]
    if settings.DB_PGBOUNCER and url == settings.DATABASE_URL:
        # Transaction pooling: a named prepared statement would be left on whichever server
        # connection parsed it ("prepared statement ... does not exist / already exists").
        credentials["statement_cache_size"] = 0
    if pool:
        credentials.update(
            minsize=settings.DB_POOL_MIN,
            maxsize=settings.DB_POOL_MAX,
            timeout=settings.DB_CONNECT_TIMEOUT,
            command_timeout=settings.DB_COMMAND_TIMEOUT,
            reset=keep_session,
        )
    else:
        credentials.update(minsize=1, maxsize=1, timeout=settings.DB_CONNECT_TIMEOUT)
    # aerich's own model (its bookkeeping table) only for migrating: importing it imports aerich,
    # whose dictdiffer loads numpy when installed (the bench extra: 17 MB of RSS per worker), and a
    # worker reads that table with plain SQL (app/health.py).
    models = ["models"] if pool else ["models", "aerich.models"]
    return {
        "connections": {"default": connection},
        "apps": {MODELS_APP: {"models": models, "default_connection": "default"}},
        "use_tz": True,
        "timezone": "UTC",
    }


def __getattr__(name: str) -> Any:
    # `aerich` reads its config from `app.db.AERICH_CONFIG` (pyproject.toml); build it on demand
    # so importing this module never reads the environment.
    if name == "AERICH_CONFIG":
        from app.settings import load_settings

        return tortoise_config(load_settings(), pool=False)
    raise AttributeError(name)


def register(app: Sanic[Any, Any]) -> None:
    """Open Tortoise and its pool in each worker; close them when the worker stops.

    Initialised the way `tortoise.contrib.sanic.register_tortoise` does it: with the global
    fallback on, so handler tasks (which do not inherit the listener's context) see the ORM.
    """

    @app.before_server_start
    async def open_database(app: Sanic[Any, Any]) -> None:
        settings: Settings = app.ctx.settings
        # One app per worker process in production; tests may hold several apps in one
        # process, and Tortoise allows only one global fallback, so later ones go without.
        app.ctx.orm = await Tortoise.init(
            config=tortoise_config(settings),
            _enable_global_fallback=tortoise.context.get_current_context() is None,
        )
        client = app.ctx.orm.connections.get("default")
        await client.create_connection(with_db=True)
        app.ctx.pool = client._pool
        tracer = getattr(app, "tracer", None)
        app.ctx.db = (
            TracedDatabase(app.ctx.pool, settings.DB_ACQUIRE_TIMEOUT, tracer)
            if tracer is not None
            else Database(app.ctx.pool, settings.DB_ACQUIRE_TIMEOUT)
        )

    @app.after_server_stop
    async def close_database(app: Sanic[Any, Any]) -> None:
        pool, app.ctx.pool, app.ctx.db = app.ctx.pool, None, None
        if pool is not None:
            # Close gracefully, but never let a wedged connection hold up shutdown.
            try:
                await asyncio.wait_for(pool.close(), timeout=5)
            except TimeoutError:
                log.warning("pool did not close in 5 s; terminating its connections")
                pool.terminate()
        orm, app.ctx.orm = app.ctx.orm, None
        if orm is not None:
            await orm.close_connections()


async def connect_direct(settings: Settings) -> asyncpg.Connection:
    """One connection to PostgreSQL itself (DATABASE_DIRECT_URL when set), outside the pool:
    admin work, and sessions transaction pooling cannot carry (LISTEN)."""
    url = settings.direct_database_url
    creds = expand_db_url(url)["credentials"]
    return await asyncpg.connect(
        host=creds.get("host"),
        port=creds.get("port"),
        user=creds.get("user"),
        password=creds.get("password"),
        database=creds.get("database"),
        timeout=settings.DB_CONNECT_TIMEOUT,
        statement_cache_size=0 if settings.DB_PGBOUNCER and url == settings.DATABASE_URL else 100,
    )


async def check_capacity(settings: Settings) -> None:
    """Refuse to start when every worker's full pool cannot fit in `max_connections`."""
    try:
        conn = await connect_direct(settings)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise SettingsError(f"DATABASE_URL: cannot connect: {exc}") from None
    try:
        max_connections = int(await conn.fetchval("SHOW max_connections"))
        reserved = int(await conn.fetchval("SHOW superuser_reserved_connections"))
        if await conn.fetchval("SELECT 1 FROM pg_settings WHERE name = 'reserved_connections'"):
            reserved += int(await conn.fetchval("SHOW reserved_connections"))
        in_use = int(await conn.fetchval("SELECT count(*) FROM pg_stat_activity"))
    finally:
        await conn.close()
    available = max_connections - reserved
    # Each worker's pool, plus its cache's LISTEN connection when the cache is on.
    listen = 1 if settings.CACHE_ENABLED else 0
    needed = settings.WORKERS * (settings.DB_POOL_MAX + listen)
    if settings.DB_PGBOUNCER:
        # The pools are PgBouncer's clients; its default_pool_size bounds their server
        # connections. Only the cache's LISTEN connections (one per worker) come here.
        needed = settings.WORKERS if settings.CACHE_ENABLED else 0
        log.info(
            "DB_PGBOUNCER: %d workers x %d pool connections go through PgBouncer",
            settings.WORKERS,
            settings.DB_POOL_MAX,
        )
    if needed > available:
        raise SettingsError(
            f"DB_POOL_MAX: {settings.WORKERS} workers x ({settings.DB_POOL_MAX} pool + {listen} "
            f"listen) connections = "
            f"{needed}, but the database allows {available} "
            f"(max_connections {max_connections} - {reserved} reserved); "
            "lower WORKERS or DB_POOL_MAX, or raise max_connections"
        )
    log.info(
        "database capacity: %d of %d connections for %d workers (%d in use now)",
        needed,
        available,
        settings.WORKERS,
        in_use,
    )


async def migrate(settings: Settings) -> list[str]:
    """Apply every aerich migration not yet applied; returns the ones applied now."""
    from aerich import Command

    lock = await connect_direct(settings)
    try:
        # Transaction-scoped, so it is also released correctly through PgBouncer's transaction
        # pooling (a session lock would stay behind on a pooled server connection).
        async with lock.transaction():
            await lock.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_ID)
            async with Command(
                tortoise_config=tortoise_config(settings, pool=False),
                app=MODELS_APP,
                location=str(MIGRATIONS_DIR),
            ) as command:
                applied: list[str] = await command.upgrade(run_in_transaction=True)
        return applied
    finally:
        await lock.close()
