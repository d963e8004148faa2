"""Read cache for `GET /items/{id}` and `GET /items`: never serves a client its own write stale.

Each worker keeps a dict of item id -> response body (precomputed bytes) and ETag version,
and a dict of list query -> page (body bytes and next cursor). Workers are separate
processes, so a write cannot reach the other workers' dicts; instead every entry remembers a
*generation*, a stamp in a table in shared memory (made in the main process before workers
spawn; written without a lock, see `Generations`), and a hit is served only while that stamp
is unchanged. An item remembers its id's cell; a page remembers the table's own cell, which
every write to any item moves (a write may add a row to, drop one from, or reorder any page):

- a write bumps the generation of its id and the table's, on this machine, after its commit
  and before its response is sent, so no worker of this machine serves the old value
  afterwards;
- a read notes the generation *before* it queries the database and stores its row (or page)
  only if the generation has not moved since, so a read that raced a write never caches the
  older version over the newer one;
- other machines learn of a write from PostgreSQL: a trigger on `items` (`items_notify_change`,
  migrations/models/5_*_items_insert_notify.py) sends `NOTIFY items_changed, '<id>'` for
  each row inserted, updated or deleted, in the writing transaction (`'*'` for a TRUNCATE),
  and each worker LISTENs on a dedicated connection and bumps the generations on receipt,
  within milliseconds.

A worker that cannot be sure it hears every write serves nothing from its cache and drops it:
from the moment its LISTEN connection closes (asyncpg's termination callback, at once: a
PostgreSQL restart, `pg_terminate_backend`, a reset connection), errs, or misses a ping
(`LISTEN_PING_INTERVAL` + `LISTEN_PING_TIMEOUT`: a silent network loss), until LISTEN is
registered again; reads that began before that are not stored (`epoch`).
`tests/server/test_cache_faults.py` restarts and terminates the database under two instances.

`CACHE_TTL` bounds an entry's life in any case (a random 75-100 % of it, `TTL_SPREAD`): it is
what bounds the staleness of a write that bypasses the trigger (triggers disabled,
`session_replication_role = replica`). `CACHE_MAX_ITEMS` bounds each worker's item dict,
`CACHE_MAX_PAGES` and `CACHE_MAX_PAGE_BYTES` its page dict (oldest entry out first).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sanic import Sanic

from app.background import run_in_background
from app.items.generations import Generations
from app.items.listener import listen_for_writes
from app.items.pagination import ListQuery
from app.settings import Settings
from app.shared_memory import share


class Lookups:
    """This process's cache hits and misses since the metrics flush last took them
    (app/ops/metrics.py): a plain `+= 1` per lookup, no locked write to a metrics file."""

    __slots__ = ("hits", "misses")

    def __init__(self) -> None:
        self.hits = self.misses = 0

    def take(self) -> tuple[int, int]:
        counts = self.hits, self.misses
        self.hits = self.misses = 0
        return counts


LOOKUPS = Lookups()
PAGE_LOOKUPS = Lookups()

# An entry lives a random 75-100 % of CACHE_TTL: entries stored together (the burst after a
# start) then expire over a quarter of it, not all in one second and back to the database at
# once (a latency spike every CACHE_TTL under steady load).
TTL_SPREAD = 0.25


@dataclass(slots=True)
class Entry:
    version: int
    generation: int
    epoch: int
    expires: float
    body: bytes


@dataclass(slots=True)
class Page:
    """A list page as served: the body, and the cursor its `Link` header needs."""

    generation: int  # the table's
    epoch: int
    expires: float
    body: bytes
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a reader saw before it read the database: its entry is stored only if unchanged."""

    generation: int
    epoch: int


