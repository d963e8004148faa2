"""The read cache through a real (single-process) server: fresh after writes, 304s kept."""

from __future__ import annotations

import time

from sanic_testing.reusable import ReusableClient

from tests.api.items.helpers import valid_item
from tests.support import notify_silenced, run_sql
from tests.tokens import token_headers


def _create(client: ReusableClient) -> str:
    _, resp = client.post("/items", json=valid_item(), headers=token_headers())
    assert resp.status == 201, resp.text
    location: str = resp.headers["location"]
    return location


def test_reads_after_each_write_see_that_write(client: ReusableClient) -> None:
    url = _create(client)
    for quantity in range(1, 6):
        for _ in range(2):  # the second read is served from the cache
            _, read = client.get(url)
            assert read.json["quantity"] == quantity - 1
        _, written = client.patch(url, json={"quantity": quantity}, headers=token_headers())
        assert written.status == 200
    _, read = client.get(url)
    assert (read.json["quantity"], read.headers["etag"]) == (5, '"v6"')
    _, gone = client.delete(url, headers=token_headers())
    assert gone.status == 204
    _, read = client.get(url)
    assert read.status == 404


def test_if_none_match_gets_304_from_the_cache(client: ReusableClient) -> None:
    url = _create(client)
    _, first = client.get(url)
    _, cached = client.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert cached.status == 304
    assert cached.headers["etag"] == first.headers["etag"]
    assert cached.body == b""


def test_a_write_outside_the_app_reaches_the_cache_through_postgres(
    client: ReusableClient, database_url: str
) -> None:
    url = _create(client)
    client.get(url)
    client.get(url)
    item_id = int(url.rsplit("/", 1)[1])
    sql = f"UPDATE items SET quantity = 99, version = version + 1 WHERE id = {item_id}"  # noqa: S608
    run_sql(database_url, sql)
    deadline = time.monotonic() + 2
    while True:
        _, read = client.get(url)
        if read.json["quantity"] == 99:
            break
        assert time.monotonic() < deadline, "the cache kept a stale item for 2 s"
        time.sleep(0.01)


def _cache_it(client: ReusableClient, url: str) -> None:
    """Read until this app's cache holds the item (its LISTEN connects while requests run)."""
    cache = client.app.ctx.item_cache
    item_id = int(url.rsplit("/", 1)[1])
    deadline = time.monotonic() + 5
    while item_id not in cache.entries:
        assert time.monotonic() < deadline, "the cache never stored the item"
        client.get(url)
        time.sleep(0.01)


def test_each_write_moves_the_shared_generation_without_its_notification(
    client: ReusableClient, database_url: str
) -> None:
    url = _create(client)
    item_id = int(url.rsplit("/", 1)[1])
    generations = client.app.ctx.item_cache.generations
    writes = [
        ("put", valid_item(name="replaced"), 200),
        ("patch", {"quantity": 7}, 200),
        ("delete", None, 204),
    ]
    with notify_silenced(database_url):
        for method, body, status in writes:
            _cache_it(client, url)
            before = generations.current(item_id)
            kwargs = {"json": body} if body is not None else {}
            _, written = getattr(client, method)(url, headers=token_headers(), **kwargs)
            assert written.status == status, written.text
            # Every worker of the machine reads this cell: it must move, not just this dict.
            assert generations.current(item_id) != before, f"{method} left the generation"
            _, read = client.get(url)
            if method == "delete":
                assert read.status == 404
            else:
                assert read.json == written.json, f"stale after {method}"
