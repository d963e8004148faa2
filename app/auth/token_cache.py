"""What a worker knows about access tokens without asking the database on each request.

`VerifiedTokens`: tokens this worker has already verified, so a client's next request skips
the HMAC. A write's bearer token is the same string on every request of a session; verifying
it with PyJWT (base64, JSON, HMAC-SHA256, claim checks) is a large share of a write's cost
(bench/README.md). The claims of a token that passed full verification are kept under the exact
token string until the token expires; a hit re-checks only the expiry (with the same leeway).
Nothing a full verification would refuse can hit: a different signature, payload or header
is a different string. The number kept is bounded (only signed tokens get in, but one user
can log in many times).

`RevokedTokens`: which tokens were revoked since they were issued. Every access token
carries its user's `token_version`; disabling a user, changing their scopes or password, or
revoking their tokens bumps that version in PostgreSQL (app/auth/users.py). Each worker polls the
versions of the users changed lately (`RevokedTokens.follow`, one small indexed query every
POLL_INTERVAL) and refuses a token whose version is older than its user's. A cache hit above
is checked too, so a verified token stops working as soon as the poll brings its revocation.

The bound, on every worker of every machine: a change committed at time T is refused by any
request checked after T + MAX_AGE, because a worker trusts what it knows only while the
poll that learned it began at most MAX_AGE ago (a poll's snapshot is taken when it begins).
A request that finds what the worker knows too old (its event loop was busy, or the last
polls failed) asks for a poll at once and waits for it, at most POLL_DEADLINE. When that poll
fails too (database down or hung), the worker cannot tell a revoked token from a valid one:
the request is answered 503, at once when the database refuses connections, within
POLL_DEADLINE when it hangs. Such requests need the database anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

from app.log_throttle import Throttle

log = logging.getLogger("app.auth")

# Distinct tokens kept per worker; when full, the oldest half is forgotten (re-verified).
MAX_TOKENS = 10_000
# One poll per worker this often; MAX_AGE leaves room for three late or failed ones in a row.
POLL_INTERVAL = 0.25
MAX_AGE = 1.0
# A poll that has not answered by then is abandoned (and the next one tried).
POLL_DEADLINE = 0.5
# Changes older than the access-token lifetime plus this are not polled: every token issued
# before them has expired. Covers clock skew between machines and long transactions.
HISTORY_MARGIN = 300.0
POLL_FAILURE_LOG_INTERVAL = 10.0


class VerifiedTokens:
    __slots__ = ("_claims", "leeway", "max_tokens")

    def __init__(self, leeway: float, max_tokens: int = MAX_TOKENS) -> None:
        self.leeway = leeway
        self.max_tokens = max_tokens
        self._claims: dict[str, MappingProxyType[str, Any]] = {}

    def get(self, token: str) -> MappingProxyType[str, Any] | None:
        """The token's claims if verified before and not expired since, else None."""
        claims = self._claims.get(token)
        if claims is None:
            return None
        if time.time() >= claims["exp"] + self.leeway:
            del self._claims[token]  # verified again, which reports the expiry properly
            return None
        return claims

    def put(self, token: str, claims: dict[str, Any]) -> MappingProxyType[str, Any]:
        if len(self._claims) >= self.max_tokens:
            for old in list(self._claims)[: self.max_tokens // 2]:
                del self._claims[old]
        frozen = self._claims[token] = MappingProxyType(claims)
        return frozen

    def __len__(self) -> int:
        return len(self._claims)


class Verdict(enum.Enum):
    ACCEPTED = "accepted"
    REVOKED = "revoked"  # issued before its user's last change
    UNKNOWN = "unknown"  # what this worker knows is older than MAX_AGE


# Module-level names: the per-request check compares against these (no enum lookups).
ACCEPTED, REVOKED, UNKNOWN = Verdict.ACCEPTED, Verdict.REVOKED, Verdict.UNKNOWN


class RevokedTokens:
    """The lowest `token_version` accepted for each user changed lately, as last polled."""

    __slots__ = ("_attempt_done", "_wake", "max_age", "polled_at", "stale_at", "versions")

    def __init__(self, max_age: float = MAX_AGE) -> None:
        self.max_age = max_age
        # When (time.monotonic) the poll behind `versions` began, and when that is too old;
        # never polled, to start with.
        self.polled_at = self.stale_at = -float("inf")
        self.versions: dict[int, int] = {}
        # Set to have the poller poll now; set by the poller when its current poll ends.
        self._wake = asyncio.Event()
        self._attempt_done = asyncio.Event()

    def update(self, versions: dict[int, int], polled_at: float) -> None:
        self.versions = versions
        self.polled_at = polled_at
        self.stale_at = polled_at + self.max_age

    @property
    def fresh(self) -> bool:
        """Whether what this worker knows is recent enough to decide on a token."""
        return time.monotonic() <= self.stale_at

    def verdict(self, claims: Mapping[str, Any]) -> Verdict:
        """A verified token's standing; on every request that carries one (~0.2 us)."""
        if time.monotonic() > self.stale_at:
            return UNKNOWN
        required = self.versions.get(claims["user_id"])
        if required is not None and claims.get("token_version", 0) < required:
            return REVOKED
        return ACCEPTED

    async def poll_now(self, timeout: float = POLL_DEADLINE) -> None:
        """Have the poller poll at once; return when that poll ends (or after `timeout`)."""
        done = self._attempt_done
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await done.wait()

    async def follow(
        self, poll: Callable[[], Awaitable[dict[int, int]]], interval: float = POLL_INTERVAL
    ) -> None:
        """Poll for as long as the worker runs; a failed poll leaves what is known to go stale."""
        failures = Throttle(POLL_FAILURE_LOG_INTERVAL)
        while True:
            began = time.monotonic()
            try:
                async with asyncio.timeout(POLL_DEADLINE):
                    versions = await poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (any failure: stale, then 503s; retried)
                suppressed = failures.ready()
                if suppressed is not None:
                    log.warning(
                        "token revocation poll failed (%r; %d more not logged): requests with "
                        "a bearer token are answered 503 until a poll succeeds",
                        exc,
                        suppressed,
                    )
            else:
                self.update(versions, began)
            # Waiters (`poll_now`) that asked during this poll are answered by it: if it
            # failed, another one begun now would most likely fail the same way.
            done, self._attempt_done = self._attempt_done, asyncio.Event()
            done.set()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, interval - (time.monotonic() - began))):
                    await self._wake.wait()
