"""Idempotent creates: `POST /items` with an `Idempotency-Key` runs once per caller and key.

PostgreSQL is the arbiter, so it holds across workers and machines
(draft-ietf-httpapi-idempotency-key-header):

1. *Claim*: `INSERT ... ON CONFLICT (scope, key) DO NOTHING`, committed at once, so a row
   for the key exists to be locked. The same statement reads the key's stored response, if
   its first request completed: that is a read, replayed at once (or 422 for another
   fingerprint) without the lock, so any number of concurrent retries of a completed
   request all get it, none a 409.
2. *Run*, in one transaction: lock that row `FOR UPDATE NOWAIT`; if another request holds
   the lock it is running the same key right now -> 409 (`Retry-After`). Under the lock:
   a stored response (completed since the claim) with the same fingerprint is replayed,
   one with another fingerprint is 422; otherwise the item is created and the response
   (status, headers, body) written to the row, and both commit together. A request that
   dies mid-way holds no lock once its connection goes, and its transaction (item
   included) rolls back, so the key is free again: never a second item, never a key stuck
   "in flight".

The fingerprint is taken over the validated body, in the form the server acts on (defaults
filled in, the name trimmed, the price at 2 places), so `"price": 2` and `"price": 2.0` are
the same request.

Only a completed create is stored; a failed attempt (e.g. duplicate sku) stores nothing,
so a retry runs again. Keys expire `IDEMPOTENCY_TTL` seconds after they were first used:
an expired key counts as unused (lazily, on its next use), and every worker deletes
expired rows every `IDEMPOTENCY_PURGE_INTERVAL` seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from sanic import HTTPResponse, Request, Sanic

from app.auth.identity import caller_key
from app.background import run_in_background
from app.db.pool import Database
from app.http.responses import Response
from app.settings import Settings

log = logging.getLogger("app.idempotency")

HEADER = "idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
PURGE_BATCH = 5000
# The operation a fingerprint names: one spelling per route, whichever path reached it.
CREATE_ITEM = "POST /items"
# Printable ASCII without spaces or quotes; the draft's sf-string quotes are optional here.
_SANE_KEY = re.compile(r"[!#-\[\]-~]{1,255}")

# The SELECT sees the table as it was before the INSERT (one snapshot): a completed, live
# response stored earlier, or nothing (a new key, or one whose first request is running).
SQL_CLAIM = """
WITH claim AS (
    INSERT INTO idempotency_keys (scope, key, fingerprint, expires_at)
    VALUES ($1, $2, $3, now() + make_interval(secs => $4))
    ON CONFLICT (scope, key) DO NOTHING
)
SELECT fingerprint, status, headers, body FROM idempotency_keys
WHERE scope = $1 AND key = $2 AND status IS NOT NULL AND expires_at > now()
"""
SQL_LOCK = """
SELECT id, fingerprint, status, headers, body, expires_at > now() AS live
FROM idempotency_keys WHERE scope = $1 AND key = $2
FOR UPDATE NOWAIT
"""
SQL_PEEK = "SELECT fingerprint FROM idempotency_keys WHERE scope = $1 AND key = $2"
SQL_RECLAIM = """
UPDATE idempotency_keys
SET fingerprint = $2, status = NULL, headers = NULL, body = NULL, item_id = NULL,
    created_at = now(), expires_at = now() + make_interval(secs => $3)
WHERE id = $1
"""
SQL_FINISH = (
    "UPDATE idempotency_keys SET status = $2, headers = $3, body = $4, item_id = $5 WHERE id = $1"
)
SQL_PURGE = """
DELETE FROM idempotency_keys WHERE id IN (
    SELECT id FROM idempotency_keys WHERE expires_at < now() LIMIT $1 FOR UPDATE SKIP LOCKED
)
"""


class IdempotencyError(Exception):
    """A request's `Idempotency-Key` cannot be honoured as sent."""


class BadIdempotencyKey(IdempotencyError):
    def __init__(self) -> None:
        super().__init__(
            "Idempotency-Key must be 1-255 printable ASCII characters without spaces, "
            'optionally in double quotes, e.g. "8e03978e-40d5-43e8-bc93-6894a57f9324".'
        )


class KeyInFlight(IdempotencyError):
    def __init__(self) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still being processed; retry shortly."
        )


class KeyReused(IdempotencyError):
    def __init__(self) -> None:
        super().__init__("This Idempotency-Key was already used with a different request body.")


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response as it was first sent: replayed byte for byte to retries."""

    status: int
    headers: dict[str, str]
    body: bytes
    item_id: int | None = None

    def to_http(self, *, replayed: bool = False) -> HTTPResponse:
        headers = dict(self.headers)
        content_type = headers.pop("Content-Type", None)
        if replayed:
            headers[REPLAYED_HEADER] = "true"
        return Response(self.body, status=self.status, headers=headers, content_type=content_type)


def key_of(request: Request) -> str | None:
    """The request's `Idempotency-Key`, unquoted; None when it sent none."""
    sent: str | None = request.headers.get(HEADER)
    if sent is None:
        return None
    key = sent.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not _SANE_KEY.fullmatch(key):
        raise BadIdempotencyKey()
    return key


