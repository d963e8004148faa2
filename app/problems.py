"""The domain's errors as problem+json responses: one table, exception type -> answer.

The domain raises errors that know nothing of HTTP (app/items, app/auth, app/ratelimit);
this table says the status, problem type and headers of each, and `PROBLEMS` (these plus the
framework's entries of app/http/errors.py) is what `create_app` hands to `ProblemHandler`.
It imports every package, so it sits in the top layer beside the factory.
"""

from __future__ import annotations

import logging

from sanic import HTTPResponse, Request
from sanic_jwt.exceptions import SanicJWTException

from app.auth.tokens import REALM, AuthError, BadAuthRequest, NotAuthenticated, ScopeMissing
from app.constants import RETRY_AFTER_KEY_IN_FLIGHT
from app.http.errors import FRAMEWORK_PROBLEMS, Problem, ProblemTable, problem, retry_after
from app.items.idempotency import BadIdempotencyKey, KeyInFlight, KeyReused
from app.items.pagination import QueryError
from app.items.store import DuplicateSku, ItemNotFound, VersionMismatch
from app.ratelimit.policy import RateLimited

# The error responses' one logger (app/http/errors.py writes to it too).
log = logging.getLogger("app.errors")


def _rate_limit_headers(exc: RateLimited) -> dict[str, str]:
    # The `RateLimit-*` fields were kept for the response when the limit refused it
    # (`app.http.middleware.keep_for_response`), as for every counted answer.
    return {"Retry-After": str(exc.decision.reset)}


def _insufficient_scope(exc: ScopeMissing) -> dict[str, str]:
    scopes = " ".join(exc.scopes)
    return {
        "WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope", scope="{scopes}"'
    }


def _unauthorized(request: Request, exc: AuthError | SanicJWTException) -> HTTPResponse:
    """401 with a Bearer challenge, naming the token error when there is one."""
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


def _sanic_jwt_error(request: Request, exc: SanicJWTException) -> HTTPResponse:
    """sanic-jwt's own errors (missing or malformed header, refresh token mismatch) say 400 or
    401 themselves; the SPEC wants 401 for all of them, and a 500 for its setup errors."""
    if (exc.status_code or 500) >= 500:
        log.error("sanic-jwt failed on %s %s: %r", request.method, request.path, exc)
        return problem(request, 500, "The server failed to handle this request.")
    return _unauthorized(request, exc)


DOMAIN_PROBLEMS: ProblemTable = {
    QueryError: Problem(
        400,
        "/problems/bad-query",
        detail="One or more query parameters are invalid.",
        errors=lambda exc: exc.errors,
    ),
    RateLimited: Problem(429, "/problems/rate-limited", headers=_rate_limit_headers),
    KeyInFlight: Problem(
        409,
        "/problems/idempotency-key-in-flight",
        headers=retry_after(RETRY_AFTER_KEY_IN_FLIGHT),
    ),
    KeyReused: Problem(422, "/problems/idempotency-key-reused"),
    BadIdempotencyKey: Problem(400, "/problems/bad-idempotency-key"),
    BadAuthRequest: Problem(400, "/problems/bad-auth-request"),
    ScopeMissing: Problem(403, "/problems/insufficient-scope", headers=_insufficient_scope),
    # NotAuthenticated is a SanicJWTException too: AuthError comes first in its MRO.
    AuthError: _unauthorized,
    SanicJWTException: _sanic_jwt_error,
    ItemNotFound: Problem(404),
    VersionMismatch: Problem(412, "/problems/version-mismatch"),
    DuplicateSku: Problem(409, "/problems/duplicate-sku"),
}

PROBLEMS: ProblemTable = {**FRAMEWORK_PROBLEMS, **DOMAIN_PROBLEMS}
