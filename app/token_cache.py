"""Access tokens this worker has already verified, so a client's next request skips the HMAC.

A write's bearer token is the same string on every request of a session; verifying it with
PyJWT (base64, JSON, HMAC-SHA256, claim checks) measured ~10 % of a worker on POST /items.
The claims of a token that passed full verification are kept under the exact token string
until the token expires; a hit re-checks only the expiry (with the same leeway). Nothing a
full verification would refuse can hit: a different signature, payload or header is a
different string. Revocation is unchanged: access tokens were never looked up per request.
"""

from __future__ import annotations

import time
from types import MappingProxyType
from typing import Any

# Distinct tokens kept per worker; when full, the oldest half is forgotten (re-verified).
MAX_TOKENS = 10_000


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
