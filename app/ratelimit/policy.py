"""A limit (`Policy`), what one hit decided (`Decision`), and where hits are counted: the
machine's shared-memory table (`LocalLimiter`) or Redis (`RedisLimiter`)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol, cast

from limits import RateLimitItem, parse

from app.ratelimit.window_table import WindowTable

if TYPE_CHECKING:
    from limits.aio.storage import RedisStorage

log = logging.getLogger("app.ratelimit")


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

    __slots__ = ("amount", "item", "limit_header", "period", "policy_header", "suffix")

    def __init__(self, item: RateLimitItem) -> None:
        self.item = item
        self.amount = item.amount
        self.period = item.get_expiry()
        # A key's count is per policy: the same client under two limits has two rows.
        self.suffix = f"|{self.amount}/{self.period}"
        self.limit_header = (b"RateLimit-Limit", b"%d" % self.amount)
        self.policy_header = (b"RateLimit-Policy", b"%d;w=%d" % (self.amount, self.period))

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

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The IETF draft `RateLimit-*` fields (draft-ietf-httpapi-ratelimit-headers), encoded."""
        return [
            self.policy.limit_header,
            (b"RateLimit-Remaining", b"%d" % self.remaining),
            (b"RateLimit-Reset", b"%d" % self.reset),
            self.policy.policy_header,
        ]


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

    async def close(self) -> None:
        await self.connections.aclose()
