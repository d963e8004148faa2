"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import orjson
from sanic import Blueprint, HTTPResponse, Request

from app.constants import JSON, RETRY_AFTER_UNAVAILABLE
from app.db.migrate import MIGRATIONS_DIR
from app.db.pool import Database
from app.db.wiring import MODELS_APP
from app.ops import openapi
from app.ops.tls import NOT_AFTER_ENV
from app.settings import Settings

bp = Blueprint("health", url_prefix="/health")

READY_DB_TIMEOUT = 1.0
# How old a readiness result may be when it is served again (see `Readiness`).
READY_MAX_AGE = 1.0
SQL_APPLIED = "SELECT version FROM aerich WHERE app = $1"


@openapi.liveness
async def liveness(request: Request) -> HTTPResponse:  # noqa: ARG001
    """Liveness: the process answers; no I/O."""
    # An explicit type: Sanic would otherwise send the literal header "content-type: None".
    return HTTPResponse(b"", status=200, content_type="text/plain; charset=utf-8")


bp.add_route(liveness, "", methods=["GET", "HEAD"])


@bp.get("/ready")
@openapi.readiness
async def readiness(request: Request) -> HTTPResponse:
    """Readiness: database, migrations, TLS certificate, Redis; 503 when one fails or draining."""
    ctx = request.app.ctx
    settings: Settings = ctx.settings
    readiness: Readiness = ctx.readiness
    if ctx.draining:
        # At once: a load balancer must see the drain now, not after a dependency check.
        checks = dict(readiness.last or {})
    else:
        checks = dict(await readiness.dependencies(ctx.db, settings))
    if settings.tls_enabled:
        checks["tls"] = _check_tls(settings.tls_cert, settings.TLS_WARN_DAYS)
    if ctx.item_cache is not None:
        # Warn-only: without its invalidation stream the cache just serves nothing.
        listening = ctx.item_cache.listening
        checks["cache"] = {
            "status": "ok" if listening else "warn",
            "entries": len(ctx.item_cache.entries),
            "pages": len(ctx.item_cache.pages),
        }
    if ctx.draining:
        checks["shutdown"] = {"status": "fail", "error": "draining"}
    ready = all(check["status"] != "fail" for check in checks.values())
    body = {"status": "ok" if ready else "fail", "checks": checks}
    return HTTPResponse(
        orjson.dumps(body),
        status=200 if ready else 503,
        content_type=JSON,
        headers=None if ready else {"Retry-After": RETRY_AFTER_UNAVAILABLE},
    )


Checks = dict[str, dict[str, Any]]


class Readiness:
    """One worker's checks that do I/O (database, migrations, Redis), shared by every probe
    for up to READY_MAX_AGE.

    Readiness is exempt from rate limits, so each probe running its own query would let a
    flood of them take the pool's turns from real requests. At most one check runs at a time;
    probes that come while it runs wait for it, and a result is reused until it is
    READY_MAX_AGE old (counted from when its check began), which is as fresh as a load
    balancer polling every second sees anyway. tests/server/test_outage.py counts the checks
    in the database's statement log under a flood.
    """

    __slots__ = ("checked_at", "last", "running")

    def __init__(self) -> None:
        self.last: Checks | None = None
        self.checked_at = -READY_MAX_AGE
        self.running: asyncio.Task[Checks] | None = None

    async def dependencies(self, db: Database | None, settings: Settings) -> Checks:
        loop = asyncio.get_running_loop()
        if self.last is not None and loop.time() - self.checked_at < READY_MAX_AGE:
            return self.last
        if self.running is None:
            self.running = loop.create_task(self._check(db, settings, loop.time()))
        # Shielded: a probe whose client went away must not cancel the others' check. The
        # check itself ends within READY_DB_TIMEOUT.
        return await asyncio.shield(self.running)

    async def _check(self, db: Database | None, settings: Settings, started: float) -> Checks:
        try:
            checks: Checks = {}
            if settings.REDIS_URL:
                (checks["database"], applied), checks["redis"] = await asyncio.gather(
                    _check_database(db), _check_redis(settings.REDIS_URL)
                )
            else:
                checks["database"], applied = await _check_database(db)
            checks["migrations"] = _check_migrations(applied)
            self.last, self.checked_at = checks, started
            return checks
        finally:
            self.running = None


async def _check_database(db: Database | None) -> tuple[dict[str, Any], set[str] | None]:
    """`select 1` and the applied migrations, on one connection, within READY_DB_TIMEOUT."""
    started = time.perf_counter()
    applied: set[str] | None = None
    try:
        if db is None:
            raise ConnectionError("pool not open")
        async with asyncio.timeout(READY_DB_TIMEOUT):
            conn = await db.acquire()
            try:
                await conn.fetchval("SELECT 1")
                rows = await conn.fetch(SQL_APPLIED, MODELS_APP)
            finally:
                await db.release(conn)
        applied = {row["version"] for row in rows}
        check: dict[str, Any] = {"status": "ok"}
    except Exception as exc:  # noqa: BLE001 (any failure means "not ready")
        check = {"status": "fail", "error": type(exc).__name__}
    check["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return check, applied


@cache
def _migration_files() -> frozenset[str]:
    return frozenset(path.name for path in (MIGRATIONS_DIR / MODELS_APP).glob("*.py"))


def _check_migrations(applied: set[str] | None) -> dict[str, Any]:
    if applied is None:
        return {"status": "fail", "error": "database unavailable"}
    missing = sorted(_migration_files() - applied)
    if missing:
        return {"status": "fail", "error": "not applied: " + ", ".join(missing)}
    return {"status": "ok", "applied": len(applied)}


@cache
def _certificate_expiry(path: Path) -> datetime:
    # Workers have it from the main process, which checked the files before they started.
    if checked := os.environ.get(NOT_AFTER_ENV):
        return datetime.fromisoformat(checked)
    from cryptography import x509

    return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc


def _check_tls(path: Path, warn_days: int) -> dict[str, Any]:
    """Days left on the served certificate: fail when expired, warn under TLS_WARN_DAYS."""
    try:
        expires = _certificate_expiry(path)
    except (OSError, ValueError) as exc:
        return {"status": "fail", "error": type(exc).__name__}
    days_left = (expires - datetime.now(UTC)).total_seconds() / 86400
    status = "fail" if days_left <= 0 else ("warn" if days_left < warn_days else "ok")
    return {"status": status, "days_left": round(days_left, 1), "expires": expires.isoformat()}


_redis_clients: dict[str, Any] = {}


async def _check_redis(url: str) -> dict[str, Any]:
    """Ping Redis; a failure warns (limits fall back to each machine) but is not fatal."""
    from redis.asyncio import Redis

    started = time.perf_counter()
    client = _redis_clients.get(url)
    if client is None:
        client = _redis_clients[url] = Redis.from_url(
            url, socket_timeout=READY_DB_TIMEOUT, socket_connect_timeout=READY_DB_TIMEOUT
        )
    try:
        async with asyncio.timeout(READY_DB_TIMEOUT):
            await client.ping()
        check: dict[str, Any] = {"status": "ok"}
    except Exception as exc:  # noqa: BLE001 (any failure means "degraded")
        check = {"status": "warn", "error": type(exc).__name__}
    check["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return check
