"""The read cache's rules: generations, version awareness, TTL and size (no server)."""

from __future__ import annotations

import time

from app.cache import Generations, ItemCache


def _cache(ttl: float = 60.0, max_items: int = 100) -> ItemCache:
    cache = ItemCache(Generations(*Generations.allocate()), ttl, max_items)
    cache.restart(listening=True)
    return cache


def _read(cache: ItemCache, item_id: int, version: int) -> None:
    """What a miss does: note the generation, 'query', store."""
    seen = cache.snapshot(item_id)
    cache.put(item_id, seen, version, f"v{version}".encode())


def test_a_stored_read_is_served_until_its_item_is_written() -> None:
    cache = _cache()
    assert cache.get(1) is None
    _read(cache, 1, 1)
    entry = cache.get(1)
    assert entry is not None
    assert (entry.version, entry.body) == (1, b"v1")
    cache.invalidate(1)
    assert cache.get(1) is None


def test_a_write_seen_through_another_workers_cache_invalidates_this_one() -> None:
    shared = Generations.allocate()
    this, other = (ItemCache(Generations(*shared), 60, 100) for _ in range(2))
    for cache in (this, other):
        cache.restart(listening=True)
    _read(this, 5, 1)
    other.invalidate(5)  # the write landed on the other worker
    assert this.get(5) is None


def test_a_read_that_raced_a_write_is_not_stored() -> None:
    cache = _cache()
    seen = cache.snapshot(3)  # the read starts and queries the database ...
    cache.invalidate(3)  # ... a write commits meanwhile ...
    cache.put(3, seen, 1, b"old")  # ... and the read's (old) row comes back
    assert cache.get(3) is None
    _read(cache, 3, 2)
    entry = cache.get(3)
    assert entry is not None and entry.version == 2


def test_an_older_version_never_replaces_a_newer_one() -> None:
    cache = _cache()
    seen = cache.snapshot(4)
    cache.put(4, seen, 3, b"v3")
    cache.put(4, seen, 2, b"v2")
    entry = cache.get(4)
    assert entry is not None and entry.version == 3


def test_nothing_is_served_or_stored_while_not_hearing_other_machines() -> None:
    cache = _cache()
    _read(cache, 1, 1)
    seen = cache.snapshot(2)
    cache.restart(listening=False)
    assert cache.get(1) is None
    cache.put(2, seen, 1, b"v1")
    cache.restart(listening=True)
    assert cache.get(2) is None
    assert cache.get(1) is None  # emptied on restart: writes may have been missed


def test_entries_expire_after_the_ttl() -> None:
    cache = _cache(ttl=0.05)
    _read(cache, 1, 1)
    assert cache.get(1) is not None
    time.sleep(0.06)
    assert cache.get(1) is None


def test_the_oldest_entry_goes_when_full() -> None:
    cache = _cache(max_items=2)
    for item_id in (1, 2, 3):
        _read(cache, item_id, 1)
    assert cache.get(1) is None
    assert cache.get(2) is not None and cache.get(3) is not None
