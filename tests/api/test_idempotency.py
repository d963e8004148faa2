"""Idempotent creates through a real (single-process) server."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import pytest
from sanic_testing.reusable import ReusableClient
from sanic_testing.testing import TestingResponse as Response

from app.db.pool import Database
from app.items.idempotency import CREATE_ITEM, fingerprint, purge_expired
from app.items.schemas import ItemIn
from tests.api.items.helpers import assert_problem, valid_item
from tests.support import fetch_sql, run_sql
from tests.tokens import token_headers


@pytest.fixture
def keyed(client: ReusableClient, database_url: str) -> ReusableClient:
    """The module's server over empty `items` and `idempotency_keys` tables."""
    run_sql(database_url, "TRUNCATE idempotency_keys")
    return client


def _post(
    client: ReusableClient, body: dict[str, Any], key: str | None, user_id: int = 1
) -> Response:
    headers = token_headers(user_id)
    if key is not None:
        headers["Idempotency-Key"] = key
    _, resp = client.post("/items", json=body, headers=headers)
    return resp


def _items(database_url: str) -> int:
    [row] = fetch_sql(database_url, "SELECT count(*) AS n FROM items")
    return int(row["n"])


def test_a_retry_gets_the_first_response_and_creates_nothing(
    keyed: ReusableClient, database_url: str
) -> None:
    key = f'"{uuid.uuid4()}"'
    first = _post(keyed, valid_item(name="once"), key)
    assert first.status == 201, first.text
    again = _post(keyed, valid_item(name="once"), key)
    assert again.status == 201
    assert again.body == first.body
    for header in ("location", "etag", "content-type"):
        assert again.headers[header] == first.headers[header]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert _items(database_url) == 1


def test_the_same_key_with_another_body_is_422(keyed: ReusableClient, database_url: str) -> None:
    key = str(uuid.uuid4())
    assert _post(keyed, valid_item(name="first"), key).status == 201
    body = assert_problem(_post(keyed, valid_item(name="second"), key), 422)
    assert body["type"] == "/problems/idempotency-key-reused"
    assert _items(database_url) == 1


def test_keys_are_scoped_to_the_caller(keyed: ReusableClient, database_url: str) -> None:
    key = str(uuid.uuid4())
    mine = _post(keyed, valid_item(), key, user_id=1)
    theirs = _post(keyed, valid_item(), key, user_id=2)
    assert (mine.status, theirs.status) == (201, 201)
    assert mine.json["id"] != theirs.json["id"]
    assert _items(database_url) == 2


def test_without_a_key_every_post_creates(keyed: ReusableClient, database_url: str) -> None:
    for _ in range(2):
        assert _post(keyed, valid_item(), None).status == 201
    assert _items(database_url) == 2


@pytest.mark.parametrize("key", ["", "two words", "x" * 256])
def test_a_malformed_key_is_400(keyed: ReusableClient, database_url: str, key: str) -> None:
    body = assert_problem(_post(keyed, valid_item(), key), 400)
    assert body["type"] == "/problems/bad-idempotency-key"
    assert _items(database_url) == 0


