"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from sanic import Blueprint, HTTPResponse, Request

bp = Blueprint("health", url_prefix="/health")

READY_DB_TIMEOUT = 1.0


async def liveness(request: Request) -> HTTPResponse:  # noqa: ARG001
    """Liveness: the process answers; no I/O."""
    # An explicit type: Sanic would otherwise send the literal header "content-type: None".
    return HTTPResponse(b"", status=200, content_type="text/plain; charset=utf-8")


bp.add_route(liveness, "", methods=["GET", "HEAD"])


@bp.get("/ready")
async def readiness(request: Request) -> HTTPResponse:
    """Readiness: the database answers within a short timeout."""
    checks: dict[str, dict[str, Any]] = {}
    pool = request.app.ctx.pool
    started = time.perf_counter()
    try:
        if pool is None:
            raise ConnectionError("pool not open")
        await asyncio.wait_for(pool.fetchval("SELECT 1"), READY_DB_TIMEOUT)
        checks["database"] = {"status": "ok"}
    except Exception as exc:  # noqa: BLE001 (any failure means "not ready")
        checks["database"] = {"status": "fail", "error": type(exc).__name__}
    checks["database"]["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    ready = all(check["status"] == "ok" for check in checks.values())
    body = {"status": "ok" if ready else "fail", "checks": checks}
    return HTTPResponse(
        orjson.dumps(body),
        status=200 if ready else 503,
        content_type="application/json",
        headers=None if ready else {"Retry-After": "2"},
    )
