"""Tokens: sanic-jwt's endpoints over our user store, and the scope check that guards handlers.

sanic-jwt serves `POST /auth` (login), `POST /auth/refresh`, `GET /auth/me` and
`GET /auth/verify`; this module adds `POST /auth/logout`. Access tokens are HS256 JWTs
carrying `user_id` and `scopes`: checking one is a signature check, with no database call.
Refresh tokens are random strings stored hashed in PostgreSQL, so any worker on any machine
can refresh, and logout or `python -m app revoke-tokens` revokes them. Each refresh rotates
the refresh token (app/users.py: one family per login, a replayed token revokes its family).

Revocation without a query per request: access tokens carry their user's `token_version`,
and every worker polls the versions of recently changed users (app/token_cache.py). A token
older than its user's version is refused with 401 (disabled, revoked, or scopes changed: a
refresh gets a token with the current scopes, and a lowered scope then gives 403), within
MAX_AGE (1 s) of the change on every worker and machine; while polls fail, requests with a
bearer token get 503.

Handlers are guarded by `require_scope`, not sanic-jwt's `@scoped`: sanic-jwt 1.8 answers a
missing scope with 401 instead of 403 (it hands `status_code=403` to Sanic's `Unauthorized`,
which takes it as a WWW-Authenticate parameter) and decodes the token twice per request.
`authorize` below is the one place that fixes the status; it verifies the token once, with
the same key, algorithm and claims as sanic-jwt, and matches scopes with sanic-jwt's own
validator. `tests/unit/test_auth_upstream.py` fails when upstream changes that behaviour.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any

import jwt
from sanic import HTTPResponse, Request, Sanic, empty
from sanic.exceptions import ServiceUnavailable
from sanic_jwt import Authentication, Initialize, Responses
from sanic_jwt.endpoints import (
    AuthenticateEndpoint,
    BaseEndpoint,
    RefreshEndpoint,
    RetrieveUserEndpoint,
    VerifyEndpoint,
)
from sanic_jwt.exceptions import SanicJWTException
from sanic_jwt.validators import validate_single_scope

from app import docs, users
from app.pool import untraced
from app.settings import Settings
from app.token_cache import ACCEPTED, HISTORY_MARGIN, UNKNOWN, RevokedTokens, VerifiedTokens
from app.users import SCOPE_READ, SCOPE_WRITE, User

log = logging.getLogger("app.auth")

REALM = "items"
# Clock skew tolerated between the machines that issue and check tokens.
LEEWAY_SECONDS = 5
REQUIRED_CLAIMS = ("exp", "iat", "user_id", "scopes")
# Optional (tokens minted before versions existed count as version 0).
VERSION_CLAIM = "token_version"
READ_SCOPES = (SCOPE_READ, SCOPE_WRITE)
# Login hashes with argon2 (~20 ms, 19 MiB each): at most this many at once per worker.
PASSWORD_THREADS = 2
# How long a starting worker waits for its first revocation poll (the database may be down).
POLL_WAIT_AT_START = 1.0

Handler = Callable[..., Awaitable[HTTPResponse]]

__all__ = [
    "SCOPE_READ",
    "SCOPE_WRITE",
    "authorize",
    "register",
    "require_scope",
    "verified_subject",
]


class AuthError(Exception):
    """A request is not allowed; `app.errors` turns it into a problem+json response."""


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


class AuthBodyNotJson(AuthError):
    """A login, refresh or logout body not sent as `application/json`: answered 415."""


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


def authorize(request: Request, scopes: Iterable[str]) -> Mapping[str, Any]:
    """The claims of the request's bearer token if it holds any of `scopes`; else raise."""
    header = request.headers.get("authorization")
    if header is None:
        raise NotAuthenticated("Send `Authorization: Bearer <access token>`.", error=None)
    scheme, _, token = header.partition(" ")
    # A JWT is ASCII (base64url and dots): other bytes are a bad token (401), never a decode error.
    if scheme.lower() != "bearer" or not token or " " in token or not token.isascii():
        raise NotAuthenticated(
            "The Authorization header must be `Bearer <access token>`.", error="invalid_request"
        )
    claims: Mapping[str, Any] | None = getattr(request.ctx, "token_claims", None)
    if claims is None:
        auth: ItemsAuthentication = request.app.ctx.auth
        claims = auth.verified.get(token) or auth.verified.put(
            token, decode_token(token, auth.secret, auth.algorithm)
        )
        check_not_revoked(auth.revoked, claims)
        request.ctx.token_claims = claims
        # Who is calling, for rate limits and idempotency keys (app/ratelimit.subject_of).
        request.ctx.subject = str(claims["user_id"])
    if not any(validate_single_scope(scope, claims["scopes"]) for scope in scopes):
        raise ScopeMissing(scopes)
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
        authorize(request, ())
    except ScopeMissing:
        pass
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


