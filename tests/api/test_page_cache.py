"""List pages in the read cache, through a real (single-process) server: served from the
cache, byte for byte, fresh after every write, one entry per query, bounded."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from prometheus_client import REGISTRY
from sanic_testing.reusable import ReusableClient
from sanic_testing.testing import TestingResponse as Response

from app.factory import create_app
from app.items.cache import ItemCache, page_key
from app.items.listener import LISTENER_NAME
from app.items.pagination import parse_list_query
from app.ops.metrics import STATS
from tests.api.items.helpers import valid_item
from tests.support import app_settings, fetch_sql, free_port, notify_silenced, run_sql
from tests.tokens import token_headers

# Within this, a write made in SQL reaches the cache through NOTIFY (milliseconds).
NOTIFY_BOUND = 2.0


def _cache(client: ReusableClient) -> ItemCache:
    cache: ItemCache = client.app.ctx.item_cache
    return cache


def _page_lookups() -> tuple[float, float]:
    """This process's page hits and misses (the app's process), as the metrics count them."""
    STATS.flush()  # what a scrape does first (`/metrics` renders at most 4 times a second)
    counts = (
        REGISTRY.get_sample_value(f"items_cache_{name}_total", {"cache": "pages"})
        for name in ("hits", "misses")
    )
    hits, misses = (count or 0.0 for count in counts)
    return hits, misses


def _held(client: ReusableClient, url: str) -> bool:
    args = parse_qs(urlsplit(url).query, keep_blank_values=True)
    return page_key(parse_list_query(args)) in _cache(client).pages


def _cache_page(client: ReusableClient, url: str) -> Response:
    """Read `url` until this app's cache holds its page (its LISTEN connects while requests
    run); the last response."""
    deadline = time.monotonic() + 5
    while True:
        _, resp = client.get(url)
        assert resp.status == 200, resp.text
        if _held(client, url):
            return resp
        assert time.monotonic() < deadline, "the cache never stored the page"
        time.sleep(0.01)


def _truth(database_url: str, limit: int = 20) -> list[tuple[int, int, int]]:
    """The first page by id, as the database holds it now: (id, quantity, version)."""
    rows = fetch_sql(
        database_url, "SELECT id, quantity, version FROM items ORDER BY id LIMIT $1", limit
    )
    return [(row["id"], row["quantity"], row["version"]) for row in rows]


def _shown(resp: Response) -> list[tuple[int, int, int]]:
    return [(item["id"], item["quantity"], item["version"]) for item in resp.json["items"]]


def _create(client: ReusableClient, **fields: Any) -> str:
    _, resp = client.post("/items", json=valid_item(**fields), headers=token_headers())
    assert resp.status == 201, resp.text
    location: str = resp.headers["location"]
    return location


def test_a_page_is_served_from_the_cache_byte_for_byte(
    client: ReusableClient, database_url: str
) -> None:
    for quantity in range(3):
        _create(client, quantity=quantity)
    url = "/items?limit=2&extra=kept"
    with notify_silenced(database_url):
        first = _cache_page(client, url)
        hits, misses = _page_lookups()
        # Unseen by this machine (no NOTIFY, no write through the app): only a page served
        # from the cache still shows quantity 0.
        run_sql(database_url, "UPDATE items SET quantity = 50 WHERE id = 1")
        _, cached = client.get(url)
        assert (cached.body, cached.headers["link"]) == (first.body, first.headers["link"])
        assert cached.headers["content-type"] == first.headers["content-type"]
        assert "extra=kept" in cached.headers["link"]
        assert cached.json["items"][0]["quantity"] == 0
        assert _page_lookups() == (hits + 1, misses)
    _, metrics = client.get("/metrics")
    assert 'items_cache_hits_total{cache="pages"}' in metrics.text


def test_each_write_through_the_app_makes_the_next_page_fresh(
    client: ReusableClient, database_url: str
) -> None:
    url = _create(client)
    writes: list[tuple[str, str, dict[str, Any] | None, dict[str, str], int]] = [
        ("post", "/items", valid_item(quantity=3), {}, 201),
        ("post", "/items", valid_item(quantity=4), {"Idempotency-Key": "page-1"}, 201),
        ("put", url, valid_item(name="replaced", quantity=5), {}, 200),
        ("patch", url, {"quantity": 6}, {}, 200),
        ("delete", url, None, {}, 204),
    ]
    # Silenced: only the write's own invalidation can make the page fresh.
    with notify_silenced(database_url):
        for method, target, body, headers, status in writes:
            _cache_page(client, "/items")
            kwargs = {"json": body} if body is not None else {}
            _, written = getattr(client, method)(
                target, headers={**token_headers(), **headers}, **kwargs
            )
            assert written.status == status, written.text
            _, read = client.get("/items")
            assert _shown(read) == _truth(database_url), f"stale page after {method} {headers}"


def test_a_write_made_in_sql_reaches_the_pages_through_postgres(
    client: ReusableClient, database_url: str
) -> None:
    _create(client)
    statements = [
        "INSERT INTO items (name, price, quantity) VALUES ('in sql', 1, 8)",
        "UPDATE items SET quantity = 9, version = version + 1 WHERE id = 1",
        "DELETE FROM items WHERE id = 2",
    ]
    for statement in statements:
        _cache_page(client, "/items")
        run_sql(database_url, statement)
        expected = _truth(database_url)
        deadline = time.monotonic() + NOTIFY_BOUND
        while _shown(client.get("/items")[1]) != expected:
            assert time.monotonic() < deadline, f"a stale page outlived {statement!r}"
            time.sleep(0.01)


def test_a_truncate_empties_the_pages(client: ReusableClient, database_url: str) -> None:
    _create(client)
    _create(client)
    with notify_silenced(database_url):  # a TRUNCATE still notifies ('*')
        _cache_page(client, "/items")
        run_sql(database_url, "TRUNCATE items")
        deadline = time.monotonic() + NOTIFY_BOUND
        while client.get("/items")[1].json["items"]:
            assert time.monotonic() < deadline, "a page outlived a TRUNCATE"
            time.sleep(0.01)


def test_no_page_hits_once_the_listen_connection_is_lost(
    client: ReusableClient, database_url: str
) -> None:
    _create(client)
    cache = _cache(client)
    with notify_silenced(database_url):
        _cache_page(client, "/items")
        ended = fetch_sql(
            database_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = current_database()",
            LISTENER_NAME,
        )
        assert ended, "no LISTEN session found"
        # A write this machine cannot hear of even when listening (silenced, made in SQL):
        # only a page served from the cache would miss it.
        run_sql(database_url, "UPDATE items SET quantity = 11 WHERE id = 1")
        deadline = time.monotonic() + NOTIFY_BOUND
        while cache.listening:  # the worker's loop runs while it serves a request
            assert time.monotonic() < deadline, "the lost LISTEN connection went unnoticed"
            client.get("/health")
        hits, _ = _page_lookups()
        _, read = client.get("/items")
        assert read.json["items"][0]["quantity"] == 11
        assert _page_lookups()[0] == hits
        # Caching again once LISTEN is back.
        _cache_page(client, "/items")
        _, again = client.get("/items")
        assert again.json["items"][0]["quantity"] == 11
        assert _page_lookups()[0] > hits


def test_spellings_of_one_query_share_one_page(client: ReusableClient) -> None:
    for _ in range(3):
        _create(client, price=1.5)
    first = _cache_page(client, "/items?limit=2&min_price=1.5")
    hits, misses = _page_lookups()
    spellings = [
        "/items?limit=02&min_price=1.50",
        "/items?min_price=150e-2&limit=2",
        "/items?limit=2&min_price=1.5&unknown=1",
        "/items?limit=2&min_price=1.5&q=",
        "/items/?limit=2&min_price=1.5",
    ]
    for url in spellings:
        _, resp = client.get(url)
        assert resp.status == 200, (url, resp.text)
        assert resp.body == first.body, url
        # The link is the request's own: its path and parameters, the next cursor.
        assert resp.headers["link"].startswith(f"<{urlsplit(url).path}?"), url
    assert len(_cache(client).pages) == 1
    assert _page_lookups() == (hits + len(spellings), misses)


@pytest.fixture
def small_client(database_url: str, clean_db: str) -> Iterator[ReusableClient]:
    """A server whose page cache holds at most 3 pages."""
    del clean_db
    settings = app_settings(database_url, CACHE_MAX_PAGES=3)
    with ReusableClient(create_app(settings), port=free_port()) as client:
        yield client


def test_the_page_count_stays_within_its_cap(small_client: ReusableClient) -> None:
    client = small_client
    _create(client)
    urls = [f"/items?limit={limit}" for limit in range(1, 8)]
    _cache_page(client, urls[0])
    for url in urls[1:]:
        client.get(url)
        assert len(_cache(client).pages) <= 3
    assert [_held(client, url) for url in urls] == [False] * 4 + [True] * 3
    _, ready = client.get("/health/ready")
    assert ready.json["checks"]["cache"]["pages"] == 3


def test_no_pages_are_cached_with_a_cap_of_zero(database_url: str, clean_db: str) -> None:
    del clean_db
    settings = app_settings(database_url, CACHE_MAX_PAGES=0)
    with ReusableClient(create_app(settings), port=free_port()) as client:
        _create(client)
        for _ in range(20):
            _, resp = client.get("/items")
            assert resp.status == 200
            time.sleep(0.01)
        assert not _cache(client).pages
