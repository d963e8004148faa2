"""The start-up check that this replica's pools fit the database's `max_connections`."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg

from app.db.wiring import POOL_APPLICATION_PREFIX, connect_direct
from app.settings import Settings, SettingsError

log = logging.getLogger("app.db")


SQL_CLIENTS = """
SELECT application_name, client_addr::text, datname = current_database(), count(*)
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
GROUP BY 1, 2, 3
"""


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