async def _guard_reads(request: Request) -> None:
    # Registered only when AUTH_REQUIRED_FOR_READS is on; routes opt in with `ctx_auth_read`.
    if request.route is not None and getattr(request.route.ctx, "auth_read", False):
        await authorize_checked(request, READ_SCOPES)


def _credentials(request: Request, *fields: str) -> list[str]:
    sent = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if sent != "application/json":
        raise AuthBodyNotJson(f"Send the body as application/json, not {sent or 'nothing'}.")
    body = request.json
    if not isinstance(body, dict) or not all(isinstance(body.get(f), str) for f in fields):
        shape = ", ".join(f'"{f}": "..."' for f in fields)
        raise BadAuthRequest(f"Send a JSON object {{{shape}}}.")
    # No credential holds NUL (PostgreSQL cannot store it): refused before any hash sees it.
    for field in fields:
        if "\x00" in body[field]:
            raise BadAuthRequest(f'"{field}" must not contain NUL characters.')
    return [body[f] for f in fields]


def _new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


class ItemsAuthentication(Authentication):  # type: ignore[misc]
    """sanic-jwt's hooks, backed by `app.users`."""

    def __init__(self, app: Sanic[Any, Any], config: Any) -> None:
        super().__init__(app, config)
        settings: Settings = app.ctx.settings
        self.secret = settings.jwt_secret
        self.algorithm = settings.JWT_ALGORITHM
        self.access_ttl = settings.ACCESS_TOKEN_TTL
        self.refresh_ttl = settings.REFRESH_TOKEN_TTL
        self.executor: ThreadPoolExecutor | None = None
        self.verified = VerifiedTokens(LEEWAY_SECONDS)
        self.revoked = RevokedTokens()

    async def authenticate(self, request: Request, *_: Any, **__: Any) -> User:
        username, password = _credentials(request, "username", "password")
        user = await users.authenticate(request.app.ctx.db, username, password, self.executor)
        if user is None:
            raise NotAuthenticated(
                "Wrong username or password, or the account is disabled.", error=None
            )
        return user

    async def retrieve_user(
        self, request: Request, payload: dict[str, Any] | None = None, *_: Any, **__: Any
    ) -> User:
        user = None
        if payload is not None:
            user = await users.get_user(request.app.ctx.db, payload["user_id"])
        if user is None:
            raise NotAuthenticated("The account no longer exists or is disabled.")
        return user

    async def add_scopes_to_payload(self, user: User, *_: Any, **__: Any) -> list[str]:
        return list(user.scopes)

    async def store_refresh_token(
        self, user_id: int, refresh_token: str, request: Request, *_: Any, **__: Any
    ) -> None:
        await users.store_refresh_token(
            request.app.ctx.db, user_id, refresh_token, self.refresh_ttl
        )

    async def retrieve_refresh_token(
        self, request: Request, user_id: int, *_: Any, **__: Any
    ) -> str | None:
        # The rotation itself. sanic-jwt compares what this returns with the token sent:
        # return the sent one once it is rotated (its successor goes out through
        # `extend_refresh`), else None (a mismatch, answered 401).
        [token] = _credentials(request, "refresh_token")
        successor = _new_refresh_token()
        outcome = await users.rotate_refresh_token(
            request.app.ctx.db, user_id, token, successor, self.refresh_ttl
        )
        if outcome is users.Rotation.REUSED:
            log.warning(
                "refresh token of user %s replayed: its login's tokens are revoked", user_id
            )
            raise NotAuthenticated(
                "This refresh token was already used, so every token of its login is revoked; "
                "log in again."
            )
        if outcome is not users.Rotation.ROTATED:
            return None
        request.ctx.next_refresh_token = successor
        return token

    async def add_claims(
        self, payload: dict[str, Any], user: User, *_: Any, **__: Any
    ) -> dict[str, Any]:
        # Replaces sanic-jwt's version, which uses the deprecated naive `datetime.utcnow()`.
        now = datetime.now(UTC)
        payload.update(
            exp=now + timedelta(seconds=self.access_ttl),
            iat=now,
            **{VERSION_CLAIM: user.token_version},
        )
        return payload

    async def _decode(
        self, token: str, verify: bool = True, inline_claims: Any = None
    ) -> dict[str, Any]:
        # Every token sanic-jwt checks (/auth/me, /auth/refresh, /auth/verify) goes through
        # the same rules as `authorize`. The signature is always verified (PyJWT 2 ignores
        # sanic-jwt's `verify=False`); only /auth/refresh turns off the expiry check.
        # Revoked tokens are refused here too (/auth/me, /auth/verify), except by
        # /auth/refresh, which checks the account and the refresh token in the database.
        del verify, inline_claims
        refreshing = not self.config.verify_exp()
        claims = decode_token(token, self.secret, self.algorithm, verify_exp=not refreshing)
        if not refreshing:
            if not self.revoked.fresh:
                await self.revoked.poll_now()
            check_not_revoked(self.revoked, claims)
        return claims


