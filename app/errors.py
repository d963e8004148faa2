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
    ServiceUnavailable,
)
from sanic.handlers import ErrorHandler
from sanic_ext.exceptions import ValidationError as SanicExtValidationError
from tortoise.exceptions import DoesNotExist, IntegrityError

from app.item_store import DuplicateSku, ItemNotFound, VersionMismatch
from app.middleware import request_id, security_headers
from app.pagination import QueryError

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
)


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
    response = HTTPResponse(
        orjson.dumps(body), status=status, headers=headers, content_type=PROBLEM_JSON
    )
    security_headers(request, response)
    return response


def _field_errors(exc: PydanticValidationError) -> list[dict[str, Any]]:
    return [
        {
            "field": ".".join(str(part) for part in error["loc"]) or "body",
            "message": error["msg"].removeprefix("Value error, "),
            "type": error["type"],
        }
        for error in exc.errors(include_url=False, include_input=False)
    ]


class ProblemHandler(ErrorHandler):
    """Sanic's error handler, answering every exception with problem+json."""

    def default(self, request: Request, exception: Exception) -> HTTPResponse:
        return to_problem(request, exception, debug=self.debug)


def to_problem(request: Request, exc: Exception, *, debug: bool = False) -> HTTPResponse:  # noqa: PLR0911
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
    if isinstance(exc, ItemNotFound | DoesNotExist):
        return problem(request, 404, str(exc))
    if isinstance(exc, VersionMismatch):
        return problem(request, 412, str(exc), type_="/problems/version-mismatch")
    if isinstance(exc, DuplicateSku | IntegrityError):
        return problem(request, 409, str(exc), type_="/problems/duplicate-sku")
    if isinstance(exc, MethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods or ()))
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
        log.warning("database unavailable: %r", exc)
        return problem(
            request,
            503,
            "The database is unavailable; retry shortly.",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    log.exception("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    detail = repr(exc) if debug else "The server failed to handle this request."
    return problem(request, 500, detail)
