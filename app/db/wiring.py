"""Database wiring: Tortoise and the asyncpg pool per worker, the ORM for a command, and direct
connections."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg
import tortoise.context
from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.context import TortoiseContext

from app.db import orm as fair_orm
from app.db.pool import Database, TerminatingConnection, TracedDatabase
from app.settings import Settings

if TYPE_CHECKING:
    from sanic import Sanic

log = logging.getLogger("app.db")

MODELS_APP = "models"


async def skip_reset_query(conn: asyncpg.Connection) -> None:
    """Release a pool connection without asyncpg's reset query.

    asyncpg's default runs `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`
    on every release: one more round trip per request. Request code never leaves session state
    behind (no SET, advisory locks, cursors or LISTEN on pool connections: LISTEN has its own
    connection), and asyncpg still rolls back an unfinished transaction before calling this.
    """
    del conn


def tortoise_config(settings: Settings, *, pool: bool = True) -> dict[str, Any]:
    """The Tortoise config for `settings.DATABASE_URL`, with the pool sized by settings.

    Without a pool (aerich, `migrate`) it goes to `settings.direct_database_url`, through
    Tortoise's own client: a migration's statements are not bounded by DB_COMMAND_TIMEOUT.
    """
    url = settings.DATABASE_URL if pool else settings.direct_database_url
    connection = expand_db_url(url)
    credentials = connection["credentials"]
    if settings.DB_PGBOUNCER and url == settings.DATABASE_URL:
        # Transaction pooling: a named prepared statement would be left on whichever server
        # connection parsed it ("prepared statement ... does not exist / already exists").
        credentials["statement_cache_size"] = 0
    if pool:
        # The ORM takes its connections through the worker's fair queue (app/db/orm.py).
        connection["engine"] = fair_orm.__name__
        credentials.update(
            minsize=settings.pool_min,
            maxsize=settings.DB_POOL_MAX,
            timeout=settings.DB_CONNECT_TIMEOUT,
            command_timeout=settings.DB_COMMAND_TIMEOUT,
            acquire_timeout=settings.DB_ACQUIRE_TIMEOUT,
            reset=skip_reset_query,
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
    # worker reads that table with plain SQL (app/ops/health.py).
    models = ["models"] if pool else ["models", "aerich.models"]
    return _config(connection, models)


def command_config(settings: Settings) -> dict[str, Any]:
    """The Tortoise config of a command's ORM work (`orm_session`): one connection to
    `settings.direct_database_url`, bounded like a worker's (app/db/orm.py)."""
    connection = expand_db_url(settings.direct_database_url)
    connection["engine"] = fair_orm.__name__
    connection["credentials"].update(
        minsize=1,
        maxsize=1,
        timeout=settings.DB_CONNECT_TIMEOUT,
        command_timeout=settings.DB_COMMAND_TIMEOUT,
        acquire_timeout=settings.DB_ACQUIRE_TIMEOUT,
        connection_class=TerminatingConnection,
    )
    if settings.DB_PGBOUNCER and settings.direct_database_url == settings.DATABASE_URL:
        connection["credentials"]["statement_cache_size"] = 0
    return _config(connection, ["models"])


def _config(connection: dict[str, Any], models: list[str]) -> dict[str, Any]:
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
            # Traced statements are not batched: each request's statement is its own span.
            else Database(
                app.ctx.pool,
                settings.DB_ACQUIRE_TIMEOUT,
                settings.DB_COMMAND_TIMEOUT,
                batch_limit=settings.DB_BATCH,
            )
        )
        # The ORM's queries (cold paths: app/auth/users.py) wait for the same turns as the SQL.
        orm_client(app.ctx.orm).share(app.ctx.db)

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
    client = orm_client(orm)
    await client.create_connection(with_db=True)
    return orm, client.pool


def orm_client(orm: TortoiseContext) -> fair_orm.FairQueueClient:
    """The ORM's client of a context opened with this module's config: what cold paths pass
    as `using_db` (a worker's: `orm_client(app.ctx.orm)`)."""
    client = orm.db()
    if not isinstance(client, fair_orm.FairQueueClient):
        raise TypeError(f"not this module's config: the ORM's client is {type(client).__name__}")
    return client


@asynccontextmanager
async def orm_session(settings: Settings) -> AsyncIterator[BaseDBAsyncClient]:
    """The ORM on one direct connection (DATABASE_DIRECT_URL when set), for a command's work
    (the user commands, the development user), current in this task until it closes.

    A context of its own, never the caller's current one (which `Tortoise.init` would re-use
    and close). The work still passes the client as `using_db`, as a worker's code does.
    """
    orm = TortoiseContext()
    with orm:
        await orm.init(config=command_config(settings))
        try:
            yield orm_client(orm)
        finally:
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


# Each worker's pool connections carry its pool's size in their application_name, so that a
# replica starting up can count other replicas' pools (on the same database) at what they may
# grow to, not at the few connections they happen to hold now.
POOL_APPLICATION_PREFIX = "items-pool max="


def pool_application_name(settings: Settings) -> str:
    """`items-pool max=<DB_POOL_MAX> <pid>@<host>`: unique per worker, within PostgreSQL's
    63 characters."""
    return f"{POOL_APPLICATION_PREFIX}{settings.DB_POOL_MAX} {os.getpid()}@{socket.gethostname()}"[
        :63
    ]
