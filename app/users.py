"""Users and their refresh tokens: the store behind login, refresh, logout and the CLI.

Plain asyncpg like `app.item_store`; every function takes a pool or a connection. Knows
nothing of HTTP: it returns values or raises the errors below.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

SCOPE_READ = "items:read"
SCOPE_WRITE = "items:write"
KNOWN_SCOPES = frozenset({SCOPE_READ, SCOPE_WRITE})

USERNAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
MIN_PASSWORD_LENGTH = 12
# Longer inputs are refused before hashing, so a login body cannot buy extra CPU.
MAX_PASSWORD_LENGTH = 1024
# Refresh tokens kept per user; the oldest go first, so repeated logins cannot grow the table.
MAX_REFRESH_TOKENS_PER_USER = 20

# argon2id at OWASP's recommended minimum (19 MiB, 2 passes, 1 lane): about 20 ms per hash.
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

# A pool or a single connection: both have fetchrow / fetchval / execute.
Database = Any


class UserError(Exception):
    """A user cannot be created or changed as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    scopes: tuple[str, ...]
    is_active: bool

    def to_dict(self) -> dict[str, Any]:
        """The shape sanic-jwt reads (`user_id`) and `GET /auth/me` shows."""
        return {"user_id": self.id, "username": self.username, "scopes": list(self.scopes)}


def _user(row: Any) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        scopes=tuple(row["scopes"].split()),
        is_active=row["is_active"],
    )


@cache
def _dummy_hash() -> str:
    # Verified when the username is unknown, so that case costs as much as a wrong password.
    return HASHER.hash("no user has this password; it only spends the same time")


def _verify(password_hash: str, password: str) -> bool:
    try:
        return HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def hash_token(token: str) -> str:
    """Refresh tokens are long random strings: a plain SHA-256 is enough to store them."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_new_user(username: str, password: str, scopes: list[str]) -> None:
    if not USERNAME.fullmatch(username):
        raise UserError("username: 1-64 characters of A-Z a-z 0-9 . _ @ -")
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise UserError(f"password: {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")
    unknown = sorted(set(scopes) - KNOWN_SCOPES)
    if unknown:
        raise UserError(
            f"scopes: unknown {', '.join(unknown)} (known: {', '.join(sorted(KNOWN_SCOPES))})"
        )


async def create_user(db: Database, username: str, password: str, scopes: list[str]) -> User:
    """Create an active user; the password is stored as an argon2id hash only."""
    check_new_user(username, password, scopes)
    password_hash = await asyncio.to_thread(HASHER.hash, password)
    row = await db.fetchrow(
        """
        INSERT INTO users (username, password_hash, scopes) VALUES ($1, $2, $3)
        ON CONFLICT (username) DO NOTHING
        RETURNING id, username, scopes, is_active
        """,
        username,
        password_hash,
        " ".join(dict.fromkeys(scopes)),
    )
    if row is None:
        raise UserError(f"username: {username!r} already exists")
    return _user(row)


async def authenticate(
    db: Database, username: str, password: str, executor: Executor | None = None
) -> User | None:
    """The active user with these credentials, else None, in the same time either way."""
    row = None
    if USERNAME.fullmatch(username) and len(password) <= MAX_PASSWORD_LENGTH:
        row = await db.fetchrow(
            "SELECT id, username, scopes, is_active, password_hash FROM users WHERE username = $1",
            username,
        )
    password_hash = row["password_hash"] if row is not None else _dummy_hash()
    # Hashing blocks for ~20 ms: off the event loop, in a small pool that bounds memory use.
    matches = await asyncio.get_running_loop().run_in_executor(
        executor, _verify, password_hash, password
    )
    if row is None or not matches or not row["is_active"]:
        return None
    return _user(row)


async def get_user(db: Database, user_id: int) -> User | None:
    """The active user with this id, else None."""
    row = await db.fetchrow(
        "SELECT id, username, scopes, is_active FROM users WHERE id = $1 AND is_active",
        user_id,
    )
    return _user(row) if row is not None else None


async def store_refresh_token(db: Database, user_id: int, token: str, ttl: int) -> None:
    """Keep the token's hash until it expires; drop the user's expired and oldest ones.

    The DELETE sees the table as it was before the INSERT (one snapshot), so it keeps the
    newest MAX - 1 old tokens beside the new one.
    """
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl)
    await db.execute(
        """
        WITH added AS (
            INSERT INTO refresh_tokens (user_id, token_hash, expires_at) VALUES ($1, $2, $3)
        )
        DELETE FROM refresh_tokens
        WHERE user_id = $1 AND (
            expires_at <= now()
            OR id IN (SELECT id FROM refresh_tokens WHERE user_id = $1 ORDER BY id DESC OFFSET $4)
        )
        """,
        user_id,
        hash_token(token),
        expires_at,
        MAX_REFRESH_TOKENS_PER_USER - 1,
    )


async def refresh_token_valid(db: Database, user_id: int, token: str) -> bool:
    """Whether `token` is one of the user's unexpired, unrevoked refresh tokens."""
    found = await db.fetchval(
        """
        SELECT 1 FROM refresh_tokens
        WHERE token_hash = $1 AND user_id = $2 AND expires_at > now()
        """,
        hash_token(token),
        user_id,
    )
    return found is not None


async def revoke_refresh_token(db: Database, token: str) -> bool:
    """Forget one refresh token; True when it existed."""
    deleted = await db.fetchval(
        "DELETE FROM refresh_tokens WHERE token_hash = $1 RETURNING 1", hash_token(token)
    )
    return deleted is not None


async def revoke_user_tokens(db: Database, username: str) -> int:
    """Forget every refresh token of a user; the number revoked."""
    exists = await db.fetchval("SELECT id FROM users WHERE username = $1", username)
    if exists is None:
        raise UserError(f"username: no user {username!r}")
    status: str = await db.execute("DELETE FROM refresh_tokens WHERE user_id = $1", exists)
    return int(status.rsplit(" ", 1)[-1])
