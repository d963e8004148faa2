"""Database wiring: Tortoise per worker, capacity check, migrations."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import tortoise.context
from tortoise import Tortoise
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.context import TortoiseContext

from app.pool import Database, TerminatingConnection, TracedDatabase
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
            connection_class=TerminatingConnection,
            # A connection lives until it fails (TerminatingConnection ends a broken one). asyncpg's
            # own recycling, a close after 50,000 queries and after 300 s idle, runs inside the
            # request that releases or next acquires the connection: that request waits for the
            # server to see the close, then for a new backend to start, and every connection of a
            # busy pool reaches 50,000 within the same seconds. Nothing here needs recycling: the
            # statements are a small fixed set, and the capacity check already counts each pool
            # at DB_POOL_MAX, so closing idle ones frees nothing another client could use.
            # tests/unit/test_db_config.py keeps this.
            max_queries=math.inf,
            max_inactive_connection_lifetime=0,
            # Names the pool's size to other replicas' start-up check (`check_capacity`).
            application_name=pool_application_name(settings),
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
        app.ctx.orm, app.ctx.pool = await open_pool(
            settings, global_fallback=tortoise.context.get_current_context() is None
        )
        tracer = getattr(app, "tracer", None)
        app.ctx.db = (
            TracedDatabase(
                app.ctx.pool, settings.DB_ACQUIRE_TIMEOUT, tracer, settings.DB_COMMAND_TIMEOUT
            )
            if tracer is not None
            else Database(app.ctx.pool, settings.DB_ACQUIRE_TIMEOUT, settings.DB_COMMAND_TIMEOUT)
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


async def open_pool(
    settings: Settings, *, global_fallback: bool = False
) -> tuple[TortoiseContext, asyncpg.Pool]:
    """Tortoise and the worker's asyncpg pool, opened the way a worker serves with them."""
    orm = await Tortoise.init(
        config=tortoise_config(settings), _enable_global_fallback=global_fallback
    )
    client = orm.connections.get("default")
    await client.create_connection(with_db=True)
    return orm, client._pool


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


# Each worker's pool connections carry its pool's size in their application_name, so that a
# replica starting up can count other replicas' pools (on the same database) at what they may
# grow to, not at the few connections they happen to hold now.
POOL_APPLICATION_PREFIX = "items-pool max="
SQL_CLIENTS = """
SELECT application_name, client_addr::text, datname = current_database(), count(*)
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
GROUP BY 1, 2, 3
"""


def pool_application_name(settings: Settings) -> str:
    """`items-pool max=<DB_POOL_MAX> <pid>@<host>`: unique per worker, within PostgreSQL's
    63 characters."""
    return f"{POOL_APPLICATION_PREFIX}{settings.DB_POOL_MAX} {os.getpid()}@{socket.gethostname()}"[
        :63
    ]


def _pool_claim(application_name: str | None) -> int | None:
    """The DB_POOL_MAX a pool connection's application_name declares, if it is one of ours."""
    if not application_name or not application_name.startswith(POOL_APPLICATION_PREFIX):
        return None
    size = application_name[len(POOL_APPLICATION_PREFIX) :].split(" ", 1)[0]
    return int(size) if size.isdigit() else None


@dataclass(frozen=True)
class Capacity:
    """The start-up arithmetic of `check_capacity`."""

    available: int  # max_connections minus the reserved slots
    needed: int  # this replica: WORKERS x (DB_POOL_MAX + its LISTEN connection)
    other_pools: int  # other replicas' worker pools on this database, each at its maximum
    pool_count: int  # how many such pools
    other_clients: int  # every other connection to this database, as many as are open now
    elsewhere: int  # connections to the server's other databases, as many as are open now

    @property
    def left(self) -> int:
        """What this database's clients leave free once this replica's pools are full."""
        return self.available - self.needed - self.other_pools - self.other_clients


Clients = list[tuple[str | None, str | None, bool, int]]


