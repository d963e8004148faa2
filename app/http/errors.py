"""Every error becomes an RFC 9457 `application/problem+json` response, here and only here.

The mechanism, as Starlette's `_exception_handler.py` does it: a table maps an exception type
to the function that answers it, and `ProblemHandler` answers an exception with the entry of
the first class along its `__mro__` that the table holds (a subclass gets its parent's entry),
else a logged 500. The entries of the framework and the infrastructure (bodies, validation,
routing, the database) are here; the domain's errors are mapped in `app/problems.py`, which
hands the merged table to the app. tests/unit/test_problems.py checks the lookup.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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

from app.constants import PROBLEM_JSON, RETRY_AFTER_UNAVAILABLE
from app.http.bodies import MalformedJson
from app.http.middleware import request_id, response_headers
from app.http.responses import Response
from app.log_throttle import Throttle

log = logging.getLogger("app.errors")

# How one exception is answered: a `Problem`, or a function for the cases that log or look
# at the request.
Responder = Callable[[Request, Any], HTTPResponse]
ProblemTable = Mapping[type[BaseException], Responder]

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
    response_headers(request, response)
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


@dataclass(frozen=True, slots=True)
class Problem:
    """A table entry: the status and problem type an exception is answered with.

    `detail` is formatted with the exception as `exc` (by default its message); `errors` and
    `headers`, when given, take the exception and return the body's `errors` list and the
    response headers.
    """

    status: int
    type_: str = "about:blank"
    title: str | None = None
    detail: str = "{exc}"
    errors: Callable[[Any], list[dict[str, Any]]] | None = None
    headers: Callable[[Any], dict[str, str]] | None = None

    def __call__(self, request: Request, exc: BaseException) -> HTTPResponse:
        return problem(
            request,
            self.status,
            self.detail.format(exc=exc),
            type_=self.type_,
            title=self.title,
            errors=None if self.errors is None else self.errors(exc),
            headers=None if self.headers is None else self.headers(exc),
        )


def retry_after(seconds: str) -> Callable[[object], dict[str, str]]:
    """`Problem.headers` for an answer that says when to retry, the same every time."""
    return lambda _exc: {"Retry-After": seconds}


def _field_errors(exc: PydanticValidationError) -> list[dict[str, Any]]:
    return [
        {
            "field": ".".join(str(part) for part in error["loc"]) or "body",
            "message": error["msg"].removeprefix("Value error, "),
            "type": error["type"],
        }
        for error in exc.errors(include_url=False, include_input=False)
    ]


def _validation_failed(request: Request, exc: SanicExtValidationError) -> HTTPResponse:
    """422: the field errors pydantic found, or a body that is not an object at all."""
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


def _method_not_allowed(request: Request, exc: MethodNotAllowed) -> HTTPResponse:
    allowed = ", ".join(sorted(exc.allowed_methods or _allowed_methods(request)))
    return problem(
        request,
        405,
        f"{request.method} is not allowed here; use {allowed}.",
        headers={"Allow": allowed},
    )


def _http_exception(request: Request, exc: HTTPException) -> HTTPResponse:
    """Sanic's own errors keep their status; a 5xx says no more than its phrase unless debug."""
    status = exc.status_code
    detail = str(exc) if exc.message else HTTPStatus(status).description
    if status >= 500 and not request.app.debug:
        detail = HTTPStatus(status).description
    return problem(request, status, detail, headers=dict(exc.headers or {}))


def _database_down(request: Request, exc: BaseException) -> HTTPResponse:
    log_database_down(exc)
    return problem(
        request,
        503,
        "The database is unavailable; retry shortly.",
        headers={"Retry-After": RETRY_AFTER_UNAVAILABLE},
    )


def _undecodable_text(request: Request, exc: UnicodeError) -> HTTPResponse:
    # Text that cannot be encoded comes only from the client: header bytes that are not
    # UTF-8 (kept as surrogates by Sanic), reaching an encoder before any check refused
    # them. A bad request, not a server fault: no traceback in the log.
    log.info("undecodable text in a request to %s: %r", request.path, exc)
    return problem(
        request, 400, "The request holds bytes that are not UTF-8 text where text is needed."
    )


def _client_gone(request: Request, exc: RequestCancelled) -> HTTPResponse:
    # The client went away mid-request (e.g. a load generator stopping): nobody to answer.
    del exc
    log.debug("request cancelled by the client: %s %s", request.method, request.path)
    return problem(request, 400, "The client closed the connection.")


def unhandled(request: Request, exc: BaseException) -> HTTPResponse:
    """500 for an exception no entry maps, with its traceback in the log."""
    log.exception("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    detail = repr(exc) if request.app.debug else "The server failed to handle this request."
    return problem(request, 500, detail)


# The framework's and the infrastructure's errors; `app/problems.py` adds the domain's.
FRAMEWORK_PROBLEMS: ProblemTable = {
    MalformedJson: Problem(
        400,
        "/problems/malformed-json",
        detail="The request body is not valid JSON (RFC 8259): {exc}.",
    ),
    SanicExtValidationError: _validation_failed,
    MethodNotAllowed: _method_not_allowed,
    ServiceUnavailable: Problem(503, headers=retry_after(RETRY_AFTER_UNAVAILABLE)),
    HTTPException: _http_exception,
    **dict.fromkeys(DATABASE_DOWN, _database_down),
    UnicodeError: _undecodable_text,
    RequestCancelled: _client_gone,
}


class ProblemHandler(ErrorHandler):
    """Sanic's error handler, answering every exception with problem+json through `table`."""

    def __init__(self, table: ProblemTable) -> None:
        super().__init__()
        self.table = dict(table)
        # Each exception type's responder, resolved along its MRO once.
        self._resolved: dict[type[BaseException], Responder] = {}

    def responder(self, exc_type: type[BaseException]) -> Responder:
        """The entry of the first class in `exc_type.__mro__` the table holds, else `unhandled`."""
        found = self._resolved.get(exc_type)
        if found is None:
            found = next(
                (self.table[cls] for cls in exc_type.__mro__ if cls in self.table), unhandled
            )
            self._resolved[exc_type] = found
        return found

    def default(self, request: Request, exception: Exception) -> HTTPResponse:
        return self.responder(type(exception))(request, exception)
