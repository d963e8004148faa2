"""Checking an access token: verify it once per request, refuse a revoked one, match its
scopes (`authorize`, `require_scope`); the errors each outcome raises."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import wraps
from typing import Any, Protocol

import jwt
from sanic import HTTPResponse, Request
from sanic.exceptions import ServiceUnavailable
from sanic_jwt.exceptions import SanicJWTException
from sanic_jwt.validators import validate_single_scope

from app.auth.token_cache import ACCEPTED, UNKNOWN, RevokedTokens, VerifiedTokens
from app.auth.users import SCOPE_READ, SCOPE_WRITE

log = logging.getLogger("app.auth")

REALM = "items"
# Clock skew tolerated between the machines that issue and check tokens.
LEEWAY_SECONDS = 5
REQUIRED_CLAIMS = ("exp", "iat", "user_id", "scopes")
# Optional (tokens minted before versions existed count as version 0).
VERSION_CLAIM = "token_version"
READ_SCOPES = (SCOPE_READ, SCOPE_WRITE)

Handler = Callable[..., Awaitable[HTTPResponse]]

__all__ = [
    "SCOPE_READ",
    "SCOPE_WRITE",
    "authorize",
    "require_scope",
    "verified_subject",
]


class AuthError(Exception):
    """A request is not allowed; app/problems.py says how each one is answered."""


class NotAuthenticated(AuthError, SanicJWTException):  # type: ignore[misc]
    """No usable credentials: answered 401 with a `WWW-Authenticate: Bearer` challenge.

    Also a sanic-jwt exception, so its detail survives sanic-jwt's own wrapping when raised
    under `/auth/me` or `/auth/refresh`.
    """

    status_code = 401
    quiet = True

    def __init__(self, detail: str, error: str | None = "invalid_token") -> None:
        super().__init__(detail)
        self.error = error


class ScopeMissing(AuthError):
    """A valid token without the scope the handler needs: answered 403."""

    def __init__(self, scopes: Iterable[str]) -> None:
        self.scopes = tuple(scopes)
        super().__init__(f"This needs a token with scope {' or '.join(self.scopes)}.")


class TokenStateUnknown(ServiceUnavailable):
    """This worker cannot tell whether a token was revoked (its polls fail): answered 503."""

    quiet = True

    def __init__(self) -> None:
        super().__init__("Token revocations cannot be checked right now; retry shortly.")


class BadAuthRequest(AuthError):
    """A login, refresh or logout body without the fields it needs: answered 400."""


def decode_token(
    token: str, secret: str, algorithm: str, *, verify_exp: bool = True
) -> dict[str, Any]:
    """The verified claims of an access token, else NotAuthenticated (never a jwt error)."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[algorithm],  # pinned: `alg: none` and every other algorithm fail
            leeway=LEEWAY_SECONDS,
            options={"require": list(REQUIRED_CLAIMS), "verify_exp": verify_exp},
        )
    except jwt.ExpiredSignatureError:
        raise NotAuthenticated("The access token has expired; refresh it or log in.") from None
    except jwt.InvalidTokenError:
        raise NotAuthenticated("The access token is invalid.") from None
    scopes = claims["scopes"]
    if (
        not isinstance(scopes, list)
        or not all(isinstance(s, str) for s in scopes)
        or not _is_int(claims["user_id"])
        or not _is_int(claims.get(VERSION_CLAIM, 0))
    ):
        raise NotAuthenticated("The access token is invalid.")
    return claims


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_not_revoked(revoked: RevokedTokens, claims: Mapping[str, Any]) -> None:
    """Refuse a verified token whose user changed after it was issued (see module docstring)."""
    verdict = revoked.verdict(claims)
    if verdict is ACCEPTED:
        return
    if verdict is UNKNOWN:
        raise TokenStateUnknown
    raise NotAuthenticated(
        "The access token was revoked (the account or its scopes changed); refresh it or log in."
    )


class TokenKeys(Protocol):
    """What checking a token needs of the worker's auth state (`app.ctx.auth`, the sanic-jwt
    adapter in app/auth/endpoints.py)."""

    secret: str
    algorithm: str
    verified: VerifiedTokens
    revoked: RevokedTokens


