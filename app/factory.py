"""The application factory: `create_app`, the typed context every worker shares, the app each
spawned worker builds, and the plain-HTTP redirect app beside it.

The only module that wires `app.ops` and `app.ratelimit` into an app (the import contract in
pyproject.toml).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import asyncpg
from sanic import HTTPResponse, Request, Sanic, redirect
from sanic_ext import Extend
from sanic_ext.extensions.http.extension import HTTPExtension
from sanic_ext.extensions.openapi.extension import OpenAPIExtension
from tortoise.context import TortoiseContext

from app.auth import endpoints as auth
from app.auth.endpoints import ItemsAuthentication
from app.db import wiring as db
from app.db.pool import Database
from app.http import middleware, swagger_ui
from app.http.bodies import JsonRequest
from app.http.errors import ProblemHandler
from app.http.routing import Router
from app.items import cache, idempotency
from app.items import routes as items
from app.ops import balance, gauges, health, lifecycle, logs, metrics, tracing
from app.ops.hook import ObservedSanic
from app.ops.tls import REDIRECT_APP
from app.problems import PROBLEMS
from app.ratelimit import middleware as ratelimit
from app.ratelimit.policy import Limiter
from app.settings import Settings, load_settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

APP_NAME = "items"
# The redirect app answers every method; a hostname it cannot vouch for becomes localhost.
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_HOSTNAME = re.compile(r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")


@dataclass
class AppContext:
    """What every worker shares across requests, typed."""

    settings: Settings
    pool: asyncpg.Pool | None = field(default=None)
    orm: TortoiseContext | None = None
    # Operations (app/db/pool.py, app/ops/lifecycle.py, app/ops/tracing.py).
    db: Database | None = field(default=None)
    draining: bool = False
    span_exporter: SpanExporter | None = None
    tracer_provider: Any = None
    # Tokens: sanic-jwt's Authentication instance (app/auth/endpoints.py), set by sanic-jwt
    # when the /auth endpoints are mounted; None on an app without them.
    auth: ItemsAuthentication | None = None
    # Traffic control (app/ratelimit, app/items/cache.py); None when off.
    limiter: Limiter | None = None
    item_cache: cache.ItemCache | None = None
    # The worker's last readiness result, shared by every probe for a second (app/ops/health.py).
    readiness: health.Readiness = field(default_factory=health.Readiness)


ItemsApp = ObservedSanic[AppContext]


def create_app(settings: Settings | None = None) -> ItemsApp:
    """Build the app for `settings` (read from the environment when not given)."""
    settings = settings or load_settings()
    # Logging is configured by `python -m app serve` (app/ops/logs.py), not by Sanic.
    app: ItemsApp = ObservedSanic(
        APP_NAME,
        ctx=AppContext(settings),
        error_handler=ProblemHandler(PROBLEMS),
        router=Router(),
        # Every JSON body goes through the one strict parser (app/http/bodies.py).
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
        # Sanic's own access log stays off: app/ops/hook.py writes one (ACCESS_LOG).
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
    # injection, whose signal runs on every request and injects nothing here, nor its health
    # and logging extensions (app/ops/health.py, app/ops/logs.py do those).
    Extend(app, built_in_extensions=False, extensions=[OpenAPIExtension, HTTPExtension])
    swagger_ui.register(app)
    middleware.register(app)
    logs.register(app, settings)  # flushes the buffered access lines
    tracing.register(app, settings)  # before db: the pool's handle traces when this is on
    db.register(app)
    metrics.register(app, settings)
    gauges.register(app, settings)  # readiness, TLS days left, idempotency backlog
    lifecycle.register(app, settings)
    balance.register(app, settings)
    ratelimit.register(app, settings)
    cache.register(app, settings)
    idempotency.register(app, settings)
    app.blueprint(health.bp)
    app.blueprint(items.bp)
    auth.register(app, settings)  # POST /auth, /auth/refresh, /auth/logout, GET /auth/me
    lifecycle.freeze_startup_heap(app)  # last: after every other start-up listener
    return app


def worker_app(settings: Settings) -> Sanic[Any, Any]:
    """The app factory `serve` hands to Sanic: each spawned worker logs like the main process."""
    from app.factory import create_app
    from app.ops.logs import configure_logging

    configure_logging(settings)
    return create_app(settings)


def with_redirect_app(factory: Any, settings: Settings) -> Sanic[Any, Any]:
    """Build the API app with `factory`, and beside it the redirect app when configured.

    `serve` hands this to Sanic's AppLoader: every worker must build both apps, since
    Sanic starts a secondary app's server in each worker by looking it up by name.
    """
    app: Sanic[Any, Any] = factory(settings)
    if settings.tls_enabled and settings.HTTP_REDIRECT_PORT:
        create_redirect_app(settings)
    return app


def create_redirect_app(settings: Settings) -> Sanic[Any, Any]:
    """A plain-HTTP app that answers everything with 308 to the same URL over HTTPS."""
    app: Sanic[Any, Any] = Sanic(
        REDIRECT_APP,
        ctx=SimpleNamespace(settings=settings),
        error_handler=ProblemHandler(PROBLEMS),
        configure_logging=False,
    )
    app.config.update(
        MOTD=False,
        AUTO_RELOAD=False,
        ACCESS_LOG=False,
        REQUEST_MAX_SIZE=1024,
        REQUEST_MAX_HEADER_SIZE=settings.REQUEST_MAX_HEADER_SIZE,
        REQUEST_TIMEOUT=settings.REQUEST_TIMEOUT,
        KEEP_ALIVE_TIMEOUT=settings.KEEP_ALIVE_TIMEOUT,
    )
    port = "" if settings.PORT == 443 else f":{settings.PORT}"

    async def to_https(request: Request, path: str = "") -> HTTPResponse:
        del path
        # The Host header is the client's own; anything odd falls back to localhost.
        host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
        if not _HOSTNAME.fullmatch(host):
            host = "localhost"
        query = f"?{request.query_string}" if request.query_string else ""
        return redirect(f"https://{host}{port}{request.path}{query}", status=308)

    app.add_route(to_https, "/", methods=_ALL_METHODS, name="root")
    app.add_route(to_https, "/<path:path>", methods=_ALL_METHODS, name="any")
    middleware.register(app)
    return app
