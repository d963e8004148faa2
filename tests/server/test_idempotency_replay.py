"""Retries of a completed idempotent create, all at once, over both workers of a real server."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import httpx

from tests.support import fetch_sql

RETRIES = 16


def test_simultaneous_retries_of_a_completed_key_all_get_the_stored_201(
    live: str, live_write_headers: dict[str, str], database_url: str
) -> None:
    # Replaying a completed key is a read: it takes no row lock, so retries racing each other
    # (on any worker) never get 409, which is only for a key whose first request still runs.
    headers = {**live_write_headers, "Idempotency-Key": str(uuid.uuid4())}
    body = {"name": f"replayed-{uuid.uuid4()}", "price": 3}
    first = httpx.post(f"{live}/items", json=body, headers=headers, timeout=30)
    assert first.status_code == 201, first.text

    async def retry_all() -> list[httpx.Response]:
        # One connection per retry, none reused: the retries reach both workers at once.
        limits = httpx.Limits(max_connections=RETRIES, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=live, limits=limits, timeout=30) as client:
            return await asyncio.gather(
                *(client.post("/items", json=body, headers=headers) for _ in range(RETRIES))
            )

    retries = asyncio.run(retry_all())
    statuses = Counter(response.status_code for response in retries)
    assert statuses == {201: RETRIES}, dict(statuses)
    for response in retries:
        assert response.content == first.content
        assert response.headers["location"] == first.headers["location"]
        assert response.headers["etag"] == first.headers["etag"]
        assert response.headers["idempotent-replayed"] == "true"
    [row] = fetch_sql(database_url, "SELECT count(*) AS n FROM items WHERE name = $1", body["name"])
    assert row["n"] == 1
