"""The items API through nginx, two instances and PgBouncer in transaction pooling mode.

The whole items suite (tests/api/items) also runs through PgBouncer: `make test-pgbouncer`.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import uuid
from typing import Any

import httpx
import pytest

from tests.support import fetch_sql

log = logging.getLogger(__name__)

pytestmark = pytest.mark.cluster

BURST = 60


def _problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    return body


def test_the_items_api_through_pgbouncer(cluster: Any, writer: dict[str, str]) -> None:
    tag = uuid.uuid4().hex[:10]
    sku = f"PGB-{tag}"
    with httpx.Client(base_url=cluster.base, headers=writer, timeout=10) as api:
        created = api.post("/items", json={"name": f"pgb {tag}", "price": 10.25, "sku": sku})
        assert created.status_code == 201, created.text
        item = created.json()
        path = created.headers["location"]
        assert path == f"/items/{item['id']}"
        assert item["version"] == 1 and item["price"] == 10.25 and item["sku"] == sku
        etag = created.headers["etag"]

        got = api.get(path)
        assert got.status_code == 200 and got.json() == item and got.headers["etag"] == etag
        assert api.get(path, headers={"If-None-Match": etag}).status_code == 304

        _problem(api.post("/items", json={"name": "dup", "price": 1, "sku": sku}), 409)
        _problem(api.post("/items", json={"name": "", "price": 1}), 422)
        _problem(api.post("/items", json={"name": "x", "price": 1, "idx": 1}), 422)

        replaced = api.put(
            path, json={"name": f"pgb {tag} v2", "price": 11}, headers={"If-Match": etag}
        )
        assert replaced.status_code == 200 and replaced.json()["version"] == 2
        _problem(api.put(path, json={"name": "late", "price": 1}, headers={"If-Match": etag}), 412)
        patched = api.patch(
            path,
            content=b'{"quantity": 7, "description": null}',
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["quantity"] == 7 and patched.json()["version"] == 3

        for n in range(5):
            assert (
                api.post("/items", json={"name": f"pgb {tag} {n}", "price": n}).status_code == 201
            )
        seen: list[int] = []
        url: str | None = f"/items?q=pgb {tag}&limit=2&sort=-price"
        while url is not None:
            page = api.get(url)
            assert page.status_code == 200
            seen += [row["id"] for row in page.json()["items"]]
            link = page.headers.get("link")
            url = link[1 : link.index(">")] if link else None
        assert len(seen) == len(set(seen)) == 6

        key = {"Idempotency-Key": f"pgb-{tag}"}
        once = api.post("/items", json={"name": f"pgb {tag} keyed", "price": 1}, headers=key)
        again = api.post("/items", json={"name": f"pgb {tag} keyed", "price": 1}, headers=key)
        assert once.status_code == again.status_code == 201
        assert again.content == once.content and again.headers["idempotent-replayed"] == "true"

        assert api.delete(path, headers={"If-Match": patched.headers["etag"]}).status_code == 204
        _problem(api.delete(path), 404)
        _problem(api.get(path), 404)


def test_pgbouncer_multiplexes_the_pools_onto_few_server_connections(
    cluster: Any, cluster_db: str
) -> None:
    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=cluster.base, timeout=30) as client:
            responses = await asyncio.gather(
                *(client.get("/items?limit=50&sort=-price") for _ in range(BURST))
            )
        return [r.status_code for r in responses]

    assert set(asyncio.run(burst())) == {200}
    pools = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(cluster.pgbouncer_port), "-U", "postgres",
         "-At", "-F", "|", "-c", "SHOW POOLS", "pgbouncer"],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout  # fmt: skip
    database = cluster_db.rsplit("/", 1)[1]
    [row] = [line.split("|") for line in pools.splitlines() if line.startswith(database + "|")]
    # database|user|cl_active|cl_waiting|cl_cancel_req|sv_active|sv_idle|sv_used|sv_tested|
    # sv_login|...
    clients = int(row[2]) + int(row[3])
    servers = sum(int(n) for n in row[5:10])
    [backends] = fetch_sql(
        cluster_db,
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        database,
    )
    log.info(
        "pgbouncer after %d concurrent list requests: %d client connections (instances' pools) "
        "on %d server connections; PostgreSQL backends on the database %d "
        "(pooled + one LISTEN per worker)",
        BURST,
        clients,
        servers,
        backends["n"],
    )
    assert servers <= cluster.pgbouncer_pool_size
    assert backends["n"] <= cluster.pgbouncer_pool_size + cluster.instances * cluster.workers
