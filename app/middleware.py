"""Per-request plumbing every response shares: request id and security headers."""

from __future__ import annotations

import re
import uuid
from typing import Any

from sanic import Request, Sanic
from sanic.response import BaseHTTPResponse

REQUEST_ID_HEADER = "X-Request-ID"
# Taken from the client only when it is short and plain, so it is safe in logs and headers.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

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


def request_id(request: Request) -> str:
    """The request's id: the client's `X-Request-ID` when sane, else a fresh one."""
    rid: str | None = getattr(request.ctx, "request_id", None)
    if rid is None:
        sent = request.headers.get(REQUEST_ID_HEADER)
        rid = sent if sent and _SANE_REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        request.ctx.request_id = rid
    return rid


def security_headers(request: Request, response: BaseHTTPResponse) -> None:
    headers = response.headers
    for name, value in SECURITY_HEADERS.items():
        headers.setdefault(name, value)
    headers.setdefault(
        "Content-Security-Policy", DOCS_CSP if request.path.startswith("/docs") else API_CSP
    )
    headers[REQUEST_ID_HEADER] = request_id(request)


def register(app: Sanic[Any, Any]) -> None:
    app.register_middleware(security_headers, "response")
