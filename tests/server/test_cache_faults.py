"""The read cache when its LISTEN connection is lost: two instances on one throwaway database.

Instance A writes, instance B has the item cached on both workers; then B's LISTEN sessions
end (a PostgreSQL restart, or `pg_terminate_backend`) and A writes at once, so B never hears
of that write. B must not serve the older item from its cache, and must cache again once
LISTEN is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.items.listener import LISTENER_NAME
from tests.pg_cluster import ThrowawayCluster
from tests.server.test_cache import Pinned, _one_connection_per_worker
from tests.server.test_workers import server_workers
from tests.server.writes import write_headers
from tests.support import Server, fetch_sql, server_process

log = logging.getLogger(__name__)

LOST = "cache invalidation stream lost"
# Seconds within which B answers again (a 503 while its pool reconnects is not stale).
RECOVERY = 10.0


@pytest.fixture(scope="module")
def instances(
    throwaway_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server]]:
    """A and B: two 2-worker servers, as on two machines, sharing one database."""
    folder = Path(tmp_path_factory.mktemp("cache-faults"))
    with ExitStack() as stack:
        a, b = (
            stack.enter_context(
                server_process(
                    throwaway_db,
                    log_path=folder / f"{name}.log",
                    WORKERS="2",
                    RATE_LIMIT="off",
                    CONNECTION_BALANCE="false",
                    KEEP_ALIVE_TIMEOUT="60",
                    LOG_FORMAT="json",
                )
            )
            for name in ("a", "b")
        )
        yield a, b


def _answer(worker: Pinned, method: str, path: str, body: object = None) -> tuple[int, Any]:
    """The worker's answer once it is not 503 (the database may just be coming back)."""
    headers = write_headers() if method != "GET" else None
    deadline = time.monotonic() + RECOVERY
    while True:
        status, data = worker.request(method, path, body, headers)
        if status != 503 or time.monotonic() > deadline:
            return status, data
        time.sleep(0.05)


def _until_listening(workers: list[Pinned]) -> None:
    """Wait until every worker's cache hears notifications again (readiness says so)."""
    deadline = time.monotonic() + RECOVERY
    for worker in workers:
        while _answer(worker, "GET", "/health/ready")[1]["checks"]["cache"]["status"] != "ok":
            assert time.monotonic() < deadline, "a worker's cache never listened again"
            time.sleep(0.05)


def _cached_on_every_worker(workers: list[Pinned], path: str) -> None:
    _until_listening(workers)
    for worker in workers:
        for _ in range(2):
            assert _answer(worker, "GET", path)[0] == 200
        assert _answer(worker, "GET", "/health/ready")[1]["checks"]["cache"]["entries"] >= 1


def _stale_reads(workers: list[Pinned], path: str, written: dict[str, Any]) -> list[int]:
    """Read on each worker until it shows the write: the versions each served before that."""
    stale: list[int] = []
    for worker in workers:
        started = time.monotonic()
        while (read := _answer(worker, "GET", path))[1]["version"] != written["version"]:
            stale.append(read[1]["version"])
            assert time.monotonic() - started < 30, "stale past any bound"
            time.sleep(0.05)
        log.info("B worker fresh after %.0f ms", (time.monotonic() - started) * 1000)
    return stale


def _listen_client_ports(server: Server, database_port: int) -> list[int]:
    """The local ports of the server's worker connections to the database."""
    return [
        c.laddr.port
        for worker in server_workers(server.base)
        for c in worker.net_connections("tcp")
        if c.raddr and c.raddr.port == database_port
    ]


def _cache_off_delays(server: Server, since: float) -> list[float]:
    """Seconds from `since` (epoch) to each worker's log line saying its cache went off."""
    delays = []
    for line in server.log().splitlines():
        if line.startswith("{") and LOST in line:
            entry = orjson.loads(line)
            at = datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()
            if at >= since:
                delays.append(at - since)
    return delays


def _setup(instances: tuple[Server, Server]) -> tuple[Server, Server, list[Pinned], str]:
    a, b = instances
    created = httpx.post(
        f"{a.base}/items", json={"name": "cached", "price": 1}, headers=write_headers()
    )
    assert created.status_code == 201, created.text
    path = str(created.headers["location"])
    b_workers = _one_connection_per_worker(b.base)
    _cached_on_every_worker(b_workers, path)
    return a, b, b_workers, path


def test_a_terminated_listen_session_stops_the_cache_at_once(
    instances: tuple[Server, Server], throwaway_cluster: ThrowawayCluster, throwaway_db: str
) -> None:
    a, b, b_workers, path = _setup(instances)
    ports = _listen_client_ports(b, throwaway_cluster.port)
    ended = fetch_sql(
        throwaway_db,
        "SELECT pg_terminate_backend(pid), extract(epoch FROM clock_timestamp())::float8 "
        "FROM pg_stat_activity WHERE application_name = $1 AND client_port = ANY($2::int[])",
        LISTENER_NAME,
        ports,
    )
    assert len(ended) == 2, "B's two LISTEN sessions were not found"
    since = min(row[1] for row in ended)
    a_worker = Pinned(a.base)
    status, written = _answer(a_worker, "PATCH", path, {"quantity": 5})
    assert status == 200, written
    assert _stale_reads(b_workers, path, written) == []
    log.info("B's caches off %s s after pg_terminate_backend", _cache_off_delays(b, since))
    # Caching again once LISTEN is back (entries counted by each worker's readiness).
    _cached_on_every_worker(b_workers, path)
    for worker in [*b_workers, a_worker]:
        worker.conn.close()


def test_a_database_restart_never_leaves_b_serving_a_write_it_missed(
    instances: tuple[Server, Server], throwaway_cluster: ThrowawayCluster
) -> None:
    a, b, b_workers, path = _setup(instances)
    since = time.time()
    throwaway_cluster.stop("fast")  # pg_ctl restart -m fast, in its two halves
    throwaway_cluster.start()
    restarted = time.time() - since
    a_worker = Pinned(a.base)
    status, written = _answer(a_worker, "PATCH", path, {"quantity": 6})
    assert status == 200, written
    stale = _stale_reads(b_workers, path, written)
    log.info(
        "restart took %.2f s; B's caches off %s s after it began; %d stale reads on B",
        restarted,
        _cache_off_delays(b, since),
        len(stale),
    )
    assert stale == []
    _cached_on_every_worker(b_workers, path)
    for worker in [*b_workers, a_worker]:
        worker.conn.close()
