"""Create, migrate and seed the benchmark database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import urllib.parse
from pathlib import Path

import asyncpg

from harness import BASELINE_SCHEMA, REPO_ROOT, BenchError, log_tail
from harness.options import Options


def _with_database(url: str, database: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))


async def create_database(url: str) -> None:
    name = urllib.parse.urlsplit(url).path.lstrip("/")
    if not name:
        raise BenchError(f"--database-url has no database name: {url}")
    try:
        conn = await asyncpg.connect(_with_database(url, "postgres"))
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"cannot connect to PostgreSQL for {url}: {exc}") from exc
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            print(f"creating database {name}", flush=True)
            quoted = '"' + name.replace('"', '""') + '"'
            await conn.execute(f"CREATE DATABASE {quoted}")
    finally:
        await conn.close()


def migrate(opts: Options, log_dir: Path, url: str) -> None:
    """Create the schema in the database at `url`."""
    if opts.schema == "baseline":
        schema_sql = BASELINE_SCHEMA.read_text()

        async def apply() -> None:
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(schema_sql)
            finally:
                await conn.close()

        asyncio.run(apply())
        return
    env = {**os.environ, **opts.ours_env, "DATABASE_URL": url}
    log = log_dir / "migrate.log"
    with log.open("a") as out:
        result = subprocess.run(
            [opts.python, "-m", "app", "migrate"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        raise BenchError(
            f"`python -m app migrate` exited {result.returncode}; see {log}\n{log_tail(log)}"
        )


# Ids are 1..N because RESTART IDENTITY resets the sequence and one INSERT
# takes N consecutive values; seed() checks it anyway.
SEED_SQL = """
INSERT INTO items (name, description, sku, price, quantity, version, created_at, updated_at)
SELECT
    'item ' || g,
    'seeded item number ' || g,
    'SEED-' || g,
    ((g * 7919) % 1000000) / 100.0,
    g % 1000,
    1,
    now() - make_interval(secs => $1 - g),
    now() - make_interval(secs => $1 - g)
FROM generate_series(1, $1::bigint) AS g
"""


async def seed(url: str, n_items: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE items RESTART IDENTITY CASCADE")
        await conn.execute(SEED_SQL, n_items)
        await conn.execute("VACUUM ANALYZE items")
        # Flush the seed now, not as background writes during the first scenario.
        await conn.execute("CHECKPOINT")
        low, high, count = await conn.fetchrow("SELECT min(id), max(id), count(*) FROM items")
    finally:
        await conn.close()
    if (low, high, count) != (1, n_items, n_items):
        raise BenchError(f"seeded ids are {low}..{high} ({count} rows), expected 1..{n_items}")