def count_capacity(available: int, needed: int, clients: Clients, pgbouncer: bool) -> Capacity:
    """Add up what others hold: a replica's pool (by its application_name, on this database)
    at the larger of its declared size and what it has open, anything else at what it has
    open. Behind PgBouncer the server connections carry whichever client last used them, so
    they count as they are."""
    other_pools = pool_count = other_clients = elsewhere = 0
    for application_name, _client, same_database, connections in clients:
        if not same_database:
            elsewhere += connections
            continue
        claim = None if pgbouncer else _pool_claim(application_name)
        if claim is None:
            other_clients += connections
        else:
            other_pools += max(claim, connections)
            pool_count += 1
    return Capacity(available, needed, other_pools, pool_count, other_clients, elsewhere)


async def check_capacity(settings: Settings) -> None:
    """Refuse to start when this replica's pools, at their full size, do not fit beside what
    this database's other clients hold (other replicas' pools counted at their full size).

    Connections to the server's other databases belong to other tenants and come and go: they
    are reported, and warned about when they leave too little, but do not stop start-up. Not
    counted at all: a replica that has not started yet (the sum over every replica at its
    maximum is the operator's, docs/scaling.md), and a pool with DB_POOL_MIN=0 that has no
    connection open.
    """
    try:
        conn = await connect_direct(settings)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise SettingsError(f"DATABASE_URL: cannot connect: {exc}") from None
    try:
        max_connections = int(await conn.fetchval("SHOW max_connections"))
        reserved = int(await conn.fetchval("SHOW superuser_reserved_connections"))
        if await conn.fetchval("SELECT 1 FROM pg_settings WHERE name = 'reserved_connections'"):
            reserved += int(await conn.fetchval("SHOW reserved_connections"))
        clients = [(r[0], r[1], bool(r[2]), int(r[3])) for r in await conn.fetch(SQL_CLIENTS)]
    finally:
        await conn.close()
    # Each worker's pool, plus its cache's LISTEN connection when the cache is on.
    listen = 1 if settings.CACHE_ENABLED else 0
    needed = settings.WORKERS * (settings.DB_POOL_MAX + listen)
    shape = f"({settings.DB_POOL_MAX} pool + {listen} listen)"
    if settings.DB_PGBOUNCER:
        # The pools are PgBouncer's clients; its default_pool_size bounds their server
        # connections. Only the cache's LISTEN connections (one per worker) come here.
        needed = settings.WORKERS if settings.CACHE_ENABLED else 0
        shape = f"{listen} listen"
        log.info(
            "DB_PGBOUNCER: %d workers x %d pool connections go through PgBouncer",
            settings.WORKERS,
            settings.DB_POOL_MAX,
        )
    capacity = count_capacity(max_connections - reserved, needed, clients, settings.DB_PGBOUNCER)
    shares = (
        f"this replica needs {needed} ({settings.WORKERS} workers x {shape}); on this database "
        f"others hold {capacity.other_pools + capacity.other_clients} ({capacity.pool_count} "
        f"worker pools at their DB_POOL_MAX: {capacity.other_pools}; other connections open "
        f"now: {capacity.other_clients})"
    )
    limit = (
        f"the database allows {capacity.available} "
        f"(max_connections {max_connections} - {reserved} reserved)"
    )
    if capacity.left < 0:
        raise SettingsError(
            f"DB_POOL_MAX: {shares}, but {limit}; lower WORKERS or DB_POOL_MAX, run fewer "
            "replicas, or raise max_connections"
        )
    log.info(
        "database capacity: %s; %s, %d left; %d connections to other databases now; replicas "
        "not started yet are not counted",
        shares,
        limit,
        capacity.left,
        capacity.elsewhere,
    )
    if capacity.elsewhere > capacity.left:
        log.warning(
            "database capacity: %d connections to other databases leave %d of this replica's "
            "%d; its pools may not reach DB_POOL_MAX while they stay",
            capacity.elsewhere,
            max(0, capacity.left + capacity.needed - capacity.elsewhere),
            capacity.needed,
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
