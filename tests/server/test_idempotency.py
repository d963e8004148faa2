"""Idempotent creates racing across two workers, and surviving a restart."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from pathlib import Path

import httpx

from tests.server.writes import write_headers
from tests.support import fetch_sql, running_server

log = logging.getLogger(__name__)

RACERS = 20


def _count(database_url: str, name: str) -> int:
    [row] = fetch_sql(database_url, "SELECT count(*) AS n FROM items WHERE name = $1", name)
    return int(row["n"])


def test_racing_retries_of_one_key_create_exactly_one_item(
    database_url: str, tmp_path: Path
) -> None:
    name = f"race-{uuid.uuid4()}"
    headers = {**write_headers(), "Idempotency-Key": str(uuid.uuid4())}
    body = {"name": name, "price": 5}
    with running_server(
        database_url, log_path=tmp_path / "server.log", WORKERS="2", RATE_LIMIT="off"
    ) as base:

        async def race() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=RACERS, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
                return await asyncio.gather(
                    *(client.post("/items", json=body, headers=headers) for _ in range(RACERS))
                )

        responses = asyncio.run(race())
        stored = httpx.post(f"{base}/items", json=body, headers=headers)

    assert stored.status_code == 201
    assert stored.headers["idempotent-replayed"] == "true"
    tally: Counter[str] = Counter()
    for response in responses:
        if response.status_code == 409:
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["type"] == "/problems/idempotency-key-in-flight"
            assert int(response.headers["retry-after"]) >= 1
            tally["409 in flight"] += 1
            continue
        assert response.status_code == 201, response.text
        assert response.content == stored.content
        assert response.headers["location"] == stored.headers["location"]
        assert response.headers["etag"] == stored.headers["etag"]
        replayed = response.headers.get("idempotent-replayed") == "true"
        tally["201 replayed" if replayed else "201 first"] += 1
    log.info("idempotency race, %d requests: %s", RACERS, dict(tally))
    assert tally["201 first"] == 1
    assert tally["201 first"] + tally["201 replayed"] + tally["409 in flight"] == RACERS
    assert _count(database_url, name) == 1


def test_a_retry_after_a_restart_gets_the_stored_response(
    database_url: str, tmp_path: Path
) -> None:
    name = f"restart-{uuid.uuid4()}"
    headers = {**write_headers(), "Idempotency-Key": str(uuid.uuid4())}
    body = {"name": name, "price": 7, "sku": f"R-{uuid.uuid4().hex[:12]}"}
    with running_server(database_url, log_path=tmp_path / "before.log", RATE_LIMIT="off") as base:
        first = httpx.post(f"{base}/items", json=body, headers=headers)
    assert first.status_code == 201
    with running_server(database_url, log_path=tmp_path / "after.log", RATE_LIMIT="off") as base:
        again = httpx.post(f"{base}/items", json=body, headers=headers)
    assert again.status_code == 201
    assert again.content == first.content
    for header in ("location", "etag", "content-type"):
        assert again.headers[header] == first.headers[header]
    assert again.headers["idempotent-replayed"] == "true"
    assert _count(database_url, name) == 1
