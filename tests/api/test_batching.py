"""Requests under a busy pool, through a real server: reads by id, list pages and creates that
wait together share one statement (app/db/batch.py), and each client still gets its own item
or its own 404, its own page, its own new item or its own 409."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sanic_testing.reusable import ReusableClient

from app.db.batch import BATCH_SIZES
from app.factory import create_app
from app.settings import load_settings
from tests.support import free_port, run_sql

EXISTING = range(1, 6)
ASKED = [3, 1, 42, 5, 3, 2, 4, 7, 1]  # duplicates and two misses
Served = tuple[ReusableClient, asyncio.AbstractEventLoop, Any]


@pytest.fixture
def one_connection(clean_db: str) -> Iterator[Served]:
    run_sql(
        clean_db,
        "INSERT INTO items (name, price) SELECT 'item ' || n, n FROM generate_series(1, 5) n",
    )
    settings = load_settings(
        env_file=None,
        DATABASE_URL=clean_db,
        WORKERS=1,
        DB_POOL_MIN=1,
        DB_POOL_MAX=1,
        ACCESS_LOG=False,
        METRICS_ENABLED=False,  # the batch sizes stay for this test to read
        RATE_LIMIT="off",
        CACHE_ENABLED=False,
    )
    app = create_app(settings)
    loop = asyncio.new_event_loop()
    try:
        with ReusableClient(app, port=free_port(), loop=loop) as client:
            yield client, loop, app
    finally:
        loop.close()


def test_concurrent_reads_each_get_their_own_item_or_their_own_404(
    one_connection: Served,
) -> None:
    client, loop, app = one_connection
    db = app.ctx.db
    BATCH_SIZES.take("by_id")

    async def burst() -> list[httpx.Response]:
        held = await db.acquire()  # the pool's one connection: every read must wait
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{client.port}") as http:
            sent = [asyncio.ensure_future(http.get(f"/items/{i}")) for i in ASKED]
            async with asyncio.timeout(5):
                while db.waiting < 1:  # the batch queued for the connection
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)  # and every request reached its read
            assert not any(s.done() for s in sent)
            await db.release(held)
            return await asyncio.wait_for(asyncio.gather(*sent), 10)

    responses = loop.run_until_complete(burst())
    for item_id, response in zip(ASKED, responses, strict=True):
        if item_id in EXISTING:
            assert response.status_code == 200, response.text
            assert response.json()["id"] == item_id
            assert response.json()["name"] == f"item {item_id}"
            assert response.headers["etag"] == '"v1"'
        else:
            assert response.status_code == 404, response.text
            assert response.headers["content-type"] == "application/problem+json"
    counts, total = BATCH_SIZES.take("by_id")
    assert total == len(ASKED), "not every read went through the batch"
    assert sum(counts) == 1, f"{sum(counts)} statements for one batch"


PAGES = [
    "/items?limit=2",
    "/items?limit=2&sort=-price",
    "/items?limit=3&sort=created_at",
    "/items?limit=2&q=item%203",
    "/items?limit=2&min_price=2&max_price=4",
    "/items?limit=2",  # the same page twice
    "/items?limit=5&sort=-id",
    "/items?q=nothing%20like%20this",  # an empty page
]


def test_concurrent_list_pages_each_get_their_own_page(one_connection: Served) -> None:
    client, loop, app = one_connection
    db = app.ctx.db

    async def pages(http: httpx.AsyncClient, paths: list[str]) -> list[httpx.Response]:
        return await asyncio.wait_for(asyncio.gather(*(http.get(p) for p in paths)), 10)

    async def burst() -> tuple[list[httpx.Response], list[httpx.Response]]:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{client.port}") as http:
            # Each page alone first, then the pages after each of them (with their cursors).
            first = [await http.get(path) for path in PAGES]
            nexts = [r.headers["link"].split(">")[0][1:] for r in first if "link" in r.headers]
            paths = PAGES + nexts
            alone = [await http.get(path) for path in paths]
            BATCH_SIZES.take("page")
            held = await db.acquire()  # the pool's one connection: every read must wait
            sent = asyncio.ensure_future(pages(http, paths))
            async with asyncio.timeout(5):
                while db.waiting < 1:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)
            assert not sent.done()
            await db.release(held)
            return alone, await sent

    alone, batched = loop.run_until_complete(burst())
    assert len(alone) > len(PAGES), "no page had a next page"
    for one, together in zip(alone, batched, strict=True):
        assert one.status_code == together.status_code == 200, together.text
        assert together.content == one.content
        assert together.headers.get("link") == one.headers.get("link")
    counts, total = BATCH_SIZES.take("page")
    assert total == len(alone), "not every page went through a batch"
    assert sum(counts) < len(alone), "no two pages shared a statement"


def test_concurrent_creates_each_get_their_own_item_or_their_own_409(
    one_connection: Served, write_headers: dict[str, str]
) -> None:
    client, loop, app = one_connection
    db = app.ctx.db
    skus = ["new-1", None, "new-2", "new-1", None, "new-3", "new-2", None]
    winners = {0, 1, 2, 4, 5, 7}  # the first of each sku, and every item without one

    async def burst() -> list[httpx.Response]:
        BATCH_SIZES.take("insert")
        base = f"http://127.0.0.1:{client.port}"
        async with httpx.AsyncClient(base_url=base, headers=write_headers) as http:
            held = await db.acquire()
            sent = []
            for index, sku in enumerate(skus):
                body = {"name": f"new {index}", "price": index, "quantity": index}
                if sku is not None:
                    body["sku"] = sku
                sent.append(asyncio.ensure_future(http.post("/items", json=body)))
                await asyncio.sleep(0.02)  # arrive in this order
            async with asyncio.timeout(5):
                while db.waiting < 1:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)
            assert not any(s.done() for s in sent)
            await db.release(held)
            responses = await asyncio.wait_for(asyncio.gather(*sent), 10)
            # What each 201 says is what the table holds.
            for response in responses:
                if response.status_code == 201:
                    stored = await http.get(response.headers["location"])
                    assert stored.json() == response.json()
            return responses

    responses = loop.run_until_complete(burst())
    for index, response in enumerate(responses):
        if index in winners:
            assert response.status_code == 201, response.text
            item = response.json()
            assert (item["name"], item["quantity"], item["sku"]) == (
                f"new {index}",
                index,
                skus[index],
            )
            assert response.headers["location"] == f"/items/{item['id']}"
        else:
            assert response.status_code == 409, response.text
            assert response.headers["content-type"] == "application/problem+json"
    counts, total = BATCH_SIZES.take("insert")
    assert total == len(skus) and sum(counts) == 1, "the creates did not share one statement"
