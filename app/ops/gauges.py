"""Gauges for alerting, sampled in the background: readiness, TLS days left, idempotency backlog.

A scrape never runs a check: each worker samples on its own clock and the gauges hold the
last result, so `/metrics` stays as cheap as before and Prometheus sees the same verdict a
probe would. The alert rules and the dashboard that read these live in
deploy/observability/ (tests/observability/ runs them on a real Prometheus).

- `items_ready`: 1 while this worker passes readiness's critical checks (not draining, its pool
  answers `SELECT 1` within READY_TIMEOUT, the TLS certificate not expired), sampled every
  READY_SECONDS; a scrape shows the minimum over live workers, so one failing worker shows.
- `items_tls_certificate_days_left`: days until the served certificate expires (TLS only).
- `items_idempotency_keys` and `items_idempotency_oldest_expired_seconds`: the table's size
  (PostgreSQL's live-row estimate) and how long its oldest expired key has waited for the
  purge (0 when none), sampled every BACKLOG_SECONDS; both are index or catalogue lookups.
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from prometheus_client import Gauge

from app.background import run_in_background
from app.db.pool import untraced
from app.ops.tls import NOT_AFTER_ENV
from app.settings import Settings

if TYPE_CHECKING:
    from sanic import Sanic

log = logging.getLogger("app.ops_gauges")

READY_SECONDS = 5.0
READY_TIMEOUT = 1.0
BACKLOG_SECONDS = 30.0

# (name, help, multiprocess mode). Made on a worker's first sample, not at import: in
# multiprocess mode a gauge is written as 0 by every process that creates it, and a 0 from the
# main process, or from a worker still starting, would read as "not ready" or "expired".
READY = (
    "items_ready",
    "1 while the worker passes readiness's critical checks (not draining, database answers, "
    "certificate valid); the minimum over live workers.",
    "livemin",
)
TLS_DAYS_LEFT = (
    "items_tls_certificate_days_left",
    "Days until the served TLS certificate expires.",
    "livemin",
)
IDEMPOTENCY_KEYS = (
    "items_idempotency_keys",
    "Rows in idempotency_keys (PostgreSQL's live-row estimate).",
    "livemax",
)
IDEMPOTENCY_OVERDUE = (
    "items_idempotency_oldest_expired_seconds",
    "Seconds since the oldest expired, not yet purged idempotency key expired; 0 when none.",
    "livemax",
)


@cache
def _gauge(name: str, documentation: str, mode: str) -> Gauge:
    return Gauge(name, documentation, multiprocess_mode=mode)  # type: ignore[arg-type]


def _set(spec: tuple[str, str, str], value: float) -> None:
    _gauge(*spec).set(value)


SQL_BACKLOG = """
SELECT
    (SELECT n_live_tup FROM pg_stat_user_tables WHERE relid = 'idempotency_keys'::regclass),
    (SELECT coalesce(extract(epoch FROM now() - min(expires_at)), 0)
       FROM idempotency_keys WHERE expires_at < now())
"""


def certificate_expiry(settings: Settings) -> datetime | None:
    """The served certificate's notAfter: from the main process's check, else the file."""
    if not settings.tls_enabled:
        return None
    if checked := os.environ.get(NOT_AFTER_ENV):
        return datetime.fromisoformat(checked)
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(settings.tls_cert.read_bytes())
    return cert.not_valid_after_utc


async def _database_answers(app: Sanic[Any, Any]) -> bool:
    db = app.ctx.db
    if db is None:
        return False
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await untraced(db).fetchval("SELECT 1")
    except Exception:  # noqa: BLE001 (any failure means "not ready", as readiness says)
        return False
    return True


async def _sample_readiness(app: Sanic[Any, Any], expires: datetime | None) -> None:
    while True:
        days_left = None
        if expires is not None:
            days_left = (expires - datetime.now(UTC)).total_seconds() / 86400
            _set(TLS_DAYS_LEFT, round(days_left, 3))
        answers = await _database_answers(app)
        valid = days_left is None or days_left > 0
        _set(READY, 1 if answers and valid and not app.ctx.draining else 0)
        await asyncio.sleep(READY_SECONDS)


async def _sample_backlog(app: Sanic[Any, Any]) -> None:
    while True:
        db = app.ctx.db
        if db is not None:
            try:
                async with asyncio.timeout(READY_TIMEOUT):
                    row = await untraced(db).fetchrow(SQL_BACKLOG)
            except Exception as exc:  # noqa: BLE001 (the gauges keep their last values)
                log.debug("idempotency backlog not sampled: %r", exc)
            else:
                if row is not None:
                    _set(IDEMPOTENCY_KEYS, max(row[0] or 0, 0))
                    _set(IDEMPOTENCY_OVERDUE, float(row[1] or 0))
        await asyncio.sleep(BACKLOG_SECONDS)


def register(app: Sanic[Any, Any], settings: Settings) -> None:
    """Sample the gauges in every worker while it serves."""
    if not settings.METRICS_ENABLED:
        return
    run_in_background(
        app, "ready-gauge", lambda app: _sample_readiness(app, certificate_expiry(settings))
    )
    run_in_background(app, "backlog-gauge", _sample_backlog)

    # Registered after the samplers, so it runs before they are stopped (stop listeners run
    # in reverse order); the readiness sampler, if it samples once more, sees `draining`.
    @app.before_server_stop
    async def mark_not_ready(app: Sanic[Any, Any]) -> None:  # noqa: ARG001
        # Draining is readiness 503: say so at once rather than at the next sample.
        _set(READY, 0)