class ItemCache:
    """One worker's cache of item responses and list pages, checked against the machine's
    generations."""

    def __init__(
        self,
        generations: Generations,
        ttl: float,
        max_items: int,
        *,
        max_pages: int = 0,
        max_page_bytes: int = 0,
    ) -> None:
        self.generations = generations
        self.ttl = ttl
        self.max_items = max_items
        self.entries: dict[int, Entry] = {}
        # 0: pages are not cached (`CACHE_MAX_PAGES=0`).
        self.max_pages = max_pages
        self.max_page_bytes = max_page_bytes
        # Keyed by the validated query, so spellings of one query share a page (`page_key`).
        self.pages: dict[PageKey, Page] = {}
        self.page_bytes = 0
        # The table generation every held page was read under (older ones are never served).
        self._pages_generation = 0
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
            LOOKUPS.hits += 1
            return entry
        LOOKUPS.misses += 1
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
        entries[item_id] = Entry(version, seen.generation, seen.epoch, self._expiry(), body)

    def invalidate(self, item_id: int) -> None:
        """A write to `item_id` committed: no worker of this machine may serve the old item,
        nor any page read before it."""
        self.generations.bump(item_id)
        self.generations.bump_table()
        self.entries.pop(item_id, None)

    def get_page(self, query: ListQuery) -> Page | None:
        page = self.pages.get(page_key(query))
        if (
            page is not None
            and self.listening
            and page.generation == self.generations.table()
            and page.epoch == self.epoch
            and page.expires > time.monotonic()
        ):
            PAGE_LOOKUPS.hits += 1
            return page
        PAGE_LOOKUPS.misses += 1
        return None

    def snapshot_pages(self) -> Snapshot:
        return Snapshot(self.generations.table(), self.epoch)

    def put_page(
        self, query: ListQuery, seen: Snapshot, body: bytes, next_cursor: str | None
    ) -> None:
        """Store a page read after `seen`, unless any write or a restart came in between."""
        if (
            not self.listening
            or seen.epoch != self.epoch
            or seen.generation != self.generations.table()
            or not self.max_pages
            or len(body) > self.max_page_bytes
        ):
            return
        pages = self.pages
        if seen.generation != self._pages_generation:
            # A table generation never comes back: every page held is dead, free them now.
            pages.clear()
            self.page_bytes = 0
            self._pages_generation = seen.generation
        key = page_key(query)
        held = pages.pop(key, None)
        if held is not None:
            self.page_bytes -= len(held.body)
        while pages and (
            len(pages) >= self.max_pages or self.page_bytes + len(body) > self.max_page_bytes
        ):
            self.page_bytes -= len(pages.pop(next(iter(pages))).body)
        pages[_bounded(key)] = Page(seen.generation, seen.epoch, self._expiry(), body, next_cursor)
        self.page_bytes += len(body)

    def _expiry(self) -> float:
        spread = TTL_SPREAD * random.random()  # noqa: S311 (spreading expiries, not a secret)
        return time.monotonic() + self.ttl * (1.0 - spread)

    def restart(self, *, listening: bool) -> None:
        self.listening = listening
        self.epoch += 1
        self.entries.clear()
        self.pages.clear()
        self.page_bytes = 0


# A page's key: the validated query's values, a plain tuple (hashed and compared in C).
PageKey = tuple[Any, ...]
_CENT = Decimal("0.01")


def page_key(query: ListQuery) -> PageKey:
    """The key of `query`'s page: every spelling of one query gives an equal key.

    `limit`, `sort`, `q` and the prices as parsed (`020` is 20, `1.50` equals `1.5`), the
    cursor as decoded (its sort is `sort`); unknown parameters are not part of a `ListQuery`.
    """
    cursor = query.cursor
    if cursor is None:
        return (query.limit, query.sort, query.q, query.min_price, query.max_price)
    return (
        query.limit,
        query.sort,
        query.q,
        query.min_price,
        query.max_price,
        cursor.key,
        cursor.id,
    )


def _bounded(key: PageKey) -> PageKey:
    """`key` as stored, equal (and hashing equal) to it, in bounded memory.

    A price as sent may carry any number of digits (`1.5000…0`, `150e-2`, up to the request
    line's length): the stored key holds its 2-place form, the same value. The rest is
    bounded by parsing: `limit`, `sort` and the cursor's id, timestamp or price are small,
    and `q` is at most MAX_QUERY_LENGTH characters.
    """
    return tuple(value.quantize(_CENT) if isinstance(value, Decimal) else value for value in key)


def register(app: Sanic[Any, Any], settings: Settings) -> None:
    """Give each worker an `ItemCache` (when CACHE_ENABLED) and its LISTEN connection."""
    if not settings.CACHE_ENABLED:
        return
    generations = share(app, "cache_generations", Generations.allocate)

    @app.before_server_start
    async def open_cache(app: Sanic[Any, Any]) -> None:
        app.ctx.item_cache = ItemCache(
            Generations(generations.memory),
            settings.CACHE_TTL,
            settings.CACHE_MAX_ITEMS,
            max_pages=settings.CACHE_MAX_PAGES,
            max_page_bytes=settings.CACHE_MAX_PAGE_BYTES,
        )

    run_in_background(
        app,
        "cache-listener",
        lambda app: listen_for_writes(app.ctx.item_cache, settings),
        start="before_server_start",
    )
