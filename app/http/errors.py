"""Every error becomes an RFC 9457 `application/problem+json` response, here and only here."""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

import asyncpg
import orjson
from pydantic import ValidationError as PydanticValidationError
from sanic import HTTPResponse, Request
from sanic.exceptions import (
    HTTPException,
    MethodNotAllowed,
    NotFound,
    RequestCancelled,
    ServiceUnavailable,
)
from sanic.handlers import ErrorHandler
from sanic_ext.exceptions import ValidationError as SanicExtValidationError
from sanic_jwt.exceptions import SanicJWTException
from tortoise.exceptions import DoesNotExist, IntegrityError

from app.auth.tokens import (
    REALM,
    AuthBodyNotJson,
    AuthError,
    BadAuthRequest,
    NotAuthenticated,
    ScopeMissing,
)
from app.http.bodies import MalformedJson
from app.http.middleware import request_id, security_headers
from app.http.responses import Response
from app.items.idempotency import BadIdempotencyKey, KeyInFlight, KeyReused
from app.items.pagination import QueryError
from app.items.store import DuplicateSku, ItemNotFound, VersionMismatch
from app.log_throttle import Throttle
from app.ratelimit.policy import RateLimited

log = logging.getLogger("app.errors")

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = "2"

# Errors meaning "the database is unreachable right now": answered 503, fast.
DATABASE_DOWN = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    # The server shutting down under a query (AdminShutdown, CrashShutdown, ...).
    asyncpg.exceptions.OperatorInterventionError,
)


# During an outage every request fails the same way: one warning per this many seconds (per
# worker) says so, with the count of the ones not logged, instead of one line per request.
DATABASE_DOWN_LOG_INTERVAL = 10.0
database_down_log = Throttle(DATABASE_DOWN_LOG_INTERVAL)


def log_database_down(exc: BaseException) -> None:
    suppressed = database_down_log.ready()
    if suppressed is None:
        return
    if suppressed:
        log.warning(
            "database unavailable: %r (%d more since the last such line, not logged)",
            exc,
            suppressed,
            extra={"suppressed": suppressed},
        )
    else:
        log.warning("database unavailable: %r", exc)


class UnsupportedMediaType(HTTPException):
    status_code = 415
    quiet = True


