"""The /auth endpoints: sanic-jwt's login, refresh, me and verify over our user store, plus
logout, and the worker's follow of token revocations."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sanic import HTTPResponse, Request, Sanic, empty
from sanic_jwt import Authentication, Initialize, Responses
from sanic_jwt.endpoints import (
    AuthenticateEndpoint,
    BaseEndpoint,
    RefreshEndpoint,
    RetrieveUserEndpoint,
    VerifyEndpoint,
)

from app.auth import openapi, users
from app.auth.token_cache import HISTORY_MARGIN, RevokedTokens, VerifiedTokens
from app.auth.tokens import (
    LEEWAY_SECONDS,
    VERSION_CLAIM,
    BadAuthRequest,
    NotAuthenticated,
    check_not_revoked,
    decode_token,
    guard_reads,
)
from app.auth.users import User
from app.background import run_in_background
from app.constants import JSON
from app.db.wiring import orm_client
from app.http.bodies import require_media_type
from app.settings import Settings

log = logging.getLogger("app.auth")


# Login hashes with argon2 (~20 ms, 19 MiB each): at most this many at once per worker.
PASSWORD_THREADS = 2


# How long a starting worker waits for its first revocation poll (the database may be down).
POLL_WAIT_AT_START = 1.0


def _credentials(request: Request, *fields: str) -> list[str]:
    require_media_type(request, JSON)
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
        user = await users.authenticate(
            orm_client(request.app.ctx.orm), username, password, self.executor
        )
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
            user = await users.get_user(orm_client(request.app.ctx.orm), payload["user_id"])
        if user is None:
            raise NotAuthenticated("The account no longer exists or is disabled.")
        return user

    async def add_scopes_to_payload(self, user: User, *_: Any, **__: Any) -> list[str]:
        return list(user.scopes)

    async def store_refresh_token(
        self, user_id: int, refresh_token: str, request: Request, *_: Any, **__: Any
    ) -> None:
        await users.store_refresh_token(
            orm_client(request.app.ctx.orm), user_id, refresh_token, self.refresh_ttl
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
            orm_client(request.app.ctx.orm), user_id, token, successor, self.refresh_ttl
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
    @openapi.logout
    async def post(self, request: Request, *_: Any, **__: Any) -> HTTPResponse:
        """End a login: its refresh tokens are revoked (204 whether or not it was valid)."""
        [token] = _credentials(request, "refresh_token")
        await users.revoke_refresh_token(orm_client(request.app.ctx.orm), token)
        return empty(status=204)


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
        app.register_middleware(guard_reads, "request")

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

    def follow_token_revocations(app: Sanic[Any, Any]) -> Coroutine[Any, Any, None]:
        # Any token older than the access-token lifetime has expired: older changes are moot.
        within = settings.ACCESS_TOKEN_TTL + LEEWAY_SECONDS + HISTORY_MARGIN
        db = orm_client(app.ctx.orm)

        async def poll() -> dict[int, int]:
            return await users.token_versions_changed(db, within)

        revoked: RevokedTokens = app.ctx.auth.revoked
        return revoked.follow(poll)

    # Started before the server, so the first poll answers before the worker serves its first
    # request; polling lasts through the drain (in-flight requests still check tokens) and
    # stops before the pool closes (`run_in_background`).
    run_in_background(
        app,
        "token-revocations",
        follow_token_revocations,
        start="before_server_start",
        stop="after_server_stop",
    )

    @app.before_server_start
    async def wait_for_first_poll(app: Sanic[Any, Any]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + POLL_WAIT_AT_START
        while not app.ctx.auth.revoked.fresh and loop.time() < deadline:
            await asyncio.sleep(0.01)

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


# sanic-jwt's class views take no decorators of ours: their methods are documented here.
openapi.login(AuthenticateEndpoint.post)
openapi.refresh_token(RefreshEndpoint.post)
openapi.me(RetrieveUserEndpoint.get)
openapi.verify_token(VerifyEndpoint.get)
