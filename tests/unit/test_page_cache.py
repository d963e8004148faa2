"""The page cache's rules: the table generation, keys, TTL and bounds (no server)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Any

from app.items.cache import ItemCache, page_key
from app.items.generations import Generations
from app.items.pagination import ListQuery, encode_cursor, parse_list_query

_FORK = multiprocessing.get_context("fork")
FIRST = ListQuery()
OTHER = ListQuery(limit=5)


def _cache(
    ttl: float = 60.0, max_pages: int = 100, max_page_bytes: int = 1 << 20, shared: Any = None
) -> ItemCache:
    shared = Generations.allocate() if shared is None else shared
    cache = ItemCache(
        Generations(shared), ttl, 100, max_pages=max_pages, max_page_bytes=max_page_bytes
    )
    cache.restart(listening=True)
    return cache


def _read(cache: ItemCache, query: ListQuery, body: bytes = b"page") -> None:
    """What a miss does: note the table generation, 'query', store."""
    seen = cache.snapshot_pages()
    cache.put_page(query, seen, body, None)


def _query(**args: str) -> ListQuery:
    return parse_list_query({name: [value] for name, value in args.items()})


def test_a_stored_page_is_served_until_any_item_is_written() -> None:
    cache = _cache()
    assert cache.get_page(FIRST) is None
    seen = cache.snapshot_pages()
    cache.put_page(FIRST, seen, b"body", "cursor")
    page = cache.get_page(FIRST)
    assert page is not None and (page.body, page.next_cursor) == (b"body", "cursor")
    cache.invalidate(123_456)  # any id, on any page or none
    assert cache.get_page(FIRST) is None


def test_a_write_through_another_workers_cache_invalidates_this_ones_pages() -> None:
    shared = Generations.allocate()
    this, other = (_cache(shared=shared) for _ in range(2))
    _read(this, FIRST)
    assert this.get_page(FIRST) is not None
    other.invalidate(7)  # the write landed on the other worker
    assert this.get_page(FIRST) is None


def test_a_page_read_that_raced_a_write_is_not_stored() -> None:
    cache = _cache()
    seen = cache.snapshot_pages()  # the read starts and queries the database ...
    cache.invalidate(3)  # ... a write to any item commits meanwhile ...
    cache.put_page(FIRST, seen, b"old", None)  # ... and the read's (old) page comes back
    assert cache.get_page(FIRST) is None
    assert not cache.pages
    _read(cache, FIRST, b"new")
    page = cache.get_page(FIRST)
    assert page is not None and page.body == b"new"


def test_no_page_is_served_or_stored_while_not_hearing_other_machines() -> None:
    cache = _cache()
    _read(cache, FIRST)
    seen = cache.snapshot_pages()
    cache.restart(listening=False)
    assert cache.get_page(FIRST) is None
    cache.put_page(OTHER, seen, b"page", None)
    cache.restart(listening=True)
    assert cache.get_page(OTHER) is None  # begun before the restart: not stored
    assert cache.get_page(FIRST) is None  # emptied on restart: writes may have been missed
    assert not cache.pages


def test_pages_expire_after_the_ttl() -> None:
    cache = _cache(ttl=0.05)
    _read(cache, FIRST)
    assert cache.get_page(FIRST) is not None
    time.sleep(0.06)
    assert cache.get_page(FIRST) is None


def test_the_oldest_page_goes_when_the_count_is_reached() -> None:
    cache = _cache(max_pages=2)
    queries = [ListQuery(limit=n) for n in (1, 2, 3)]
    for query in queries:
        _read(cache, query)
    assert len(cache.pages) == 2
    assert cache.get_page(queries[0]) is None
    assert cache.get_page(queries[1]) is not None and cache.get_page(queries[2]) is not None


def test_the_oldest_pages_go_when_the_bytes_are_reached() -> None:
    cache = _cache(max_page_bytes=100)
    queries = [ListQuery(limit=n) for n in (1, 2, 3)]
    for query in queries:
        _read(cache, query, b"x" * 40)
    assert (len(cache.pages), cache.page_bytes) == (2, 80)
    assert cache.get_page(queries[0]) is None
    _read(cache, ListQuery(limit=4), b"x" * 101)  # larger than the whole budget: not stored
    assert (len(cache.pages), cache.page_bytes) == (2, 80)
    _read(cache, queries[2], b"x" * 90)  # replaced: its old bytes are given back
    assert (len(cache.pages), cache.page_bytes) == (1, 90)


def test_pages_read_under_an_older_table_generation_are_freed() -> None:
    cache = _cache()
    _read(cache, FIRST)
    _read(cache, OTHER)
    cache.invalidate(1)
    _read(cache, FIRST)
    assert list(cache.pages) == [page_key(FIRST)]
    assert cache.page_bytes == len(b"page")


def test_no_pages_are_stored_with_a_page_count_of_zero() -> None:
    cache = _cache(max_pages=0)
    _read(cache, FIRST)
    assert not cache.pages


def test_spellings_of_one_query_are_one_key() -> None:
    row = {"id": 9, "price": 1.5}
    cursor = encode_cursor("price", row)
    spellings = [
        _query(limit="20", sort="price", cursor=cursor, min_price="1.5", max_price="3"),
        _query(limit="020", sort="price", cursor=cursor, min_price="1.50", max_price="3.00"),
        _query(max_price="3e0", min_price="150e-2", cursor=cursor, sort="price"),
    ]
    cache = _cache()
    _read(cache, spellings[0])
    for query in spellings:
        assert cache.get_page(query) is not None
    assert len(cache.pages) == 1


def test_a_key_holds_a_price_in_bounded_memory() -> None:
    long = "1." + "0" * 4000
    cursor = encode_cursor("price", {"id": 1, "price": 1.0})
    query = _query(min_price=long, max_price=long, sort="price", cursor=cursor)
    assert sys.getsizeof(query.min_price) > 1000
    cache = _cache()
    _read(cache, query)
    (stored,) = cache.pages
    assert stored == page_key(query) and hash(stored) == hash(page_key(query))
    assert max(sys.getsizeof(value) for value in stored) < 200
    assert cache.get_page(query) is not None


def _bump_table_forever(shared: Any) -> None:
    generations = Generations(shared)
    while True:
        generations.bump_table()


def _bump_table_until(shared: Any, deadline: float) -> None:
    generations = Generations(shared)
    while time.monotonic() < deadline:
        generations.bump_table()


def test_a_process_killed_while_bumping_the_table_leaves_the_others_serving_fresh() -> None:
    shared = Generations.allocate()
    generations = Generations(shared)
    for _ in range(5):
        child = _FORK.Process(target=_bump_table_forever, args=(shared,), daemon=True)
        child.start()
        before = generations.table()
        deadline = time.monotonic() + 5
        while generations.table() == before:
            assert time.monotonic() < deadline, "a new process is blocked by a killed one"
            time.sleep(0.001)
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        assert child.exitcode == -signal.SIGKILL

    reader, writer = _cache(shared=shared), _cache(shared=shared)
    outcome: list[object] = []

    def read_write_read() -> None:
        _read(reader, FIRST)
        outcome.append(reader.get_page(FIRST) is not None)
        writer.invalidate(1)
        outcome.append(reader.get_page(FIRST))

    survivor = threading.Thread(target=read_write_read, daemon=True)
    survivor.start()
    survivor.join(5)
    assert not survivor.is_alive(), "the others blocked on what a killed process left behind"
    assert outcome == [True, None]


def test_the_table_generation_never_returns_to_a_value_it_left_under_racing_bumps() -> None:
    shared = Generations.allocate()
    generations = Generations(shared)
    deadline = time.monotonic() + 0.5
    children = [
        _FORK.Process(target=_bump_table_until, args=(shared, deadline), daemon=True)
        for _ in range(4)
    ]
    for child in children:
        child.start()
    left: set[int] = set()
    last = generations.table()
    returned = 0
    while time.monotonic() < deadline:
        value = generations.table()
        if value != last:
            returned += value in left
            left.add(last)
            last = value
    for child in children:
        child.join(10)
    assert len(left) > 10
    assert returned == 0


def test_the_table_cell_is_no_items_cell() -> None:
    generations = Generations(Generations.allocate())
    before = [generations.current(item_id) for item_id in (0, (1 << 16) - 1, 1 << 16)]
    generations.bump_table()
    assert [generations.current(item_id) for item_id in (0, (1 << 16) - 1, 1 << 16)] == before
    table = generations.table()
    generations.bump((1 << 16) - 1)  # the last id cell, next to the table's
    assert generations.table() == table
