"""Command line: `python -m app serve | migrate`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from functools import partial

from app.settings import Settings, SettingsError, load_settings

log = logging.getLogger("app")


def _with_database(settings: Settings) -> Settings:
    """Point settings at the embedded PostgreSQL when DATABASE_URL is empty."""
    if not settings.embedded_db:
        return settings
    from app import embedded

    url = embedded.start(settings.DATA_DIR)
    return settings.model_copy(update={"DATABASE_URL": url})


def migrate(settings: Settings) -> int:
    from app.db import migrate as apply_migrations

    applied = asyncio.run(apply_migrations(_with_database(settings)))
    log.info("migrations applied: %s", ", ".join(applied) if applied else "none (at head)")
    return 0


def serve(settings: Settings) -> int:
    from sanic import Sanic
    from sanic.worker.loader import AppLoader

    from app.db import check_capacity
    from app.db import migrate as apply_migrations
    from app.server import create_app

    if settings.embedded_db:
        settings = _with_database(settings)
        # The embedded database is private to this process: bring it to head before serving.
        asyncio.run(apply_migrations(settings))
    asyncio.run(check_capacity(settings))

    loader = AppLoader(factory=partial(create_app, settings))
    app = loader.load()
    app.prepare(
        host=settings.HOST,
        port=settings.PORT,
        workers=settings.WORKERS,
        access_log=settings.ACCESS_LOG,
        single_process=False,
        auto_reload=False,
        motd=False,
    )
    Sanic.serve(primary=app, app_loader=loader)
    return 0


COMMANDS = {"serve": serve, "migrate": migrate}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="The items service.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="serve the API with WORKERS worker processes")
    sub.add_parser("migrate", help="apply database migrations, then exit")
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    logging.basicConfig(
        level=settings.LOG_LEVEL, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return COMMANDS[args.command](settings)
    except SettingsError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
