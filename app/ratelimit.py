"""Rate limiting: one fixed-window count per client, shared by every worker and machine.

Windows are aligned to the epoch (`floor(now / period)`), so a count needs one number per
client and the reset time is known without asking anyone. Counts live in

- a table in shared memory (`app.window_table`), made in the main process before workers
  spawn and reached through `app.shared_ctx` (O(1) per request): one limit per machine; or
- Redis when `REDIS_URL` is set, through the `limits` library's async storage (one
  INCR-and-EXPIRE script, one round trip): one limit for every machine. While Redis does
  not answer, the machine's own table takes over, so limits stay per machine rather than off.

`RATE_LIMIT=off` registers nothing at all: no middleware, no cost.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol, cast

import orjson
from limits import RateLimitItem, parse
from sanic import Request, Sanic
from sanic.exceptions import SanicException
from sanic.response import BaseHTTPResponse

from app.auth import verified_subject
from app.balance import worker_index
from app.metrics import RATE_LIMITED
from app.settings import Settings
from app.users import USERNAME
from app.window_table import WindowTable

if TYPE_CHECKING:
    from limits.aio.storage import RedisStorage

log = logging.getLogger("app.ratelimit")

# Routes never limited (by the first segment of their template): probes, metrics and docs
# must answer however busy a client is.
EXEMPT_SEGMENTS = frozenset({"health", "metrics", "docs"})
# The login route, found through the router: its own limits per address and per username.
LOGIN_PATH = "/auth"

REDIS_TIMEOUT = 0.25
REDIS_RETRY_AFTER = 2.0


class RateLimited(Exception):
    """The caller used up its requests for this window."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(
            f"Rate limit of {decision.limit} requests per {decision.period} s exceeded; "
            f"retry in {decision.reset} s."
        )
        self.decision = decision


class Policy:
    """One limit, with what every hit needs worked out once: its table key suffix and headers."""

    __slots__ = ("amount", "item", "limit_text", "period", "policy_text", "suffix")

    def __init__(self, item: RateLimitItem) -> None:
        self.item = item
        self.amount = item.amount
        self.period = item.get_expiry()
        # A key's count is per policy: the same client under two limits has two rows.
        self.suffix = f"|{self.amount}/{self.period}"
        self.limit_text = str(self.amount)
        self.policy_text = f"{self.amount};w={self.period}"

    @classmethod
    def parse(cls, text: str) -> Policy:
        return cls(parse(text))


class Decision:
    """What one hit decided: the count including it, and when its window resets."""

    __slots__ = ("count", "policy", "reset")

    def __init__(self, count: int, policy: Policy, window: int, now: float) -> None:
        self.count = count
        self.policy = policy
        # Seconds until the window resets, rounded up, at least 1.
        self.reset = max(1, int((window + 1) * policy.period - now + 0.999))

    @property
    def allowed(self) -> bool:
        return self.count <= self.policy.amount

    @property
    def remaining(self) -> int:
        return max(0, self.policy.amount - self.count)

    @property
    def limit(self) -> int:
        return self.policy.amount

    @property
    def period(self) -> int:
        return self.policy.period

    def headers(self) -> dict[str, str]:
        """The IETF draft `RateLimit-*` fields (draft-ietf-httpapi-ratelimit-headers)."""
        return {
            "RateLimit-Limit": self.policy.limit_text,
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
            "RateLimit-Policy": self.policy.policy_text,
        }


class Limiter(Protocol):
    async def hit(self, key: str, policy: Policy) -> Decision: ...

    async def close(self) -> None: ...


