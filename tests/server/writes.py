"""Headers for item writes against a real server: the one place to add credentials."""

from __future__ import annotations

import time

import jwt

from app.settings import load_settings


def write_headers() -> dict[str, str]:
    """A bearer token with scope items:write, signed as a development server checks it."""
    settings = load_settings(env_file=None, ENV="development")
    secret = getattr(settings, "jwt_secret", None)
    if secret is None:
        return {}
    now = int(time.time())
    # A version no real user reaches: revoking a real user 1's tokens (as the token tests do)
    # refuses only tokens older than that user's version.
    claims = {"user_id": 1, "scopes": ["items:write"], "token_version": 1 << 31}
    claims.update(iat=now, exp=now + 3600)
    return {"Authorization": f"Bearer {jwt.encode(claims, secret, algorithm='HS256')}"}
