"""The application factory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg
from sanic_ext import Extend
from sanic_ext.extensions.http.extension import HTTPExtension
from sanic_ext.extensions.openapi.extension import OpenAPIExtension
from tortoise.context import TortoiseContext

from app import (
    auth,
    balance,
    cache,
    db,
    health,
    idempotency,
    items,
    lifecycle,
    logs,
    metrics,
    middleware,
    ops_gauges,
    ratelimit,
    swagger_ui,
    tracing,
)
from app.bodies import JsonRequest
from app.errors import ProblemHandler
from app.observability import ObservedSanic
from app.pool import Database
from app.settings import Settings, load_settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

APP_NAME = "items"


@dataclass
class AppContext:
    """What every worker shares across requests, typed."""

    settings: Settings
    pool: asyncpg.Pool | None = field(default=None)
    orm: TortoiseContext | None = None
    # Operations (app/pool.py, app/lifecycle.py, app/tracing.py).
    db: Database | None = field(default=None)
    draining: bool = False
    span_exporter: SpanExporter | None = None
    tracer_provider: Any = None
    # Traffic control (app/ratelimit.py, app/cache.py, app/idempotency.py); None when off.
    limiter: ratelimit.Limiter | None = None
    item_cache: cache.ItemCache | None = None
    # The worker's last readiness result, shared by every probe for a second (app/health.py).
    readiness: health.Readiness = field(default_factory=health.Readiness)


ItemsApp = ObservedSanic[AppContext]


def create_app(settings: Settings | None = None) -> ItemsApp:
    """Build the app for `settings` (read from the environment when not given)."""
    settings = settings or load_settings()
    # Logging is configured by `python -m app serve` (app/logs.py), not by Sanic.
    app: ItemsApp = ObservedSanic(
        APP_NAME,
        ctx=AppContext(settings),
        error_handler=ProblemHandler(),
        # Every JSON body goes through the one strict parser (app/bodies.py).
        request_class=JsonRequest,
        configure_logging=False,
    )
    app.emit_access_log = settings.ACCESS_LOG
    app.fast_json_access = logs.json_lines(settings)
    app.record_metrics = settings.METRICS_ENABLED
    app.trusted_proxies = settings.TRUSTED_PROXIES
    app.config.update(
        REQUEST_MAX_SIZE=settings.REQUEST_MAX_SIZE,
        REQUEST_MAX_HEADER_SIZE=settings.REQUEST_MAX_HEADER_SIZE,
        REQUEST_TIMEOUT=settings.REQUEST_TIMEOUT,
        RESPONSE_TIMEOUT=settings.RESPONSE_TIMEOUT,
        KEEP_ALIVE_TIMEOUT=settings.KEEP_ALIVE_TIMEOUT,
        GRACEFUL_SHUTDOWN_TIMEOUT=settings.GRACEFUL_SHUTDOWN_TIMEOUT,
        # Sanic's own access log stays off: app/observability.py writes one (ACCESS_LOG).
        ACCESS_LOG=False,
        # Security: no framework banner, no auto-reload, no debug pages.
        MOTD=False,
        AUTO_RELOAD=False,
        # sanic-ext: no CORS handling.
        CORS=False,
    )
    # The OpenAPI document's info and Swagger UI (the only docs page, served offline).
    app.config.update(swagger_ui.CONFIG)
    # sanic-ext for OpenAPI and validation, plus its HEAD/OPTIONS handling; not its dependency
    # injection, whose signal ran on every request (3.5 % of a worker on GET by id), nor its
    # health and logging extensions (app/health.py, app/logs.py do those).
    Extend(app, built_in_extensions=False, extensions=[OpenAPIExtension, HTTPExtension])
    swagger_ui.register(app)
    middleware.register(app)
    if app.emit_access_log and app.fast_json_access:
        logs.register(app)  # flushes the buffered access lines
    tracing.register(app, settings)  # before db: the pool's handle traces when this is on
    db.register(app)
    metrics.register(app, settings)
    ops_gauges.register(app, settings)  # readiness, TLS days left, idempotency backlog
    lifecycle.register(app, settings)
    balance.register(app)
    ratelimit.register(app)
    cache.register(app)
    idempotency.register(app)
    app.blueprint(health.bp)
    app.blueprint(items.bp)
    auth.register(app, settings)  # POST /auth, /auth/refresh, /auth/logout, GET /auth/me
    lifecycle.freeze_startup_heap(app)  # last: after every other start-up listener
    return app
