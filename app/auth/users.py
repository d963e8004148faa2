"""Users and their refresh tokens: the store behind login, refresh, logout and the CLI.

Plain asyncpg like `app.item_store`; every function takes a pool or a connection. Knows
nothing of HTTP: it returns values or raises the errors below.

Refresh tokens rotate: each use marks the token used and stores its successor in the same
*family* (one per login), in one statement, so of two refreshes with one token exactly one
succeeds, on any worker or machine. A used token presented again means it was copied: its
whole family is revoked, and so are the user's access tokens.

Access tokens carry the user's `token_version`. A trigger on `users` (migration 3) bumps it
and stamps `tokens_changed_at` whenever the account is disabled or re-enabled, its scopes or
password change, or `revoke_user_tokens` runs, whether through this module or plain SQL;
disabling also deletes the user's refresh tokens. Workers learn the new versions by polling
`token_versions_changed` (app/token_cache.py), never by a query per request.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import re
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# Re-exported: the scopes a user record may hold are checked here.
from app.constants import SCOPE_READ as SCOPE_READ
from app.constants import SCOPE_WRITE as SCOPE_WRITE

KNOWN_SCOPES = frozenset({SCOPE_READ, SCOPE_WRITE})

USERNAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
MIN_PASSWORD_LENGTH = 12
# Longer inputs are refused before hashing, so a login body cannot buy extra CPU.
MAX_PASSWORD_LENGTH = 1024
# Live refresh tokens (one per login) kept per user; the oldest go first, so repeated logins
# cannot grow the table.
MAX_REFRESH_TOKENS_PER_USER = 20
# Used tokens kept per user to recognise a replay; the oldest go first, so frequent refreshes
# cannot grow the table. A replay of an older one is refused as unknown instead.
MAX_USED_REFRESH_TOKENS_PER_USER = 100

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
    # Access tokens issued now carry this; older versions are refused (app/token_cache.py).
    token_version: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The shape sanic-jwt reads (`user_id`) and `GET /auth/me` shows."""
        return {"user_id": self.id, "username": self.username, "scopes": list(self.scopes)}


def _user(row: Any) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        scopes=tuple(row["scopes"].split()),
        is_active=row["is_active"],
        token_version=row["token_version"],
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
        RETURNING id, username, scopes, is_active, token_version
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
            """
            SELECT id, username, scopes, is_active, token_version, password_hash
            FROM users WHERE username = $1
            """,
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
        """
        SELECT id, username, scopes, is_active, token_version FROM users
        WHERE id = $1 AND is_active
        """,
        user_id,
    )
    return _user(row) if row is not None else None


async def store_refresh_token(db: Database, user_id: int, token: str, ttl: int) -> None:
    """Keep the hash of a login's refresh token (a new family) until it expires.

    Stored only while the user is active: the row lock (FOR SHARE) waits for a concurrent
    disable, whose trigger deletes the user's tokens, so none is left behind by a racing login.
    """
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl)
    await db.execute(
        """
        INSERT INTO refresh_tokens (user_id, token_hash, expires_at)
        SELECT id, $2, $3 FROM users WHERE id = $1 AND is_active FOR SHARE
        """,
        user_id,
        hash_token(token),
        expires_at,
    )
    await prune_refresh_tokens(db, user_id)


async def prune_refresh_tokens(db: Database, user_id: int) -> None:
    """Drop the user's expired tokens, and the oldest beyond the per-user limits."""
    await db.execute(
        """
        DELETE FROM refresh_tokens
        WHERE user_id = $1 AND (
            expires_at <= now()
            OR id IN (
                SELECT id FROM refresh_tokens WHERE user_id = $1 AND used_at IS NULL
                ORDER BY id DESC OFFSET $2
            )
            OR id IN (
                SELECT id FROM refresh_tokens WHERE user_id = $1 AND used_at IS NOT NULL
                ORDER BY id DESC OFFSET $3
            )
        )
        """,
        user_id,
        MAX_REFRESH_TOKENS_PER_USER,
        MAX_USED_REFRESH_TOKENS_PER_USER,
    )


class Rotation(enum.Enum):
    """What became of a refresh token presented for rotation."""

    ROTATED = "rotated"  # it was live: it is used now, and its successor is stored
    REUSED = "reused"  # it was used before: its family and the user's access tokens are revoked
    REFUSED = "refused"  # unknown, expired, revoked, another user's, or the user is disabled


