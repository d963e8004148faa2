"""Rate limiting: one fixed-window count per client, shared by every worker and machine.

Windows are aligned to the epoch (`floor(now / period)`), so a count needs one number per
client and the reset time is known without asking anyone. Counts live in

- a table in shared memory, made in the main process before workers spawn and reached
  through `app.shared_ctx` (one lock, O(1) per request): one limit per machine; or
- Redis when `REDIS_URL` is set, through the `limits` library's async storage (one
  INCR-and-EXPIRE script, one round trip): one limit for every machine. While Redis does
  not answer, the machine's own table takes over, so limits stay per machine rather than off.

`RATE_LIMIT=off` registers nothing at all: no middleware, no cost.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import multiprocessing
import time
from multiprocessing.sharedctypes import RawArray
from multiprocessing.synchronize import Lock as LockType
from typing import TYPE_CHECKING, Any, Protocol, cast

from limits import RateLimitItem, parse
from sanic import Request, Sanic
from sanic.response import BaseHTTPResponse

from app.auth import verified_subject
from app.balance import worker_index
from app.metrics import RATE_LIMITED
from app.settings import Settings

if TYPE_CHECKING:
    from limits.aio.storage import RedisStorage

log = logging.getLogger("app.ratelimit")

# Paths that are never limited: probes, metrics and docs must answer however busy a client is.
EXEMPT_PREFIXES = ("/health", "/metrics", "/docs")
AUTH_PATH = "/auth"

# 65,536 clients per window per machine; beyond that the least-counted client in a probe
# run is forgotten (it may then get a few more requests than its limit).
TABLE_SLOTS = 1 << 16
PROBES = 8
TAG_MEMO = 100_000

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


def _key_hash(key: str) -> int:
    # A stable hash: Python's own hash() is salted differently in every worker process.
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1


class WindowTable:
    """Fixed-window counters in one shared-memory array.

    Open addressing over `slots` rows of (tag, window, count of worker 0 .. count of worker
    W-1, count of processes without a worker number); a row whose window is over is free for
    reuse, so the table never needs clearing. A key's count is the sum of its row.

    Each numbered worker writes only its own column, so while a key is far from its limit (more
    than `margin`, two per column) a worker counts a request with no lock at all: it reads the
    row and adds one to its own cell. What another worker adds meanwhile is at most one request
    per worker, which the margin covers. Near the limit, for a key without a row yet, and for
    processes without a worker number, every hit takes the one lock, so the limit itself is
    exact: 20/minute admits exactly 20 across the workers. The lock was measured at 11 % of a
    worker on GET /items/{id} at a limit never reached, and it made a worker stall whenever the
    other was descheduled holding it (most of the p99). Rows are (re)claimed under the lock,
    counts zeroed before the window and tag are written; plain 8-byte stores, in order on x86-64
    (on weaker memory models a reader may briefly see a stale count at a window's start).
    """

    def __init__(self, array: Any, lock: LockType, workers: int = 0, me: int | None = None) -> None:
        self._cells = memoryview(array).cast("B").cast("q")
        self._columns = workers + 1
        self._fields = 2 + self._columns
        self._slots = len(self._cells) // self._fields
        self._lock = lock
        # This process's column: its worker number, else the last one (written under the lock).
        self._me = me if me is not None and me < workers else None
        self._column = 2 + (self._me if self._me is not None else workers)
        self.margin = 2 * self._columns
        # Keys' hashes, remembered per process (blake2b costs as much as the rest of a hit).
        self._tags: dict[str, int] = {}

    @staticmethod
    def allocate(slots: int = TABLE_SLOTS, workers: int = 0) -> tuple[Any, LockType]:
        """The shared array and lock; made in the main process so workers inherit them."""
        return RawArray("q", slots * (3 + workers)), multiprocessing.Lock()

    def hit(self, key: str, window: int, limit: int = 1 << 62) -> int:
        """Count one request for `key` in `window`; returns the count including it."""
        tag = self._tags.get(key)
        if tag is None:
            if len(self._tags) >= TAG_MEMO:
                self._tags.clear()
            tag = self._tags[key] = _key_hash(key) | 1
        cells = self._cells
        start = tag % self._slots
        if self._me is not None:
            row = self._find(tag, window, start)
            if row >= 0:
                counts = row + 2
                total = sum(cells[counts : counts + self._columns])
                if total + self.margin < limit:
                    cells[row + self._column] += 1
                    return total + 1
        with self._lock:
            row = self._find(tag, window, start)
            if row < 0:
                row = self._claim(tag, window, start)
            cells[row + self._column] += 1
            counts = row + 2
            return sum(cells[counts : counts + self._columns])

    def _find(self, tag: int, window: int, start: int) -> int:
        cells, fields, slots = self._cells, self._fields, self._slots
        for probe in range(PROBES):
            row = ((start + probe) % slots) * fields
            if cells[row + 1] != window:
                return -1  # a free row comes before any row of this key
            if cells[row] == tag:
                return row
        return -1

    def _claim(self, tag: int, window: int, start: int) -> int:
        """A row for `tag` (under the lock): a free one, else the least counted of the run."""
        cells, fields, slots = self._cells, self._fields, self._slots
        victim, victim_count = -1, -1
        for probe in range(PROBES):
            row = ((start + probe) % slots) * fields
            if cells[row + 1] != window:
                victim = row
                break
            count = sum(cells[row + 2 : row + fields])
            if victim < 0 or count < victim_count:
                victim, victim_count = row, count
        for column in range(2, fields):
            cells[victim + column] = 0
        cells[victim + 1] = window
        cells[victim] = tag
        return victim


class Limiter(Protocol):
    async def hit(self, key: str, policy: Policy) -> Decision: ...

    async def close(self) -> None: ...


class LocalLimiter:
    """The machine's limit: counts in the shared-memory table."""

    def __init__(self, table: WindowTable) -> None:
        self.table = table

    def hit_now(self, key: str, policy: Policy, now: float) -> Decision:
        window = int(now // policy.period)
        count = self.table.hit(key + policy.suffix, window, policy.amount)
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


def caller_key(request: Request) -> str:
    """Who is calling: `sub:<subject>` with a verified token, else `ip:<client address>`."""
    subject = subject_of(request)
    if subject is not None:
        return f"sub:{subject}"
    settings: Settings = request.app.ctx.settings
    return f"ip:{client_ip(request, settings.TRUSTED_PROXIES)}"


def register(app: Sanic[Any, Any]) -> None:
    """Wire the limits of `app.ctx.settings` into `app`; nothing at all when RATE_LIMIT=off."""
    settings: Settings = app.ctx.settings
    if settings.RATE_LIMIT == "off":
        return
    general = Policy.parse(settings.RATE_LIMIT)
    auth = None if settings.RATE_LIMIT_AUTH == "off" else Policy.parse(settings.RATE_LIMIT_AUTH)
    trusted = settings.TRUSTED_PROXIES

    @app.main_process_start
    async def share_table(app: Sanic[Any, Any]) -> None:
        app.shared_ctx.ratelimit_table = WindowTable.allocate(workers=settings.WORKERS)

    @app.before_server_start
    async def open_limiter(app: Sanic[Any, Any]) -> None:
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

    async def limit(request: Request) -> None:
        path = request.path
        if path.startswith(EXEMPT_PREFIXES):
            return
        if auth is not None and path == AUTH_PATH and request.method == "POST":
            policy, key = auth, f"ip:{client_ip(request, trusted)}"
        else:
            policy, key = general, caller_key(request)
        limiter = request.app.ctx.limiter
        if type(limiter) is LocalLimiter:  # the machine's table: no I/O, no coroutine
            decision = limiter.hit_now(key, policy, time.time())
        else:
            decision = await limiter.hit(key, policy)
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
