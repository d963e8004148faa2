"""Migrations: aerich's, applied by `python -m app migrate` before the app serves."""

from __future__ import annotations

from pathlib import Path

from app.db.wiring import MODELS_APP, connect_direct, tortoise_config
from app.settings import Settings

MIGRATIONS_DIR = Path("migrations")


# Taken by `migrate` while it applies migrations, so replicas never migrate concurrently.
MIGRATION_LOCK_ID = 0x17E45


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
