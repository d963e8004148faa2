"""Users and their refresh tokens: the store behind login, refresh, logout and the CLI.

A cold path, so on the ORM: the models in `models/user.py`, the schema's source. Every function
takes the ORM's client and runs its queries on it (`using_db`): a worker's is
`orm_client(app.ctx.orm)`, a command's comes from `orm_session` (app/db/wiring.py). Either
takes its connections through the fair queue and deadline of the worker's pool, like the hot
paths' SQL (app/db/orm.py). Knows nothing of HTTP: it returns values or raises the errors below.

Refresh tokens rotate: each use marks the token used, in one conditional UPDATE, and stores its
successor in the same *family* (one per login), so of two refreshes with one token exactly one
succeeds, on any worker or machine. A used token presented again means it was copied: its
whole family is revoked, and so are the user's access tokens.

Access tokens carry the user's `token_version`. A trigger on `users` (migration 3) bumps it
and stamps `tokens_changed_at` whenever the account is disabled or re-enabled, its scopes or
password change, or `revoke_user_tokens` runs, whether through this module or plain SQL;
disabling also deletes the user's refresh tokens. Workers learn the new versions by polling
`token_versions_changed` (app/auth/token_cache.py), never by a query per request.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import re
import uuid
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from tortoise.backends.base.client import BaseDBAsyncClient, TransactionContext
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q, RawSQL, Subquery

import models

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


class UserError(Exception):
    """A user cannot be created or changed as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    scopes: tuple[str, ...]
    is_active: bool
    # Access tokens issued now carry this; older versions are refused (app/auth/token_cache.py).
    token_version: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The shape sanic-jwt reads (`user_id`) and `GET /auth/me` shows."""
        return {"user_id": self.id, "username": self.username, "scopes": list(self.scopes)}


def _user(account: models.User) -> User:
    return User(
        id=account.id,
        username=account.username,
        scopes=tuple(account.scopes.split()),
        is_active=account.is_active,
        token_version=account.token_version,
    )


def _transaction(db: BaseDBAsyncClient) -> TransactionContext:
    # Tortoise's `in_transaction()` would take the context's default connection; this one is
    # on the client the caller passed (app/db/orm.py: one turn, one deadline).
    return db._in_transaction()  # noqa: SLF001


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


async def create_user(
    db: BaseDBAsyncClient, username: str, password: str, scopes: list[str]
) -> User:
    """Create an active user; the password is stored as an argon2id hash only."""
    check_new_user(username, password, scopes)
    password_hash = await asyncio.to_thread(HASHER.hash, password)
    try:
        account = await models.User.create(
            username=username,
            password_hash=password_hash,
            scopes=" ".join(dict.fromkeys(scopes)),
            using_db=db,
        )
    except IntegrityError:  # the username's unique constraint: the one a valid user can break
        raise UserError(f"username: {username!r} already exists") from None
    return _user(account)


async def authenticate(
    db: BaseDBAsyncClient, username: str, password: str, executor: Executor | None = None
) -> User | None:
    """The active user with these credentials, else None, in the same time either way."""
    account = None
    if USERNAME.fullmatch(username) and len(password) <= MAX_PASSWORD_LENGTH:
        account = await models.User.get_or_none(username=username, using_db=db)
    password_hash = account.password_hash if account is not None else _dummy_hash()
    # Hashing blocks for ~20 ms: off the event loop, in a small pool that bounds memory use.
    matches = await asyncio.get_running_loop().run_in_executor(
        executor, _verify, password_hash, password
    )
    if account is None or not matches or not account.is_active:
        return None
    return _user(account)


async def get_user(db: BaseDBAsyncClient, user_id: int) -> User | None:
    """The active user with this id, else None."""
    account = await models.User.get_or_none(id=user_id, is_active=True, using_db=db)
    return _user(account) if account is not None else None


async def _hold_active_user(db: BaseDBAsyncClient, user_id: int) -> bool:
    """Lock the user's row until the transaction on `db` ends, if the user is active.

    A disable or `revoke_user_tokens` updates that row first, so it waits for a token stored
    under this lock, then deletes it, or runs first, and this finds the user inactive (or its
    token gone). PostgreSQL's FOR SHARE would be enough, and the ORM cannot say it: FOR NO KEY
    UPDATE is the weakest lock it can, and also makes one user's own logins and refreshes wait
    for each other (a few milliseconds each); the token's insert, which takes KEY SHARE on the
    row for its foreign key, does not conflict with it.
    """
    # A model query: `values_list` would drop the lock clause.
    held = (
        await models.User.filter(id=user_id, is_active=True)
        .select_for_update(no_key=True)
        .only("id")
        .using_db(db)
    )
    return bool(held)


async def store_refresh_token(db: BaseDBAsyncClient, user_id: int, token: str, ttl: int) -> None:
    """Keep the hash of a login's refresh token (a new family) until it expires.

    Stored only while the user is active (`_hold_active_user`), so none is left behind by a
    login racing a disable.
    """
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl)
    async with _transaction(db) as conn:
        if await _hold_active_user(conn, user_id):
            await models.RefreshToken.create(
                user_id=user_id,
                token_hash=hash_token(token),
                family=uuid.uuid4(),
                expires_at=expires_at,
                using_db=conn,
            )
    await prune_refresh_tokens(db, user_id)


async def prune_refresh_tokens(db: BaseDBAsyncClient, user_id: int) -> None:
    """Drop the user's expired tokens, and the oldest beyond the per-user limits."""
    tokens = models.RefreshToken.filter(user_id=user_id)
    live_beyond = (
        tokens.filter(used_at__isnull=True).order_by("-id").offset(MAX_REFRESH_TOKENS_PER_USER)
    )
    used_beyond = (
        tokens.filter(used_at__isnull=False)
        .order_by("-id")
        .offset(MAX_USED_REFRESH_TOKENS_PER_USER)
    )
    await (
        tokens.filter(
            Q(expires_at__lte=datetime.now(UTC))
            | Q(id__in=Subquery(live_beyond.values("id")))
            | Q(id__in=Subquery(used_beyond.values("id")))
        )
        .using_db(db)
        .delete()
    )


