"""Read cache for `GET /items/{id}`: never serves a client its own write stale.

Each worker keeps a dict of item id -> response body (precomputed bytes) and ETag version.
Workers are separate processes, so a write cannot reach the other workers' dicts; instead
every entry remembers the *generation* of its id, a counter in a table in shared memory
(made in the main process before workers spawn), and a hit is served only while that
counter is unchanged:

- a write bumps the generation of its id, on this machine, after its commit and before its
  response is sent, so no worker of this machine serves the old value afterwards;
- a read notes the generation *before* it queries the database and stores its row only if
  the generation has not moved since, so a read that raced a write never caches the older
  version over the newer one;
- other machines learn of a write from PostgreSQL: a trigger on `items` sends
  `NOTIFY items_changed, '<id>'` in the writing transaction (`'*'` for a TRUNCATE), and
  each worker LISTENs on a dedicated connection and bumps the generation on receipt
  (measured: milliseconds). While that connection is down the cache serves nothing, and
  it starts empty when it comes back.

`CACHE_TTL` bounds an entry's life in any case; `CACHE_MAX_ITEMS` bounds each worker's dict
(oldest entry out first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.sharedctypes import RawArray
from multiprocessing.synchronize import Lock as LockType
from typing import Any

import asyncpg
from sanic import Sanic

from app.db import connect_direct
from app.metrics import CACHE_HITS, CACHE_MISSES, Tally
from app.settings import Settings

log = logging.getLogger("app.cache")

CHANNEL = "items_changed"
# Ids share generation counters modulo this: a collision only costs an extra miss.
GENERATION_SLOTS = 1 << 16
_MASK = GENERATION_SLOTS - 1
LISTEN_PING_INTERVAL = 5.0
LISTEN_RETRY_DELAY = 1.0
_HITS = Tally(CACHE_HITS.labels("items"))
_MISSES = Tally(CACHE_MISSES.labels("items"))


@dataclass(slots=True)
class Entry:
    version: int
    generation: int
    epoch: int
    expires: float
    body: bytes


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a reader saw before it read the database: its entry is stored only if unchanged."""

    generation: int
    epoch: int


class Generations:
    """Per-id write counters in shared memory; bumps take the lock, reads do not need it."""

    def __init__(self, array: Any, lock: LockType) -> None:
        self._cells = memoryview(array).cast("B").cast("q")
        self._lock = lock

    @staticmethod
    def allocate() -> tuple[Any, LockType]:
        return RawArray("q", GENERATION_SLOTS), multiprocessing.Lock()

    def current(self, item_id: int) -> int:
        return int(self._cells[item_id & _MASK])

    def bump(self, item_id: int) -> None:
        # Under the lock: two writers must never both turn 5 into 6 and hide one write.
        with self._lock:
            self._cells[item_id & _MASK] += 1


class ItemCache:
    """One worker's cache of item responses, checked against the machine's generations."""

    def __init__(self, generations: Generations, ttl: float, max_items: int) -> None:
        self.generations = generations
        self.ttl = ttl
        self.max_items = max_items
        self.entries: dict[int, Entry] = {}
        # True while this worker hears other machines' writes; no hits otherwise.
        self.listening = False
        # Bumped when the notification stream restarts: reads begun before are not stored.
        self.epoch = 0

    def get(self, item_id: int) -> Entry | None:
        entry = self.entries.get(item_id)
        if (
            entry is not None
            and self.listening
            and entry.generation == self.generations.current(item_id)
            and entry.epoch == self.epoch
            and entry.expires > time.monotonic()
        ):
            _HITS.n += 1
            return entry
        _MISSES.n += 1
        return None

    def snapshot(self, item_id: int) -> Snapshot:
        return Snapshot(self.generations.current(item_id), self.epoch)

    def put(self, item_id: int, seen: Snapshot, version: int, body: bytes) -> None:
        """Store a row read after `seen`, unless a write or a restart came in between."""
        if (
            not self.listening
            or seen.epoch != self.epoch
            or seen.generation != self.generations.current(item_id)
        ):
            return
        held = self.entries.get(item_id)
        if held is not None and held.generation == seen.generation and held.version > version:
            return
        entries = self.entries
        if held is None and len(entries) >= self.max_items:
            del entries[next(iter(entries))]
        entries[item_id] = Entry(
            version, seen.generation, seen.epoch, time.monotonic() + self.ttl, body
        )

    def invalidate(self, item_id: int) -> None:
        """A write to `item_id` committed: no worker of this machine may serve the old one."""
        self.generations.bump(item_id)
        self.entries.pop(item_id, None)

    def restart(self, *, listening: bool) -> None:
        self.listening = listening
        self.epoch += 1
        self.entries.clear()


async def listen_for_writes(cache: ItemCache, settings: Settings) -> None:
    """Keep a LISTEN connection open for as long as the worker runs, reconnecting as needed."""

    def notified(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload == "*":
            # The table was truncated: every entry may be stale.
            cache.restart(listening=True)
            return
        try:
            item_id = int(payload)
        except ValueError:
            log.warning("ignoring %s notification %r", CHANNEL, payload)
            return
        cache.invalidate(item_id)

    while True:
        conn: asyncpg.Connection | None = None
        try:
            # LISTEN needs a session of its own on PostgreSQL, never PgBouncer's transaction
            # pooling (DATABASE_DIRECT_URL; app/settings.py refuses the combination).
            conn = await connect_direct(settings)
            await conn.add_listener(CHANNEL, notified)
            # Writes made while not listening were missed: start empty.
            cache.restart(listening=True)
            while True:
                await asyncio.sleep(LISTEN_PING_INTERVAL)
                await conn.fetchval("SELECT 1", timeout=LISTEN_PING_INTERVAL)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 (any failure: stop serving hits, reconnect)
            if cache.listening:
                log.warning("cache invalidation stream lost (%r); cache off until back", exc)
            cache.restart(listening=False)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 1)
        await asyncio.sleep(LISTEN_RETRY_DELAY)


def register(app: Sanic[Any, Any]) -> None:
    """Give each worker an `ItemCache` (when CACHE_ENABLED) and its LISTEN connection."""
    settings: Settings = app.ctx.settings
    if not settings.CACHE_ENABLED:
        return

    @app.main_process_start
    async def share_generations(app: Sanic[Any, Any]) -> None:
        app.shared_ctx.cache_generations = Generations.allocate()

    @app.before_server_start
    async def open_cache(app: Sanic[Any, Any]) -> None:
        # Single-process servers (tests) have no main process: a table of their own.
        shared = getattr(app.shared_ctx, "cache_generations", None) or Generations.allocate()
        cache = ItemCache(Generations(*shared), settings.CACHE_TTL, settings.CACHE_MAX_ITEMS)
        app.ctx.item_cache = cache
        app.ctx.cache_listener = asyncio.get_running_loop().create_task(
            listen_for_writes(cache, settings), name="cache-listener"
        )

    @app.before_server_stop
    async def close_cache(app: Sanic[Any, Any]) -> None:
        task: asyncio.Task[None] | None = getattr(app.ctx, "cache_listener", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