def test_an_expired_key_runs_again(keyed: ReusableClient, database_url: str) -> None:
    key = str(uuid.uuid4())
    first = _post(keyed, valid_item(), key)
    run_sql(database_url, "UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
    again = _post(keyed, valid_item(), key)
    assert again.status == 201
    assert "idempotent-replayed" not in again.headers
    assert again.json["id"] != first.json["id"]


def test_a_failed_create_stores_nothing_so_a_retry_runs_again(
    keyed: ReusableClient, database_url: str
) -> None:
    taken = _post(keyed, valid_item(sku="TAKEN"), None)
    key = str(uuid.uuid4())
    assert_problem(_post(keyed, valid_item(sku="TAKEN"), key), 409)
    [row] = fetch_sql(database_url, "SELECT status FROM idempotency_keys")
    assert row["status"] is None
    _, deleted = keyed.delete(f"/items/{taken.json['id']}", headers=token_headers())
    assert deleted.status == 204
    assert _post(keyed, valid_item(sku="TAKEN"), key).status == 201


def test_purge_deletes_only_expired_keys(keyed: ReusableClient, database_url: str) -> None:
    for _ in range(3):
        assert _post(keyed, valid_item(), str(uuid.uuid4())).status == 201
    run_sql(
        database_url,
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' "
        "WHERE id IN (SELECT id FROM idempotency_keys ORDER BY id LIMIT 2)",
    )

    async def purge() -> int:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
        try:
            return await purge_expired(Database(pool, acquire_timeout=5))
        finally:
            await pool.close()

    assert asyncio.run(purge()) == 2
    assert len(fetch_sql(database_url, "SELECT id FROM idempotency_keys")) == 1


@pytest.mark.parametrize(
    "retry",
    [
        {"name": "spelled", "price": 2.0},
        {"name": "spelled", "price": 2.00, "quantity": 0},
        {"price": 2, "name": "spelled", "description": "", "sku": None},
        {"name": "  spelled ", "price": 2e0},
    ],
    ids=["float", "defaults-sent", "key-order-and-nulls", "untrimmed-exponent"],
)
def test_the_same_request_spelled_differently_is_replayed(
    keyed: ReusableClient, database_url: str, retry: dict[str, Any]
) -> None:
    # The fingerprint is of what the server acts on, not of the text the client sent.
    key = str(uuid.uuid4())
    first = _post(keyed, {"name": "spelled", "price": 2}, key)
    assert first.status == 201, first.text
    again = _post(keyed, retry, key)
    assert again.status == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.body == first.body
    assert _items(database_url) == 1


@contextmanager
def _row_locked(database_url: str, key: str) -> Iterator[None]:
    """Hold the key's row `FOR UPDATE` in an open transaction, as a running request does."""
    locked, release = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    async def hold() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            async with conn.transaction():
                row = await conn.fetchrow(
                    "SELECT id FROM idempotency_keys WHERE key = $1 FOR UPDATE", key
                )
                assert row is not None, f"no row for key {key}"
                locked.set()
                while not release.is_set():
                    await asyncio.sleep(0.01)
        finally:
            await conn.close()

    def run() -> None:
        try:
            asyncio.run(hold())
        except BaseException as exc:  # reported by the test below, not lost in the thread
            failures.append(exc)
            locked.set()

    thread = threading.Thread(target=run, name="row-lock")
    thread.start()
    try:
        assert locked.wait(30)
        assert not failures, failures
        yield
    finally:
        release.set()
        thread.join(30)


def test_a_completed_key_is_replayed_while_its_row_is_locked(
    keyed: ReusableClient, database_url: str
) -> None:
    # A completed key is a read: retries never wait for, or lose to, whoever holds the row.
    key = str(uuid.uuid4())
    first = _post(keyed, valid_item(name="done"), key)
    assert first.status == 201, first.text
    with _row_locked(database_url, key):
        again = _post(keyed, valid_item(name="done"), key)
        other = _post(keyed, valid_item(name="another body"), key)
    assert again.status == 201, again.text
    assert again.body == first.body
    assert again.headers["idempotent-replayed"] == "true"
    assert assert_problem(other, 422)["type"] == "/problems/idempotency-key-reused"
    assert _items(database_url) == 1


def test_a_key_whose_first_request_still_runs_is_409(
    keyed: ReusableClient, database_url: str
) -> None:
    # The claim of a first request that has not finished: its row has no response yet and
    # its request holds the lock.
    key = str(uuid.uuid4())
    body = valid_item(name="running")
    expected_print = fingerprint(CREATE_ITEM, ItemIn.model_validate(body).model_dump())
    fetch_sql(
        database_url,
        "INSERT INTO idempotency_keys (scope, key, fingerprint, expires_at) "
        "VALUES ('sub:1', $1, $2, now() + interval '1 hour')",
        key,
        expected_print,
    )
    with _row_locked(database_url, key):
        retry = _post(keyed, body, key)
    problem = assert_problem(retry, 409)
    assert problem["type"] == "/problems/idempotency-key-in-flight"
    assert int(retry.headers["retry-after"]) >= 1
    assert _items(database_url) == 0
    # Once the first request is gone (its lock with it), the key runs.
    assert _post(keyed, body, key).status == 201
    assert _items(database_url) == 1