class Rotation(enum.Enum):
    """What became of a refresh token presented for rotation."""

    ROTATED = "rotated"  # it was live: it is used now, and its successor is stored
    REUSED = "reused"  # it was used before: its family and the user's access tokens are revoked
    REFUSED = "refused"  # unknown, expired, revoked, another user's, or the user is disabled


async def rotate_refresh_token(
    db: BaseDBAsyncClient, user_id: int, token: str, successor: str, ttl: int
) -> Rotation:
    """Replace a live refresh token by `successor` (same family, `ttl` from now), atomically.

    One conditional UPDATE marks the token used: it takes the token's row lock and re-checks
    `used_at IS NULL` after waiting for it, so of concurrent rotations of one token exactly one
    updates a row and stores a successor; the others then find it used and revoke the family
    (tests/server/test_token_lifecycle.py). The user's row is held first
    (`_hold_active_user`), so a concurrent disable or `revoke_user_tokens` either waits for
    this rotation, then deletes its successor, or runs first, and nothing is rotated.
    """
    now = datetime.now(UTC)
    presented = hash_token(token)
    async with _transaction(db) as conn:
        rotated = False
        if await _hold_active_user(conn, user_id):
            live = models.RefreshToken.filter(token_hash=presented, user_id=user_id)
            rotated = bool(
                await live.filter(used_at__isnull=True, expires_at__gt=now)
                .using_db(conn)
                .update(used_at=now)
            )
        if rotated:
            [family] = await live.using_db(conn).values_list("family", flat=True)
            await models.RefreshToken.create(
                user_id=user_id,
                token_hash=hash_token(successor),
                family=family,
                expires_at=now + timedelta(seconds=ttl),
                using_db=conn,
            )
    if rotated:
        await prune_refresh_tokens(db, user_id)
        return Rotation.ROTATED
    # One DELETE finds the family of the used token and revokes it: of concurrent replays
    # only the first deletes anything.
    replayed = models.RefreshToken.filter(
        token_hash=presented, user_id=user_id, used_at__isnull=False
    ).values("family")
    revoked = await models.RefreshToken.filter(family=Subquery(replayed)).using_db(db).delete()
    if not revoked:
        return Rotation.REFUSED
    # A statement of its own: holding the family's rows while waiting for the user's row
    # would take the locks in the opposite order to a rotation or a revocation (deadlock).
    await models.User.filter(id=user_id).using_db(db).update(token_version=F("token_version") + 1)
    return Rotation.REUSED


async def revoke_refresh_token(db: BaseDBAsyncClient, token: str) -> bool:
    """End the login `token` belongs to: every token of its family goes; True when found."""
    family = models.RefreshToken.filter(token_hash=hash_token(token)).values("family")
    revoked = await models.RefreshToken.filter(family=Subquery(family)).using_db(db).delete()
    return revoked > 0


async def _change_user(db: BaseDBAsyncClient, username: str, **changes: Any) -> None:
    changed = await models.User.filter(username=username).using_db(db).update(**changes)
    if not changed:
        raise UserError(f"username: no user {username!r}")


async def revoke_user_tokens(db: BaseDBAsyncClient, username: str) -> int:
    """Revoke every token of a user: refresh tokens now, access tokens within the poll bound.

    Returns the number of refresh tokens revoked. In one transaction, the user's row first:
    its lock makes a concurrent rotation finish before the DELETE looks (a new statement,
    so it sees the successor) or wait until the DELETE is committed (and find nothing).
    """
    async with _transaction(db) as conn:
        await _change_user(conn, username, token_version=F("token_version") + 1)
        user_id = models.User.filter(username=username).values("id")
        revoked: int = (
            await models.RefreshToken.filter(user_id=Subquery(user_id)).using_db(conn).delete()
        )
    return revoked


async def set_active(db: BaseDBAsyncClient, username: str, *, active: bool) -> None:
    """Disable or re-enable a user; the trigger revokes their tokens (disabling: all of them)."""
    await _change_user(db, username, is_active=active)


async def set_scopes(db: BaseDBAsyncClient, username: str, scopes: list[str]) -> tuple[str, ...]:
    """Replace a user's scopes; tokens issued with the old ones stop working (the trigger)."""
    unknown = sorted(set(scopes) - KNOWN_SCOPES)
    if unknown:
        raise UserError(
            f"scopes: unknown {', '.join(unknown)} (known: {', '.join(sorted(KNOWN_SCOPES))})"
        )
    kept = tuple(dict.fromkeys(scopes))
    await _change_user(db, username, scopes=" ".join(kept))
    return kept


async def token_versions_changed(db: BaseDBAsyncClient, within: float) -> dict[int, int]:
    """`token_version` of each user whose tokens changed in the last `within` seconds.

    Users changed earlier cannot hold an unexpired token of an older version when `within`
    covers the access-token lifetime, so the answer stays small: the users changed lately.
    """
    # The database's clock, which stamped tokens_changed_at: a worker's clock running ahead
    # would shorten the window. A number from the settings, written into the SQL as one.
    since = RawSQL(f"now() - make_interval(secs => {float(within)!r})")
    changed = (
        await models.User.filter(tokens_changed_at__gt=since)
        .using_db(db)
        .values_list("id", "token_version")
    )
    return dict(changed)
