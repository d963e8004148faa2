"""The rate-limit middleware: which limit applies, chosen by the matched route, and the
`RateLimit-*` headers of every answer (kept for `app.http.middleware.response_headers`)."""

from __future__ import annotations

import enum
import time
from collections.abc import Coroutine
from typing import Any

import orjson
from sanic import Request, Sanic
from sanic.exceptions import SanicException

from app.auth.identity import count_key
from app.auth.users import USERNAME
from app.http.client import address_key, client_ip
from app.http.middleware import keep_for_response
from app.ops.balance import worker_index
from app.ops.metrics import RATE_LIMITED
from app.ratelimit.policy import Decision, Limiter, LocalLimiter, Policy, RateLimited, RedisLimiter
from app.ratelimit.window_table import WindowTable
from app.settings import Settings
from app.shared_memory import share

# Routes never limited (by the first segment of their template): probes, metrics and docs
# must answer however busy a client is.
EXEMPT_SEGMENTS = frozenset({"health", "metrics", "docs"})
# The login route, found through the router: its own limits per address and per username.
LOGIN_PATH = "/auth"


class RouteLimit(enum.Enum):
    """Which limit a route is under, kept on the route (`route.ctx.rate_limit`)."""

    EXEMPT = "exempt"
    LOGIN = "login"


def classify_routes(app: Sanic[Any, Any]) -> None:
    """Mark the routes whose limit is not the general one, once the router is final.

    The limit follows the route that will serve a request, never the path it was spelt
    with: Sanic serves `/auth`, `/auth/` and `/auth//` with one route, and a prefix test on
    the path would also exempt `/healthz`-like 404s (tests/server/test_ratelimit_routes.py).
    """
    for route in app.router.routes:
        if route.path.split("/", 1)[0] in EXEMPT_SEGMENTS:
            route.ctx.rate_limit = RouteLimit.EXEMPT
    try:
        login, _, _ = app.router.get(LOGIN_PATH, "POST", None)
    except SanicException:
        return  # an app without the login route (some tests)
    login.ctx.rate_limit = RouteLimit.LOGIN


def route_limit(request: Request) -> RouteLimit | None:
    """The matched route's special limit, if any (None: the general limit; also unmatched)."""
    route = request.route
    if route is None:
        return None
    limit: RouteLimit | None = getattr(route.ctx, "rate_limit", None)
    return limit


def login_username(request: Request) -> str | None:
    """The username a login body names, when it could be one; else None.

    The body is client input read before the handler checks it: anything that is not a JSON
    object with a plausible `username` is left for the handler to refuse (400), uncounted. A
    name that cannot exist (`app.users.USERNAME`) cannot be guessed at, so it needs no count.
    """
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return None
    username = body.get("username") if isinstance(body, dict) else None
    if isinstance(username, str) and USERNAME.fullmatch(username):
        return username
    return None


def register(app: Sanic[Any, Any], settings: Settings) -> None:
    """Wire the limits of `settings` into `app`; nothing at all when RATE_LIMIT=off."""
    if settings.RATE_LIMIT == "off":
        return
    general = Policy.parse(settings.RATE_LIMIT)
    auth = None if settings.RATE_LIMIT_AUTH == "off" else Policy.parse(settings.RATE_LIMIT_AUTH)
    auth_user = (
        None
        if settings.RATE_LIMIT_AUTH_USER == "off"
        else Policy.parse(settings.RATE_LIMIT_AUTH_USER)
    )
    trusted = settings.TRUSTED_PROXIES

    # A single-process server's table has only the one column it writes.
    table = share(
        app,
        "ratelimit_table",
        lambda: WindowTable.allocate(workers=settings.WORKERS),
        alone=WindowTable.allocate,
    )

    @app.before_server_start
    async def open_limiter(app: Sanic[Any, Any]) -> None:
        classify_routes(app)
        workers = settings.WORKERS if table.across_workers else 0
        array, lock = table.memory
        local = LocalLimiter(WindowTable(array, lock, workers, worker_index(settings.WORKERS)))
        limiter: Limiter = RedisLimiter(settings.REDIS_URL, local) if settings.REDIS_URL else local
        app.ctx.limiter = limiter

    @app.after_server_stop
    async def close_limiter(app: Sanic[Any, Any]) -> None:
        limiter: Limiter | None = getattr(app.ctx, "limiter", None)
        if limiter is not None:
            await limiter.close()

    async def hit(limiter: Limiter, key: str, policy: Policy) -> Decision:
        if type(limiter) is LocalLimiter:  # the machine's table: no I/O
            return limiter.hit_now(key, policy, time.time())
        return await limiter.hit(key, policy)

    async def limit_login(request: Request, limiter: Limiter) -> Decision:
        """Per client address (RATE_LIMIT_AUTH), then per username (RATE_LIMIT_AUTH_USER)."""
        if auth is not None:
            decision = await hit(limiter, address_key(client_ip(request, trusted)), auth)
        else:
            decision = await hit(limiter, count_key(request), general)
        # A refused address spends nothing of the username's count: one address alone cannot
        # lock a user out faster than its own limit lets it try.
        if auth_user is not None and decision.allowed:
            username = login_username(request)
            if username is not None:
                per_user = await hit(limiter, f"user:{username}", auth_user)
                if not per_user.allowed or per_user.remaining < decision.remaining:
                    decision = per_user
        return decision

    def enforce(request: Request, decision: Decision) -> None:
        keep_for_response(request, decision.headers())
        if not decision.allowed:
            RATE_LIMITED.inc()
            raise RateLimited(decision)

    async def limit_with_io(request: Request, limiter: Limiter, special: RouteLimit | None) -> None:
        if special is RouteLimit.LOGIN and request.method == "POST":
            enforce(request, await limit_login(request, limiter))
        else:
            enforce(request, await limiter.hit(count_key(request), general))

    def limit(request: Request) -> Coroutine[Any, Any, None] | None:
        """Count the request; a coroutine only for a login or while Redis keeps the counts.

        The common case, a general limit in the machine's table, does no I/O, so it runs as
        a plain call: no coroutine to make and await on every request.
        """
        special = route_limit(request)
        if special is RouteLimit.EXEMPT:
            return None
        limiter = request.app.ctx.limiter
        if special is None and type(limiter) is LocalLimiter:
            enforce(request, limiter.hit_now(count_key(request), general, time.time()))
            return None
        return limit_with_io(request, limiter, special)

    app.register_middleware(limit, "request")
