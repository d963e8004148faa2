"""The read cache's news of other machines' writes: a LISTEN connection per worker.

A trigger on `items` (migrations/models/5_*_items_insert_notify.py) sends
`NOTIFY items_changed, '<id>'` for each row inserted, updated or deleted (`'*'` for a
TRUNCATE); each worker bumps the generations on receipt, and serves no hit from the moment it
cannot be sure it hears every write (app/items/cache.py says when).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import asyncpg

from app.db.wiring import connect_direct
from app.settings import Settings

if TYPE_CHECKING:
    from app.items.cache import ItemCache

log = logging.getLogger("app.cache")

CHANNEL = "items_changed"
# A LISTEN connection that dies silently (no FIN: a network loss) is noticed by a ping: the
# cache stops serving at most INTERVAL + TIMEOUT after the last sign of life.
LISTEN_PING_INTERVAL = 1.0
LISTEN_PING_TIMEOUT = 1.0
LISTEN_RETRY_DELAY = 0.5
# The LISTEN sessions' application_name: operators (and the fault tests) find them by it.
LISTENER_NAME = "items-cache-listener"


async def listen_for_writes(cache: ItemCache, settings: Settings) -> None:
    """Keep a LISTEN connection open for as long as the worker runs, reconnecting as needed.

    The cache serves hits only between a LISTEN registered and the first sign that the
    connection may have missed a notification.
    """

    def notified(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload == "*":
            # The table was truncated: every entry may be stale.
            cache.generations.bump_table()
            cache.restart(listening=cache.listening)
            return
        try:
            item_id = int(payload)
        except ValueError:
            log.warning("ignoring %s notification %r", CHANNEL, payload)
            return
        cache.invalidate(item_id)

    def stop_serving(reason: object) -> None:
        if cache.listening:
            log.warning("cache invalidation stream lost (%s); cache off until back", reason)
        cache.restart(listening=False)

    while True:
        conn: asyncpg.Connection | None = None
        closed = asyncio.Event()

        def on_close(_conn: Any, closed: asyncio.Event = closed) -> None:
            # Called as soon as asyncpg sees the connection end (a server restart, a
            # terminated backend, a reset), not at the next ping: notifications may be lost
            # from here on. Set first when this loop closes the connection itself.
            if not closed.is_set():
                closed.set()
                stop_serving("connection closed")

        try:
            # LISTEN needs a session of its own on PostgreSQL, never PgBouncer's transaction
            # pooling (DATABASE_DIRECT_URL; app/settings.py refuses the combination).
            conn = await connect_direct(settings)
            conn.add_termination_listener(on_close)
            await conn.execute(f"SET application_name = '{LISTENER_NAME}'")
            await conn.add_listener(CHANNEL, notified)
            if not closed.is_set():
                # Writes made while not listening were missed: start empty, and store no
                # read that began before this point (a new epoch).
                cache.restart(listening=True)
            while not await _set_within(closed, LISTEN_PING_INTERVAL):
                await asyncio.wait_for(conn.fetchval("SELECT 1"), LISTEN_PING_TIMEOUT)
        except asyncio.CancelledError:
            # Shutting down, while in-flight requests may still read: no more hits.
            closed.set()
            cache.restart(listening=False)
            if conn is not None:
                # Shutting down: say goodbye to PostgreSQL, briefly.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 1)
            raise
        except Exception as exc:  # noqa: BLE001 (any failure: stop serving hits, reconnect)
            stop_serving(repr(exc))
        finally:
            closed.set()
            if conn is not None and not conn.is_closed():
                # At once, without the goodbye a hung server would never answer.
                conn.terminate()
        await asyncio.sleep(LISTEN_RETRY_DELAY)


async def _set_within(event: asyncio.Event, seconds: float) -> bool:
    """Whether `event` is set within `seconds`."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        return False
    return True
