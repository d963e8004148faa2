"""The local development user, so the README's quickstart can write with nothing else to read.

In development `python -m app serve` makes sure the user `DEV_USER` (default "dev", scope
items:write) exists before the workers start, keeps its random password in
`DATA_DIR/dev-user-<name>.password` (mode 0600, never logged) and logs, once, the command that
gets a token. `python -m app token` (`make token`) logs that user in through the running
server's own `POST /auth` and writes the access token alone to stdout, so
`TOKEN=$(make -s token)` works. Production never comes here: the settings refuse `DEV_USER`
with `ENV=production` (app/settings.py). Checked by tests/server/test_quickstart.py, which runs
the README's quickstart block against a real `make run`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import asyncpg
from tortoise.exceptions import OperationalError

import models
from app.auth import users
from app.settings import Settings

log = logging.getLogger("app.dev_user")

TOKEN_COMMAND = "TOKEN=$(make -s token)"  # noqa: S105 (a shell command, not a secret)
LOGIN_TIMEOUT = 10.0


class DevUserError(Exception):
    """The development user's token cannot be had; the message says what to do."""


def password_file(settings: Settings, username: str) -> Path:
    return settings.DATA_DIR / f"dev-user-{username}.password"


def _new_password(path: Path) -> str:
    password = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 from the start: the password is never readable by anyone else, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(password + "\n")
    return password


async def ensure(settings: Settings) -> None:
    """Create the development user when it does not exist yet; log how to get its token."""
    from app.db.wiring import orm_session

    username = settings.dev_user
    if username is None:
        return
    path = password_file(settings, username)
    try:
        async with orm_session(settings) as db:
            if not await models.User.filter(username=username).using_db(db).exists():
                password = path.read_text().strip() if path.is_file() else _new_password(path)
                await users.create_user(db, username, password, [users.SCOPE_WRITE])
                log.info("created the development user %s (scope %s)", username, users.SCOPE_WRITE)
    except OperationalError as exc:
        if not isinstance(exc.__cause__, asyncpg.UndefinedTableError):
            raise
        log.warning("no users table yet: apply the migrations (make migrate), then restart")
        return
    if not path.is_file():
        # Its password lives only in that file: without it `make token` cannot log in.
        log.warning(
            "development user %s exists but %s is missing: set DEV_USER to another name, "
            "or use `python -m app create-user`",
            username,
            path,
        )
        return
    log.info(
        "development user %s (scope %s); get a token with: %s",
        username,
        users.SCOPE_WRITE,
        TOKEN_COMMAND,
    )


def fetch_token(settings: Settings) -> str:
    """An access token for the development user, from the running server's `POST /auth`."""
    username = settings.dev_user
    if username is None:
        raise DevUserError("no development user (ENV=production or DEV_USER empty)")
    path = password_file(settings, username)
    try:
        password = path.read_text().strip()
    except OSError:
        raise DevUserError(
            f"{path} not found: start the server first (make run), which creates the user"
        ) from None
    scheme = "https" if settings.tls_enabled else "http"
    # A wildcard listen address is reached on loopback.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.HOST, settings.HOST)  # noqa: S104
    host = f"[{host}]" if ":" in host else host
    url = f"{scheme}://{host}:{settings.PORT}/auth"
    body = json.dumps({"username": username, "password": password}).encode()
    request = urllib.request.Request(  # noqa: S310 (http or https, built above)
        url, data=body, headers={"content-type": "application/json"}, method="POST"
    )
    context = (
        ssl.create_default_context(cafile=str(settings.tls_cert)) if scheme == "https" else None
    )
    try:
        with urllib.request.urlopen(request, timeout=LOGIN_TIMEOUT, context=context) as resp:  # noqa: S310
            token: str = json.loads(resp.read())["access_token"]
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise DevUserError(f"POST {url} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DevUserError(
            f"cannot reach {url} ({reason}): is the server running (make run)?"
        ) from None
    return token
