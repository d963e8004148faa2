"""Bearer tokens for any user id, for tests that need several callers (scoped keys, limits).

Servers and apps built by the tests run in development, where the signing key is the public
development key; a token minted here is accepted without a user in the database. It claims
a `token_version` no real user reaches, so a test that revokes a real user's tokens (which
refuses that user id's older tokens, app/auth/token_cache.py) never revokes these.
"""

from __future__ import annotations

import time

import jwt

from app.settings import DEV_JWT_SECRET

WRITE_SCOPE = "items:write"
NEWEST_TOKEN_VERSION = 1 << 31


def token_headers(user_id: int = 1, **extra: str) -> dict[str, str]:
    """`Authorization` for an items:write token of user `user_id`, plus `extra` headers."""
    now = int(time.time())
    claims = {
        "user_id": user_id,
        "scopes": [WRITE_SCOPE],
        "token_version": NEWEST_TOKEN_VERSION,
        "iat": now,
        "exp": now + 900,
    }
    token = jwt.encode(claims, DEV_JWT_SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}", **extra}
