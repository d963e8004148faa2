"""List pages when the cache's LISTEN connection is lost: two instances on one throwaway
database (the set-up of test_cache_faults.py).

B has the first page cached on both workers; then B's LISTEN sessions end (a PostgreSQL
restart, or `pg_terminate_backend`) and A creates an item at once, so B never hears of it.
B must not serve the page without it, and must cache pages again once LISTEN is back.
"""

from __future__ import annotations

import time
from typing import Any

from app.items.listener import LISTENER_NAME
from tests.pg_cluster import ThrowawayCluster
from tests.server import test_cache_faults as faults
from tests.server.test_cache import Pinned, _one_connection_per_worker
from tests.support import Server, fetch_sql

# The module's two instances, made as test_cache_faults.py makes them.
instances = faults.instances

PAGE = "/items?limit=100"


def _truth(database_url: str) -> list[tuple[int, int]]:
    rows = fetch_sql(database_url, "SELECT id, version FROM items ORDER BY id LIMIT 100")
    return [(row["id"], row["version"]) for row in rows]


def _shown(page: dict[str, Any]) -> list[tuple[int, int]]:
    return [(item["id"], item["version"]) for item in page["items"]]


def _pages_cached(workers: list[Pinned]) -> None:
    """Read the page on each worker until its cache holds it (listening, readiness counts it)."""
    faults._until_listening(workers)
    deadline = time.monotonic() + faults.RECOVERY
    for worker in workers:
        while True:
            assert faults._answer(worker, "GET", PAGE)[0] == 200
            cache = faults._answer(worker, "GET", "/health/ready")[1]["checks"]["cache"]
            if cache["pages"] >= 1:
                break
            assert time.monotonic() < deadline, "a worker never cached the page"
            time.sleep(0.05)


def _stale_pages(workers: list[Pinned], truth: list[tuple[int, int]]) -> list[Any]:
    """Read on each worker until it shows `truth`: the pages each served before that."""
    stale: list[Any] = []
    for worker in workers:
        started = time.monotonic()
        while (shown := _shown(faults._answer(worker, "GET", PAGE)[1])) != truth:
            stale.append(shown)
            assert time.monotonic() - started < 30, "stale past any bound"
            time.sleep(0.05)
    return stale


def _setup(instances: tuple[Server, Server]) -> tuple[Server, Server, list[Pinned], Pinned]:
    a, b = instances
    a_worker = Pinned(a.base)
    status, created = faults._answer(a_worker, "POST", "/items", {"name": "paged", "price": 1})
    assert status == 201, created
    b_workers = _one_connection_per_worker(b.base)
    _pages_cached(b_workers)
    return a, b, b_workers, a_worker


def _create_at_once(a_worker: Pinned) -> None:
    status, created = faults._answer(a_worker, "POST", "/items", {"name": "missed", "price": 2})
    assert status == 201, created


def test_a_terminated_listen_session_stops_serving_pages_at_once(
    instances: tuple[Server, Server], throwaway_cluster: ThrowawayCluster, throwaway_db: str
) -> None:
    _a, b, b_workers, a_worker = _setup(instances)
    ports = faults._listen_client_ports(b, throwaway_cluster.port)
    ended = fetch_sql(
        throwaway_db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = $1 AND client_port = ANY($2::int[])",
        LISTENER_NAME,
        ports,
    )
    assert len(ended) == 2, "B's two LISTEN sessions were not found"
    _create_at_once(a_worker)
    assert _stale_pages(b_workers, _truth(throwaway_db)) == []
    _pages_cached(b_workers)
    for worker in [*b_workers, a_worker]:
        worker.conn.close()


def test_a_database_restart_never_leaves_b_serving_a_page_it_missed(
    instances: tuple[Server, Server], throwaway_cluster: ThrowawayCluster, throwaway_db: str
) -> None:
    _a, _b, b_workers, a_worker = _setup(instances)
    throwaway_cluster.stop("fast")
    throwaway_cluster.start()
    _create_at_once(a_worker)
    assert _stale_pages(b_workers, _truth(throwaway_db)) == []
    _pages_cached(b_workers)
    for worker in [*b_workers, a_worker]:
        worker.conn.close()
