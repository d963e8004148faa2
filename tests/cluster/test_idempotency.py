"""An Idempotency-Key retried on the other instance gets the stored response, never an item more."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.support import fetch_sql

log = logging.getLogger(__name__)

pytestmark = pytest.mark.cluster

RACERS = 12


def _count(url: str, name: str) -> int:
    [row] = fetch_sql(url, "SELECT count(*) AS n FROM items WHERE name = $1", name)
    return int(row["n"])


def test_a_retry_on_the_other_instance_replays_the_first_response(
    cluster: Any, writer: dict[str, str], cluster_db: str
) -> None:
    a, b = cluster.members
    name = f"idem-{uuid.uuid4()}"
    body = {"name": name, "price": 12.5, "sku": f"S-{uuid.uuid4().hex[:12]}"}
    headers = {**writer, "Idempotency-Key": str(uuid.uuid4())}

    first = httpx.post(f"{a.base}/items", json=body, headers=headers)
    retry = httpx.post(f"{b.base}/items", json=body, headers=headers)
    changed = httpx.post(f"{b.base}/items", json={**body, "price": 13}, headers=headers)

    assert first.status_code == 201, first.text
    assert retry.status_code == 201, retry.text
    assert retry.content == first.content
    for header in ("location", "etag", "content-type"):
        assert retry.headers[header] == first.headers[header]
    assert retry.headers["idempotent-replayed"] == "true"
    assert changed.status_code == 422
    assert _count(cluster_db, name) == 1
    log.info(
        "idempotency across instances: sent 3 (A, B, B with another body), "
        "201 first, 201 replayed, %d; items %d",
        changed.status_code,
        _count(cluster_db, name),
    )


def test_racing_retries_over_the_load_balancer_create_one_item(
    cluster: Any, writer: dict[str, str], cluster_db: str
) -> None:
    name = f"race-{uuid.uuid4()}"
    body = {"name": name, "price": 1}
    headers = {**writer, "Idempotency-Key": str(uuid.uuid4())}

    async def race() -> list[httpx.Response]:
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            # Half straight at each instance, half through nginx: every path a retry can take.
            bases = [m.base for m in cluster.members] + [cluster.base]
            return await asyncio.gather(
                *(
                    client.post(f"{bases[n % len(bases)]}/items", json=body, headers=headers)
                    for n in range(RACERS)
                )
            )

    responses = asyncio.run(race())
    statuses = Counter(r.status_code for r in responses)
    created = [r for r in responses if r.status_code == 201]
    log.info(
        "idempotency race over 2 instances + nginx: sent %d, %s, items %d",
        RACERS,
        dict(statuses),
        _count(cluster_db, name),
    )
    assert set(statuses) <= {201, 409}
    assert created, statuses
    assert {r.content for r in created} == {created[0].content}
    assert _count(cluster_db, name) == 1
    # A later retry, wherever it lands, gets the stored response.
    later = httpx.post(f"{cluster.base}/items", json=body, headers=headers)
    assert later.status_code == 201 and later.content == created[0].content