def problem(
    request: Request,
    status: int,
    detail: str,
    *,
    type_: str = "about:blank",
    title: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> HTTPResponse:
    """Build one problem+json response."""
    rid = request_id(request)
    body: dict[str, Any] = {
        "type": type_,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.path,
        "request_id": rid,
    }
    if errors is not None:
        body["errors"] = errors
    try:
        payload = orjson.dumps(body)
    except orjson.JSONEncodeError:
        # A detail that quotes a header or the method holds the client's undecodable bytes
        # (Sanic decodes the head with surrogateescape): escape them, never fail to answer.
        payload = orjson.dumps(_escaped(body))
    response = Response(payload, status=status, headers=headers, content_type=PROBLEM_JSON)
    security_headers(request, response)
    return response


def _escaped(value: Any) -> Any:
    """`value` with every string made encodable (lone surrogates as `\\udcff`)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {key: _escaped(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_escaped(item) for item in value]
    return value


def _field_errors(exc: PydanticValidationError) -> list[dict[str, Any]]:
    return [
        {
            "field": ".".join(str(part) for part in error["loc"]) or "body",
            "message": error["msg"].removeprefix("Value error, "),
            "type": error["type"],
        }
        for error in exc.errors(include_url=False, include_input=False)
    ]


def _auth_problem(request: Request, exc: Exception) -> HTTPResponse:
    """400 for a malformed auth body, 403 for a missing scope, else 401 with a Bearer challenge.

    sanic-jwt's own errors (missing or malformed header, refresh token mismatch) say 400 or
    401 themselves; the SPEC wants 401 for all of them, and a 500 for its setup errors.
    """
    if isinstance(exc, BadAuthRequest):
        return problem(request, 400, str(exc), type_="/problems/bad-auth-request")
    if isinstance(exc, AuthBodyNotJson):
        return problem(request, 415, str(exc))
    if isinstance(exc, ScopeMissing):
        challenge = (
            f'Bearer realm="{REALM}", error="insufficient_scope", scope="{" ".join(exc.scopes)}"'
        )
        return problem(
            request,
            403,
            str(exc),
            type_="/problems/insufficient-scope",
            headers={"WWW-Authenticate": challenge},
        )
    if isinstance(exc, SanicJWTException) and (exc.status_code or 500) >= 500:
        log.error("sanic-jwt failed on %s %s: %r", request.method, request.path, exc)
        return problem(request, 500, "The server failed to handle this request.")
    challenge = f'Bearer realm="{REALM}"'
    if isinstance(exc, NotAuthenticated) and exc.error:
        challenge += f', error="{exc.error}"'
    reasons = exc.args[0] if exc.args else "Authentication required."
    detail = " ".join(reasons) if isinstance(reasons, list) else str(reasons)
    return problem(
        request,
        401,
        detail,
        type_="/problems/unauthorized",
        headers={"WWW-Authenticate": challenge},
    )


def _allowed_methods(request: Request) -> list[str]:
    """The methods routed at this path: Sanic omits them for paths with parameters."""
    allowed = []
    for method in ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"):
        try:
            request.app.router.get(request.path, method, None)
        except (NotFound, MethodNotAllowed):
            continue
        allowed.append(method)
    return allowed


class ProblemHandler(ErrorHandler):
    """Sanic's error handler, answering every exception with problem+json."""

    def default(self, request: Request, exception: Exception) -> HTTPResponse:
        return to_problem(request, exception, debug=self.debug)


def to_problem(request: Request, exc: Exception, *, debug: bool = False) -> HTTPResponse:  # noqa: PLR0911
    if isinstance(exc, MalformedJson):
        return problem(
            request,
            400,
            f"The request body is not valid JSON (RFC 8259): {exc}.",
            type_="/problems/malformed-json",
        )
    if isinstance(exc, SanicExtValidationError):
        cause = exc.__context__
        if isinstance(cause, PydanticValidationError):
            return problem(
                request,
                422,
                "The request body breaks the rules of one or more fields.",
                type_="/problems/validation",
                errors=_field_errors(cause),
            )
        return problem(
            request, 422, "The request body is not a JSON object.", type_="/problems/validation"
        )
    if isinstance(exc, QueryError):
        return problem(
            request,
            400,
            "One or more query parameters are invalid.",
            type_="/problems/bad-query",
            errors=exc.errors,
        )
    if isinstance(exc, RateLimited):
        headers = exc.decision.headers()
        headers["Retry-After"] = str(exc.decision.reset)
        return problem(request, 429, str(exc), type_="/problems/rate-limited", headers=headers)
    if isinstance(exc, KeyInFlight):
        return problem(
            request,
            409,
            str(exc),
            type_="/problems/idempotency-key-in-flight",
            headers={"Retry-After": exc.retry_after},
        )
    if isinstance(exc, KeyReused):
        return problem(request, 422, str(exc), type_="/problems/idempotency-key-reused")
    if isinstance(exc, BadIdempotencyKey):
        return problem(request, 400, str(exc), type_="/problems/bad-idempotency-key")
    if isinstance(exc, AuthError | SanicJWTException):
        return _auth_problem(request, exc)
    if isinstance(exc, ItemNotFound | DoesNotExist):
        return problem(request, 404, str(exc))
    if isinstance(exc, VersionMismatch):
        return problem(request, 412, str(exc), type_="/problems/version-mismatch")
    if isinstance(exc, DuplicateSku | IntegrityError):
        return problem(request, 409, str(exc), type_="/problems/duplicate-sku")
    if isinstance(exc, MethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods or _allowed_methods(request)))
        return problem(
            request,
            405,
            f"{request.method} is not allowed here; use {allowed}.",
            headers={"Allow": allowed},
        )
    if isinstance(exc, ServiceUnavailable):
        return problem(request, 503, str(exc), headers={"Retry-After": RETRY_AFTER_SECONDS})
    if isinstance(exc, HTTPException):
        status = exc.status_code
        detail = str(exc) if exc.message else HTTPStatus(status).description
        if status >= 500 and not debug:
            detail = HTTPStatus(status).description
        return problem(request, status, detail, headers=dict(exc.headers or {}))
    if isinstance(exc, DATABASE_DOWN):
        log_database_down(exc)
        return problem(
            request,
            503,
            "The database is unavailable; retry shortly.",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    if isinstance(exc, UnicodeError):
        # Text that cannot be encoded comes only from the client: header bytes that are not
        # UTF-8 (kept as surrogates by Sanic), reaching an encoder before any check refused
        # them. A bad request, not a server fault: no traceback in the log.
        log.info("undecodable text in a request to %s: %r", request.path, exc)
        return problem(
            request, 400, "The request holds bytes that are not UTF-8 text where text is needed."
        )
    if isinstance(exc, RequestCancelled):
        # The client went away mid-request (e.g. a load generator stopping): nobody to answer.
        log.debug("request cancelled by the client: %s %s", request.method, request.path)
        return problem(request, 400, "The client closed the connection.")
    log.exception("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    detail = repr(exc) if debug else "The server failed to handle this request."
    return problem(request, 500, detail)