def fingerprint(operation: str, body: Mapping[str, Any]) -> str:
    """SHA-256 of the operation and the validated body in canonical form (sorted keys).

    `body` is what the handler acts on (a model's dump): two requests that differ only in
    spelling (`2` and `2.0`, key order, an omitted default) are the same request. Its
    strings are checked text (the strict parser refuses lone surrogates), so always encode.
    """
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS, default=str)
    digest = hashlib.sha256(f"{operation}\n".encode())
    digest.update(canonical)
    return digest.hexdigest()


Create = Callable[[asyncpg.Connection], Awaitable[StoredResponse]]


async def create_once(
    db: Database, scope: str, key: str, fingerprint_: str, ttl: int, create: Create
) -> tuple[StoredResponse, bool]:
    """Run `create` at most once for (scope, key); returns the response and whether replayed."""
    stored = await db.fetchrow(SQL_CLAIM, scope, key, fingerprint_, float(ttl))
    if stored is not None:
        if stored["fingerprint"] != fingerprint_:
            raise KeyReused()
        return _stored(stored), True
    # One deadline for the whole transaction, as for one statement.
    async with db.held() as conn:
        return await _create_in_transaction(conn, scope, key, fingerprint_, ttl, create)


async def _create_in_transaction(
    conn: asyncpg.Connection, scope: str, key: str, fingerprint_: str, ttl: int, create: Create
) -> tuple[StoredResponse, bool]:
    try:
        async with conn.transaction():
            row = await conn.fetchrow(SQL_LOCK, scope, key)
            if row is None:
                # Purged between claim and lock (it had expired): the caller simply retries.
                raise KeyInFlight()
            if row["live"] and row["status"] is not None:
                if row["fingerprint"] != fingerprint_:
                    raise KeyReused()
                return _stored(row), True
            if not row["live"] or row["fingerprint"] != fingerprint_:
                await conn.execute(SQL_RECLAIM, row["id"], fingerprint_, float(ttl))
            response = await create(conn)
            await conn.execute(
                SQL_FINISH,
                row["id"],
                response.status,
                orjson.dumps(response.headers).decode(),
                response.body,
                response.item_id,
            )
            return response, False
    except asyncpg.LockNotAvailableError:
        held = await conn.fetchval(SQL_PEEK, scope, key)
        if held is not None and held != fingerprint_:
            raise KeyReused() from None
        raise KeyInFlight() from None


def _stored(row: asyncpg.Record) -> StoredResponse:
    return StoredResponse(row["status"], orjson.loads(row["headers"]), row["body"])


async def create_item_once(
    request: Request, key: str, body: Mapping[str, Any], create: Create
) -> HTTPResponse:
    """Create `body` once per caller and `key`: the first response, or its replay."""
    settings: Settings = request.app.ctx.settings
    response, replayed = await create_once(
        request.app.ctx.db,
        caller_key(request),
        key,
        fingerprint(CREATE_ITEM, body),
        settings.IDEMPOTENCY_TTL,
        create,
    )
    return response.to_http(replayed=replayed)


async def purge_expired(db: Database) -> int:
    """Delete expired keys in batches; returns how many went.

    Plain SQL, not the ORM (the data-access rule, app/items/store.py): the batch skips rows
    another worker's purge or a running request holds (`FOR UPDATE SKIP LOCKED` in the
    subquery), and Tortoise drops the lock clause from a subquery, so its batched delete would
    wait on those rows instead.
    """
    total = 0
    while True:
        status = await db.execute(SQL_PURGE, PURGE_BATCH)
        deleted = int(status.rsplit(" ", 1)[-1])
        total += deleted
        if deleted < PURGE_BATCH:
            return total


async def _purge_forever(app: Sanic[Any, Any], interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        db = app.ctx.db
        if db is None:
            continue
        try:
            deleted = await purge_expired(db)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("purging expired idempotency keys failed: %r", exc)
        else:
            if deleted:
                log.info("purged %d expired idempotency keys", deleted)


def register(app: Sanic[Any, Any], settings: Settings) -> None:
    """Purge expired keys periodically in each worker (deletes skip rows others hold)."""
    run_in_background(
        app,
        "idempotency-purge",
        lambda app: _purge_forever(app, settings.IDEMPOTENCY_PURGE_INTERVAL),
    )
