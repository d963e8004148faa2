"""The application factory."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
from sanic import Sanic
from sanic.config import Config
from sanic_ext import Extend

from app import db, health, items, middleware
from app.errors import ProblemHandler
from app.settings import Settings, load_settings

APP_NAME = "items"


@dataclass
class AppContext:
    """What every worker shares across requests, typed."""

    settings: Settings
    pool: asyncpg.Pool | None = field(default=None)


ItemsApp = Sanic[Config, AppContext]


def create_app(settings: Settings | None = None) -> ItemsApp:
    """Build the app for `settings` (read from the environment when not given)."""
    settings = settings or load_settings()
    app: ItemsApp = Sanic(APP_NAME, ctx=AppContext(settings), error_handler=ProblemHandler())
    app.config.update(
        REQUEST_MAX_SIZE=settings.REQUEST_MAX_SIZE,
        REQUEST_MAX_HEADER_SIZE=settings.REQUEST_MAX_HEADER_SIZE,
        REQUEST_TIMEOUT=settings.REQUEST_TIMEOUT,
        RESPONSE_TIMEOUT=settings.RESPONSE_TIMEOUT,
        KEEP_ALIVE_TIMEOUT=settings.KEEP_ALIVE_TIMEOUT,
        GRACEFUL_SHUTDOWN_TIMEOUT=settings.GRACEFUL_SHUTDOWN_TIMEOUT,
        ACCESS_LOG=settings.ACCESS_LOG,
        # Security: no framework banner, no auto-reload, no debug pages.
        MOTD=False,
        AUTO_RELOAD=False,
        # sanic-ext: Swagger UI as the only docs page, no CORS handling.
        OAS_UI_DEFAULT="swagger",
        OAS_UI_REDOC=False,
        CORS=False,
    )
    Extend(app)
    middleware.register(app)
    db.register(app)
    app.blueprint(health.bp)
    app.blueprint(items.bp)
    return app