class ProblemResponses(Responses):  # type: ignore[misc]
    """sanic-jwt's responses, with its errors answered like every other error."""

    @staticmethod
    def exception_response(request: Request, exception: Exception) -> HTTPResponse:
        response: HTTPResponse = request.app.error_handler.default(request, exception)
        return response

    @staticmethod
    def extend_authenticate(request: Request, *_: Any, **__: Any) -> dict[str, Any]:
        return _token_meta(request)

    @staticmethod
    def extend_refresh(request: Request, *_: Any, **__: Any) -> dict[str, Any]:
        return {"refresh_token": request.ctx.next_refresh_token, **_token_meta(request)}


def _token_meta(request: Request) -> dict[str, Any]:
    return {"token_type": "Bearer", "expires_in": request.app.ctx.settings.ACCESS_TOKEN_TTL}


class LogoutEndpoint(BaseEndpoint):  # type: ignore[misc]
    @docs.logout
    async def post(self, request: Request, *_: Any, **__: Any) -> HTTPResponse:
        """End a login: its refresh tokens are revoked (204 whether or not it was valid)."""
        [token] = _credentials(request, "refresh_token")
        await users.revoke_refresh_token(request.app.ctx.db, token)
        return empty(status=204)


# sanic-jwt's class views take no decorators of ours: their methods are documented here.
docs.login(AuthenticateEndpoint.post)
docs.refresh_token(RefreshEndpoint.post)
docs.me(RetrieveUserEndpoint.get)
docs.verify_token(VerifyEndpoint.get)


def register(app: Sanic[Any, Any], settings: Settings) -> None:
    """Mount the /auth endpoints, once per app (sanic-jwt fails when initialised twice)."""
    with _loop_for_sanic_jwt():
        Initialize(
            app,
            authentication_class=ItemsAuthentication,
            responses_class=ProblemResponses,
            secret=settings.jwt_secret,
            algorithm=settings.JWT_ALGORITHM,
            expiration_delta=settings.ACCESS_TOKEN_TTL,
            leeway=LEEWAY_SECONDS,
            refresh_token_enabled=True,
            generate_refresh_token=_new_refresh_token,
            scopes_enabled=True,
            url_prefix="/auth",
            class_views=[("/logout", LogoutEndpoint)],
        )
    if settings.AUTH_REQUIRED_FOR_READS:
        app.register_middleware(_guard_reads, "request")

    @app.main_process_start
    async def warn_dev_secret(_: Sanic[Any, Any]) -> None:
        if settings.JWT_SECRET is None:
            log.warning(
                "JWT_SECRET is not set: signing tokens with the public development key "
                "(refused when ENV=production)"
            )

    @app.before_server_start
    async def open_password_pool(app: Sanic[Any, Any]) -> None:
        app.ctx.auth.executor = ThreadPoolExecutor(PASSWORD_THREADS, "argon2")

    @app.before_server_start
    async def follow_token_revocations(app: Sanic[Any, Any]) -> None:
        # Any token older than the access-token lifetime has expired: older changes are moot.
        within = settings.ACCESS_TOKEN_TTL + LEEWAY_SECONDS + HISTORY_MARGIN
        db = untraced(app.ctx.db)

        async def poll() -> dict[int, int]:
            return await users.token_versions_changed(db, within)

        # Started here, so the first poll answers before the worker serves its first request.
        app.ctx.auth_poller = asyncio.get_running_loop().create_task(
            app.ctx.auth.revoked.follow(poll), name="token-revocations"
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + POLL_WAIT_AT_START
        while not app.ctx.auth.revoked.fresh and loop.time() < deadline:
            await asyncio.sleep(0.01)

    @app.after_server_stop
    async def stop_token_revocations(app: Sanic[Any, Any]) -> None:
        # Polling lasts through the drain (in-flight requests still check tokens) and stops
        # before the pool closes (shutdown listeners run in reverse order of registration).
        poller: asyncio.Task[None] | None = getattr(app.ctx, "auth_poller", None)
        if poller is not None:
            poller.cancel()
            with suppress(asyncio.CancelledError):
                await poller

    @app.after_server_stop
    async def close_password_pool(app: Sanic[Any, Any]) -> None:
        executor = app.ctx.auth.executor
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


@contextmanager
def _loop_for_sanic_jwt() -> Iterator[None]:
    """Lend sanic-jwt an event loop while it initialises.

    sanic-jwt 1.8 reads each of its settings through `asyncio.get_event_loop()`, which raises
    once `asyncio.run()` has run in this thread (and warns on Python 3.12+) when no loop is
    set. App factories run outside any loop, so set a fresh one for the duration, then
    leave the thread with no loop set, as Sanic and sanic-testing expect to find it.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        yield
        return
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield
    finally:
        asyncio.set_event_loop(None)
        loop.close()
