"""The read cache's rules: generations, version awareness, TTL and size (no server)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from typing import Any

from app.items.cache import ItemCache
from app.items.generations import Generations

# Children share the parent's generation table the way Sanic's workers share the main
# process's: made before they start. Fork is quick, and the children only run `_bump_*`.
_FORK = multiprocessing.get_context("fork")


def _cache(ttl: float = 60.0, max_items: int = 100, shared: Any = None) -> ItemCache:
    shared = Generations.allocate() if shared is None else shared
    cache = ItemCache(Generations(shared), ttl, max_items)
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
    this, other = (_cache(shared=shared) for _ in range(2))
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


def test_entries_stored_together_expire_over_the_last_quarter_of_the_ttl() -> None:
    cache = _cache(ttl=100.0, max_items=1000)
    before = time.monotonic()
    for item_id in range(1, 201):
        _read(cache, item_id, 1)
    after = time.monotonic()
    lives = sorted(entry.expires for entry in cache.entries.values())
    assert before + 75.0 <= lives[0] and lives[-1] <= after + 100.0
    # Spread, not one instant: the first and last tenth are at least 15 s apart.
    assert lives[-20] - lives[19] > 15.0


def test_the_oldest_entry_goes_when_full() -> None:
    cache = _cache(max_items=2)
    for item_id in (1, 2, 3):
        _read(cache, item_id, 1)
    assert cache.get(1) is None
    assert cache.get(2) is not None and cache.get(3) is not None


def _bump_forever(shared: Any, item_id: int) -> None:
    generations = Generations(shared)
    while True:
        generations.bump(item_id)


def _bump_until(shared: Any, item_id: int, deadline: float) -> None:
    generations = Generations(shared)
    while time.monotonic() < deadline:
        generations.bump(item_id)


def test_a_process_killed_while_bumping_leaves_the_others_serving_fresh() -> None:
    shared = Generations.allocate()
    generations = Generations(shared)
    # Killed at whatever instruction it is at: several times, so some kill lands mid-bump.
    for _ in range(5):
        child = _FORK.Process(target=_bump_forever, args=(shared, 7), daemon=True)
        child.start()
        before = generations.current(7)
        deadline = time.monotonic() + 5
        while generations.current(7) == before:  # it is bumping now
            assert time.monotonic() < deadline, "a new process is blocked by a killed one"
            time.sleep(0.001)
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        assert child.exitcode == -signal.SIGKILL

    reader, writer = _cache(shared=shared), _cache(shared=shared)
    outcome: list[object] = []

    def read_write_read() -> None:
        _read(reader, 7, 1)
        outcome.append(reader.get(7) is not None)
        writer.invalidate(7)  # a write on another worker
        outcome.append(reader.get(7))

    # In a thread: with a lock left held by a dead child this would block for ever.
    survivor = threading.Thread(target=read_write_read, daemon=True)
    survivor.start()
    survivor.join(5)
    assert not survivor.is_alive(), "the others blocked on what a killed process left behind"
    assert outcome == [True, None]


def test_a_generation_never_returns_to_a_value_it_left_under_racing_bumps() -> None:
    """What makes the cache safe without a lock: a value, once replaced, never comes back."""
    shared = Generations.allocate()
    generations = Generations(shared)
    deadline = time.monotonic() + 1.0
    # More bumpers than cores, so the scheduler pauses some of them in mid-bump.
    children = [
        _FORK.Process(target=_bump_until, args=(shared, 9, deadline), daemon=True) for _ in range(4)
    ]
    for child in children:
        child.start()
    left: set[int] = set()
    last = generations.current(9)
    returned = 0
    while time.monotonic() < deadline:
        value = generations.current(9)
        if value != last:
            returned += value in left
            left.add(last)
            last = value
    for child in children:
        child.join(10)
    assert len(left) > 10  # the bumps really raced while sampled
    assert returned == 0
