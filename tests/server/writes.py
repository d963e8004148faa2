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
    claims = {"user_id": 1, "scopes": ["items:write"], "iat": now, "exp": now + 3600}
    return {"Authorization": f"Bearer {jwt.encode(claims, secret, algorithm='HS256')}"}