class LocalLimiter:
    """The machine's limit: counts in the shared-memory table."""

    def __init__(self, table: WindowTable) -> None:
        self.table = table

    def hit_now(self, key: str, policy: Policy, now: float) -> Decision:
        window = int(now // policy.period)
        end = (window + 1) * policy.period
        count = self.table.hit(key + policy.suffix, end, int(now), policy.amount)
        return Decision(count, policy, window, now)

    async def hit(self, key: str, policy: Policy) -> Decision:
        return self.hit_now(key, policy, time.time())

    async def close(self) -> None:
        return None


class RedisLimiter:
    """Every machine's limit: counts in Redis; the machine's table while Redis is away."""

    def __init__(self, url: str, fallback: LocalLimiter) -> None:
        from limits.aio.storage import RedisStorage
        from redis.asyncio import ConnectionPool

        self.connections = ConnectionPool.from_url(
            url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )
        self.storage: RedisStorage = RedisStorage(
            "async+" + url,
            implementation="redispy",
            key_prefix="items-rl",
            # limits types its options as scalars; a pool is what redis-py's client takes.
            connection_pool=cast(Any, self.connections),
        )
        self.fallback = fallback
        self._down_until = 0.0

    async def hit(self, key: str, policy: Policy) -> Decision:
        now = time.time()
        if now >= self._down_until:
            period = policy.period
            window = int(now // period)
            try:
                count = await self.storage.incr(f"{policy.item.key_for(key)}/{window}", period + 1)
            except Exception as exc:  # noqa: BLE001 (any Redis failure: fall back, say so)
                self._down_until = now + REDIS_RETRY_AFTER
                log.warning("Redis unavailable for rate limits (%r); per-machine limits", exc)
            else:
                return Decision(count, policy, window, now)
        return self.fallback.hit_now(key, policy, now)

    async def ping(self) -> bool:
        return bool(await self.storage.check())

    async def close(self) -> None:
        await self.connections.aclose()


def subject_of(request: Request) -> str | None:
    """The user id of the request's valid bearer token, if it sent one.

    The one place that knows where identity comes from: rate limits and idempotency keys
    are scoped by it, else by client IP. The token is verified once per request, by
    `app.auth.verified_subject` here (in middleware) or by `authorize` in the handler: both
    keep the claims on `request.ctx`, so a write never pays for a second verification
    (measured at ~6 % of a worker's time on POST /items). An invalid one counts as no token.
    """
    subject: str | None = getattr(request.ctx, "subject", None)
    if subject is not None:
        return subject
    if getattr(request.app.ctx, "auth", None) is None:
        return None
    return verified_subject(request)


def client_ip(request: Request, trusted: tuple[Any, ...]) -> str:
    """The client's address: the peer, or X-Forwarded-For's last untrusted hop behind a proxy."""
    peer: str = request.ip
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    forwarded: str | None = request.headers.get("x-forwarded-for")
    if not forwarded:
        return peer
    hops = [hop.strip() for hop in forwarded.split(",")]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop
    return hops[0] or peer


def _is_trusted(address: str, trusted: tuple[Any, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def address_key(address: str) -> str:
    """`ip:<address>`, an IPv6 address by its /64.

    A client commonly holds a whole IPv6 /64 (one customer's network), so counting its
    addresses apart would give it 2^64 fresh counts; IPv4 and IPv4-mapped addresses count
    alone (`test_an_ipv6_client_is_counted_by_its_slash_64`).
    """
    if ":" not in address:
        return f"ip:{address}"
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return f"ip:{address}"
    if ip.ipv4_mapped is not None:
        return f"ip:{ip.ipv4_mapped}"
    return f"ip:{ipaddress.IPv6Network((ip, 64), strict=False)}"


def caller_key(request: Request) -> str:
    """Who is calling: `sub:<subject>` with a verified token, else `ip:<client address>`."""
    subject = subject_of(request)
    if subject is not None:
        return f"sub:{subject}"
    settings: Settings = request.app.ctx.settings
    return f"ip:{client_ip(request, settings.TRUSTED_PROXIES)}"


def count_key(request: Request) -> str:
    """The key a request is counted under: its subject, else its address (IPv6: its /64)."""
    subject = subject_of(request)
    if subject is not None:
        return f"sub:{subject}"
    settings: Settings = request.app.ctx.settings
    return address_key(client_ip(request, settings.TRUSTED_PROXIES))


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


def register(app: Sanic[Any, Any]) -> None:
    """Wire the limits of `app.ctx.settings` into `app`; nothing at all when RATE_LIMIT=off."""
    settings: Settings = app.ctx.settings
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

    @app.main_process_start
    async def share_table(app: Sanic[Any, Any]) -> None:
        app.shared_ctx.ratelimit_table = WindowTable.allocate(workers=settings.WORKERS)

    @app.before_server_start
    async def open_limiter(app: Sanic[Any, Any]) -> None:
        classify_routes(app)
        # Single-process servers (tests) have no main process: a table of their own.
        shared = getattr(app.shared_ctx, "ratelimit_table", None)
        workers = settings.WORKERS if shared is not None else 0
        array, lock = shared or WindowTable.allocate()
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

    async def limit(request: Request) -> None:
        special = route_limit(request)
        if special is RouteLimit.EXEMPT:
            return
        limiter = request.app.ctx.limiter
        if special is RouteLimit.LOGIN and request.method == "POST":
            decision = await limit_login(request, limiter)
        elif type(limiter) is LocalLimiter:  # the machine's table: no I/O, no coroutine
            decision = limiter.hit_now(count_key(request), general, time.time())
        else:
            decision = await limiter.hit(count_key(request), general)
        request.ctx.rate_limit = decision
        if not decision.allowed:
            RATE_LIMITED.inc()
            raise RateLimited(decision)

    def add_headers(request: Request, response: BaseHTTPResponse) -> None:
        decision: Decision | None = getattr(request.ctx, "rate_limit", None)
        if decision is not None:
            response.headers.update(decision.headers())

    app.register_middleware(limit, "request")
    app.register_middleware(add_headers, "response")