def verified_claims(request: Request) -> Mapping[str, Any]:
    """The claims of the request's bearer token, verified and not revoked; else raise.

    Checked once per request: the claims are kept on `request.ctx` (with the subject, for rate
    limits and idempotency keys, app/auth/identity.py), so the rate-limit middleware and the
    handler's guard share one check. The headers cannot change within a request, so kept
    claims answer for the same `Authorization` header.
    """
    claims: Mapping[str, Any] | None = getattr(request.ctx, "token_claims", None)
    if claims is not None:
        return claims
    header = request.headers.get("authorization")
    if header is None:
        raise NotAuthenticated("Send `Authorization: Bearer <access token>`.", error=None)
    scheme, _, token = header.partition(" ")
    # A JWT is ASCII (base64url and dots): other bytes are a bad token (401), never a decode error.
    if scheme.lower() != "bearer" or not token or " " in token or not token.isascii():
        raise NotAuthenticated(
            "The Authorization header must be `Bearer <access token>`.", error="invalid_request"
        )
    auth: TokenKeys = request.app.ctx.auth
    claims = auth.verified.get(token) or auth.verified.put(
        token, decode_token(token, auth.secret, auth.algorithm)
    )
    check_not_revoked(auth.revoked, claims)
    request.ctx.token_claims = claims
    request.ctx.subject = str(claims["user_id"])
    return claims


# (token's scopes, scopes a handler accepts) -> whether one is granted. sanic-jwt's matcher
# splits and normalises both sides on every call, which costs more than the rest of a known
# token's check; its verdict depends on nothing else, so each pair is matched once. Scope
# lists come only from verified tokens, which this server signs: few distinct ones.
_GRANTS: dict[tuple[tuple[str, ...], tuple[str, ...]], bool] = {}
_MAX_GRANTS = 1024


def holds_scope(granted: Iterable[str], scopes: tuple[str, ...]) -> bool:
    """Whether a token granted `granted` holds any of `scopes` (sanic-jwt's scope rules)."""
    key = (tuple(granted), scopes)
    verdict = _GRANTS.get(key)
    if verdict is None:
        verdict = any(validate_single_scope(scope, list(key[0])) for scope in scopes)
        if len(_GRANTS) >= _MAX_GRANTS:
            _GRANTS.clear()
        _GRANTS[key] = verdict
    return verdict


def authorize(request: Request, scopes: Iterable[str]) -> Mapping[str, Any]:
    """The claims of the request's bearer token if it holds any of `scopes`; else raise."""
    claims = verified_claims(request)
    wanted = tuple(scopes)
    if not holds_scope(claims["scopes"], wanted):
        raise ScopeMissing(wanted)
    return claims


async def authorize_checked(request: Request, scopes: Iterable[str]) -> Mapping[str, Any]:
    """`authorize`, first polling for revocations when what this worker knows is too old."""
    revoked: RevokedTokens = request.app.ctx.auth.revoked
    if (
        not revoked.fresh
        and getattr(request.ctx, "token_claims", None) is None
        and request.headers.get("authorization") is not None
    ):
        await revoked.poll_now()
    return authorize(request, scopes)


def verified_subject(request: Request) -> str | None:
    """The user id of the request's bearer token when it is valid, else None; never raises.

    For code that runs before the handler (rate limiting): the claims are kept on
    `request.ctx`, so `authorize` does not verify the token a second time. A token this
    worker cannot check for revocation now is None too: a public route still answers, and
    `authorize` in a guarded handler then raises the 503.
    """
    if request.headers.get("authorization") is None:
        return None
    try:
        verified_claims(request)
    except (NotAuthenticated, TokenStateUnknown):
        return None
    subject: str | None = getattr(request.ctx, "subject", None)
    return subject


def require_scope(*scopes: str) -> Callable[[Handler], Handler]:
    """Guard a handler: 401 without a valid bearer token, 403 when it holds none of `scopes`."""

    def decorator(handler: Handler) -> Handler:
        @wraps(handler)
        async def guarded(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
            await authorize_checked(request, scopes)
            return await handler(request, *args, **kwargs)

        return guarded

    return decorator


async def guard_reads(request: Request) -> None:
    # Registered only when AUTH_REQUIRED_FOR_READS is on; routes opt in with `ctx_auth_read`.
    if request.route is not None and getattr(request.route.ctx, "auth_read", False):
        await authorize_checked(request, READ_SCOPES)
