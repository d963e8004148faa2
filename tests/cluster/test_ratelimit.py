"""One rate limit for the whole cluster: both instances count in Redis, behind nginx."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.cluster.conftest import line_count, localcluster, nginx_upstreams

log = logging.getLogger(__name__)

pytestmark = pytest.mark.cluster

LIMIT = 20
REQUESTS = 60
PERIOD = 3600  # "20/hour": windows end on the hour


def _fresh_address() -> str:
    """A loopback address of this run alone (all of 127/8 is local on Linux): its rate-limit
    key (`ip:<address>`) is new, whatever else shares the machine's Redis."""
    return f"127.{random.randint(10, 250)}.{random.randint(0, 255)}.{random.randint(1, 254)}"  # noqa: S311


def _client(address: str, **options: Any) -> httpx.AsyncClient:
    # One connection per request, so nginx's round robin and both workers see them all.
    limits = httpx.Limits(max_connections=30, max_keepalive_connections=0)
    transport = httpx.AsyncHTTPTransport(local_address=address, limits=limits)
    return httpx.AsyncClient(transport=transport, timeout=30, **options)


@pytest.fixture(scope="module")
def limited_cluster(cluster_db: str, redis_url: str) -> Any:
    """Its own cluster (straight to PostgreSQL, no PgBouncer) with a small limit."""
    with localcluster.running_cluster(
        database_url=cluster_db,
        redis_url=redis_url,
        pgbouncer=False,
        env={"RATE_LIMIT": f"{LIMIT}/hour"},
    ) as cluster:
        yield cluster


def test_the_limit_is_global_and_the_client_ip_comes_from_the_proxy_only(
    limited_cluster: Any,
) -> None:
    cluster = limited_cluster
    left = PERIOD - time.time() % PERIOD
    if left < 30:  # never straddle a window's end
        time.sleep(left + 0.1)
    client_ip, other_ip = _fresh_address(), _fresh_address()
    first_line = line_count(cluster.nginx_access_log)

    async def scenario() -> dict[str, Any]:
        async with _client(client_ip) as client:
            # Each request forges X-Forwarded-For: nginx appends the real peer, and the
            # instances believe only what nginx (TRUSTED_PROXIES) says.
            responses = await asyncio.gather(
                *(
                    client.get(
                        f"{cluster.base}/items",
                        headers={"X-Forwarded-For": f"198.51.100.{n % 250 + 1}"},
                    )
                    for n in range(REQUESTS)
                )
            )
            # The same client straight at each instance: the same spent count (Redis).
            direct = [await client.get(f"{member.base}/items") for member in cluster.members]
        async with _client(other_ip) as other:
            # Another client naming the spent one in X-Forwarded-For, straight at an instance:
            # it is not the proxy, so the header is ignored and its own (fresh) count applies.
            forged = await other.get(
                f"{cluster.members[0].base}/items", headers={"X-Forwarded-For": client_ip}
            )
        return {"responses": responses, "direct": direct, "forged": forged}

    outcome = asyncio.run(scenario())
    responses: list[httpx.Response] = outcome["responses"]
    statuses = Counter(r.status_code for r in responses)
    routed = nginx_upstreams(cluster.nginx_access_log, first_line)
    per_instance = {m.name: routed[m.upstream] for m in cluster.members}
    admitted_remaining = sorted(
        int(r.headers["ratelimit-remaining"]) for r in responses if r.status_code == 200
    )
    log.info(
        "rate limit through nginx: sent %d, admitted %d, rejected %d, other %d; "
        "routed %s; direct after %s; forged header from elsewhere %d",
        REQUESTS,
        statuses[200],
        statuses[429],
        REQUESTS - statuses[200] - statuses[429],
        per_instance,
        [r.status_code for r in outcome["direct"]],
        outcome["forged"].status_code,
    )
    assert statuses == Counter({200: LIMIT, 429: REQUESTS - LIMIT})
    # One counter for the cluster: each admitted request saw a different remaining count.
    assert admitted_remaining == list(range(LIMIT))
    assert all(count > 0 for count in per_instance.values()), per_instance
    for rejected in (r for r in responses if r.status_code == 429):
        assert rejected.headers["content-type"] == "application/problem+json"
        assert int(rejected.headers["retry-after"]) >= 1
    assert [r.status_code for r in outcome["direct"]] == [429] * len(cluster.members)
    assert outcome["forged"].status_code == 200
    assert outcome["forged"].headers["ratelimit-remaining"] == str(LIMIT - 1)