async def rotate_refresh_token(
    db: Database, user_id: int, token: str, successor: str, ttl: int
) -> Rotation:
    """Replace a live refresh token by `successor` (same family, `ttl` from now), atomically.

    The UPDATE takes the token's row lock and re-checks `used_at IS NULL` after waiting for
    it, so of concurrent rotations of one token exactly one stores a successor; the others
    then find it used and revoke the family (tests/server/test_token_lifecycle.py). The
    user's row is held FOR SHARE, so a concurrent disable or `revoke_user_tokens` (which
    update that row first) either waits for this rotation, then deletes its successor, or
    runs first, and nothing is rotated.
    """
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl)
    rotated = await db.fetchval(
        """
        WITH holder AS (
            SELECT id FROM users WHERE id = $2 AND is_active FOR SHARE
        ), used AS (
            UPDATE refresh_tokens SET used_at = now()
            WHERE token_hash = $1 AND user_id = (SELECT id FROM holder)
                AND used_at IS NULL AND expires_at > now()
            RETURNING user_id, family
        )
        INSERT INTO refresh_tokens (user_id, token_hash, family, expires_at)
        SELECT user_id, $3, family, $4 FROM used
        RETURNING 1
        """,
        hash_token(token),
        user_id,
        hash_token(successor),
        expires_at,
    )
    if rotated is not None:
        await prune_refresh_tokens(db, user_id)
        return Rotation.ROTATED
    family = await db.fetchval(
        """
        WITH reused AS (
            SELECT family FROM refresh_tokens
            WHERE token_hash = $1 AND user_id = $2 AND used_at IS NOT NULL
        )
        DELETE FROM refresh_tokens WHERE family = (SELECT family FROM reused)
        RETURNING family
        """,
        hash_token(token),
        user_id,
    )
    if family is None:
        return Rotation.REFUSED
    # A statement of its own: holding the family's rows while waiting for the user's row
    # would take the locks in the opposite order to a rotation or a revocation (deadlock).
    await db.execute("UPDATE users SET token_version = token_version + 1 WHERE id = $1", user_id)
    return Rotation.REUSED


async def revoke_refresh_token(db: Database, token: str) -> bool:
    """End the login `token` belongs to: every token of its family goes; True when found."""
    deleted = await db.fetchval(
        """
        DELETE FROM refresh_tokens
        WHERE family = (SELECT family FROM refresh_tokens WHERE token_hash = $1)
        RETURNING 1
        """,
        hash_token(token),
    )
    return deleted is not None


async def _bump_user(db: Database, username: str, assignments: str, *args: Any) -> int:
    user_id: int | None = await db.fetchval(
        f"UPDATE users SET {assignments} WHERE username = $1 RETURNING id",  # noqa: S608 (constants)
        username,
        *args,
    )
    if user_id is None:
        raise UserError(f"username: no user {username!r}")
    return user_id


async def revoke_user_tokens(db: Database, username: str) -> int:
    """Revoke every token of a user: refresh tokens now, access tokens within the poll bound.

    Returns the number of refresh tokens revoked. In one transaction, the user's row first:
    its lock makes a concurrent rotation finish before the DELETE looks (a new statement,
    so it sees the successor) or wait until the DELETE is committed (and find nothing).
    """
    async with db.transaction():
        user_id = await _bump_user(db, username, "token_version = token_version + 1")
        status: str = await db.execute("DELETE FROM refresh_tokens WHERE user_id = $1", user_id)
    return int(status.rsplit(" ", 1)[-1])


async def set_active(db: Database, username: str, *, active: bool) -> None:
    """Disable or re-enable a user; the trigger revokes their tokens (disabling: all of them)."""
    await _bump_user(db, username, "is_active = $2", active)


async def set_scopes(db: Database, username: str, scopes: list[str]) -> tuple[str, ...]:
    """Replace a user's scopes; tokens issued with the old ones stop working (the trigger)."""
    unknown = sorted(set(scopes) - KNOWN_SCOPES)
    if unknown:
        raise UserError(
            f"scopes: unknown {', '.join(unknown)} (known: {', '.join(sorted(KNOWN_SCOPES))})"
        )
    kept = tuple(dict.fromkeys(scopes))
    await _bump_user(db, username, "scopes = $2", " ".join(kept))
    return kept


async def token_versions_changed(db: Database, within: float) -> dict[int, int]:
    """`token_version` of each user whose tokens changed in the last `within` seconds.

    Users changed earlier cannot hold an unexpired token of an older version when `within`
    covers the access-token lifetime, so the answer stays small: the users changed lately.
    """
    rows = await db.fetch(
        """
        SELECT id, token_version FROM users
        WHERE tokens_changed_at > now() - make_interval(secs => $1)
        """,
        within,
    )
    return {row["id"]: row["token_version"] for row in rows}
