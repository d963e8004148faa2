"""Per-request plumbing every response shares: request id, security headers, and headers
request middleware keeps for the response."""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

from sanic import Request, Sanic
from sanic.response import BaseHTTPResponse

from app.http.responses import fixed_header

REQUEST_ID_HEADER = "X-Request-ID"
# Taken from the client only when it is short and plain, so it is safe in logs and headers.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Made ids: 32 hex characters, a random per-process prefix and a counter. Unique across workers
# and restarts, and ~10x cheaper than uuid4() (one os.urandom call per process, not per request).
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count(1)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# JSON responses load nothing; the Swagger UI page under /docs needs its own scripts and styles.
API_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
)
for _name, _value in (*SECURITY_HEADERS.items(), ("Content-Security-Policy", API_CSP)):
    fixed_header(_name, _value)


def request_id(request: Request) -> str:
    """The request's id: the client's `X-Request-ID` when sane, else a fresh one."""
    rid: str | None = getattr(request.ctx, "request_id", None)
    if rid is None:
        sent = request.headers.get(REQUEST_ID_HEADER)
        rid = (
            sent
            if sent and _SANE_REQUEST_ID.fullmatch(sent)
            else f"{_ID_PREFIX}{next(_id_counter):016x}"
        )
        request.ctx.request_id = rid
    return rid


def keep_for_response(request: Request, headers: dict[str, str]) -> None:
    """Headers for whatever response `request` gets, errors included (`RateLimit-*`).

    For request middleware, which decides before any response exists: one response
    middleware (`response_headers`) adds them with the others, instead of one per source.
    """
    request.ctx.response_headers = headers


def response_headers(request: Request, response: BaseHTTPResponse) -> None:
    """The headers every response carries: security headers, request id, and those kept."""
    headers = response.headers
    for name, value in SECURITY_HEADERS.items():
        headers.setdefault(name, value)
    # Decided by the route that served the request, never by the path as spelt (`//auth`,
    # `/auth/`): the first segment of its template; unmatched requests are neither.
    route = request.route
    section = route.path.split("/", 1)[0] if route is not None else ""
    headers.setdefault("Content-Security-Policy", DOCS_CSP if section == "docs" else API_CSP)
    headers[REQUEST_ID_HEADER] = request_id(request)
    kept: dict[str, str] | None = getattr(request.ctx, "response_headers", None)
    if kept is not None:
        headers.update(kept)
    # Tokens never sit in a cache; HSTS only over a direct TLS connection.
    if section == "auth":
        headers["Cache-Control"] = "no-store"
    conn = request.conn_info
    if conn is not None and conn.ssl and (max_age := request.app.ctx.settings.HSTS_MAX_AGE):
        headers["Strict-Transport-Security"] = f"max-age={max_age}"


def register(app: Sanic[Any, Any]) -> None:
    app.register_middleware(response_headers, "response")
