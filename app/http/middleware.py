"""Per-request plumbing every response shares: request id, security headers, and headers
request middleware keeps for the response."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable
from typing import Any

from sanic import Request, Sanic
from sanic.response import BaseHTTPResponse

from app.http.responses import EncodedHeaders, Response

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


def encode_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[bytes, bytes], ...]:
    """Header pairs as sent: for values fixed by code or settings, encoded once."""
    return tuple((name.encode(), value.encode()) for name, value in headers)


_API_HEADERS = encode_headers((*SECURITY_HEADERS.items(), ("Content-Security-Policy", API_CSP)))
_DOCS_HEADERS = encode_headers((*SECURITY_HEADERS.items(), ("Content-Security-Policy", DOCS_CSP)))
_REQUEST_ID = REQUEST_ID_HEADER.encode()
_NO_STORE = (b"Cache-Control", b"no-store")


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


def keep_for_response(request: Request, headers: EncodedHeaders) -> None:
    """Headers for whatever response `request` gets, errors included (`RateLimit-*`).

    For request middleware, which decides before any response exists: one response
    middleware (`response_headers`) adds them with the others, instead of one per source.
    """
    request.ctx.response_headers = headers


def response_headers(request: Request, response: BaseHTTPResponse) -> None:
    """The headers every response carries: security headers, request id, and those kept.

    Set, not added: calling it again (an error response is built with them, then passes
    through response middleware) sends each once.
    """
    # Decided by the route that served the request, never by the path as spelt (`//auth`,
    # `/auth/`): the first segment of its template; unmatched requests are neither.
    route = request.route
    section = route.path.split("/", 1)[0] if route is not None else ""
    headers = [
        *(_DOCS_HEADERS if section == "docs" else _API_HEADERS),
        (_REQUEST_ID, request_id(request).encode()),
    ]
    kept: EncodedHeaders | None = getattr(request.ctx, "response_headers", None)
    if kept is not None:
        headers.extend(kept)
    # Tokens never sit in a cache; HSTS only over a direct TLS connection.
    if section == "auth":
        headers.append(_NO_STORE)
    conn = request.conn_info
    if conn is not None and conn.ssl and (max_age := request.app.ctx.settings.HSTS_MAX_AGE):
        headers.append((b"Strict-Transport-Security", b"max-age=%d" % max_age))
    if isinstance(response, Response):
        response.common_headers = headers
    else:  # Sanic's own responses (files, 204s, probes): through their header dict
        for name, value in headers:
            response.headers[name.decode()] = value.decode()


def register(app: Sanic[Any, Any]) -> None:
    app.register_middleware(response_headers, "response")
