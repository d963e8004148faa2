"""The read cache in real servers: never stale on the writer's machine, fresh elsewhere fast."""

from __future__ import annotations

import asyncio
import logging
import time
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import httpx
import orjson

from app.ops.metrics import FLUSH_SECONDS
from tests.server.test_workers import server_workers
from tests.server.writes import write_headers
from tests.support import notify_silenced, running_server

log = logging.getLogger(__name__)

ROUNDS = 100
READS_PER_ROUND = 4
# The documented bound for a write on one machine to reach another machine's cache
# (README, "Traffic control"); measured in milliseconds, bounded generously here.
CROSS_MACHINE_BOUND_S = 1.0


def _cache_hits(base: str) -> float:
    time.sleep(FLUSH_SECONDS + 0.3)  # every worker's counts reach the metrics by then
    text = httpx.get(f"{base}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("items_cache_hits_total")
    )


def _create(base: str) -> str:
    created = httpx.post(
        f"{base}/items", json={"name": "cached", "price": 1}, headers=write_headers()
    )
    assert created.status_code == 201, created.text
    return str(created.headers["location"])


class Pinned:
    """One keep-alive connection: the worker that accepted it answers all of its requests."""

    def __init__(self, base: str) -> None:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        self.conn = HTTPConnection(host, int(port), timeout=10)
        self.request("GET", "/health")
        self.local_port: int = self.conn.sock.getsockname()[1]

    def request(
        self, method: str, path: str, body: object = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        sent = {"Content-Type": "application/json"} if body is not None else {}
        sent.update(headers or {})
        self.conn.request(method, path, body=orjson.dumps(body) if body else None, headers=sent)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, orjson.loads(data) if data else None


def _one_connection_per_worker(base: str) -> list[Pinned]:
    """Open connections until each worker holds one of them; one per worker is kept."""
    port = int(base.rsplit(":", 1)[1])
    workers = server_workers(base)
    pinned: dict[int, Pinned] = {}
    opened: list[Pinned] = []
    # Workers race to accept; one still busy (start-up, a scheduler that favours the other)
    # can lose dozens of races in a row, so the attempts are spread over up to ~2.5 s.
    while len(pinned) < len(workers) and len(opened) < 256:
        if opened:
            time.sleep(0.01)
        candidate = Pinned(base)
        opened.append(candidate)
        owner = next(
            w.pid
            for w in workers
            for c in w.net_connections("tcp")
            if c.laddr.port == port and c.raddr and c.raddr.port == candidate.local_port
        )
        pinned.setdefault(owner, candidate)
    for extra in opened:
        if extra not in pinned.values():
            extra.conn.close()
    assert len(pinned) == len(workers) == 2, "no connection reached one of the workers"
    return list(pinned.values())


def test_each_write_reaches_every_worker_without_its_notification(
    cached_server: str, database_url: str
) -> None:
    path = _create(cached_server)
    workers = _one_connection_per_worker(cached_server)
    writes = [
        ("PUT", {"name": "replaced", "price": 2}, 200),
        ("PATCH", {"quantity": 7}, 200),
        ("DELETE", None, 204),
    ]
    with notify_silenced(database_url):
        for method, body, status in writes:
            for worker in workers:
                for _ in range(2):  # the second read is a hit
                    assert worker.request("GET", path)[0] == 200
            # Through one worker: only the shared generation can tell the other one.
            written_status, written = workers[0].request(method, path, body, write_headers())
            assert written_status == status, written
            seen = [worker.request("GET", path) for worker in workers]
            expected = (404, None) if method == "DELETE" else (200, written)
            assert [(s, b if s == 200 else None) for s, b in seen] == [expected, expected], (
                f"a worker served a stale item after {method}"
            )
    for worker in workers:
        worker.conn.close()


def test_a_write_is_never_read_stale_on_any_worker(cached_server: str) -> None:
    url = _create(cached_server)

    async def write_then_read() -> list[tuple[int, int]]:
        # A new connection per request, so reads land on both workers.
        limits = httpx.Limits(max_keepalive_connections=0)
        stale = []
        async with httpx.AsyncClient(base_url=cached_server, limits=limits, timeout=30) as client:
            for expected in range(2, ROUNDS + 2):
                written = await client.patch(
                    url, json={"quantity": expected}, headers=write_headers()
                )
                assert written.status_code == 200
                reads = await asyncio.gather(*(client.get(url) for _ in range(READS_PER_ROUND)))
                stale += [
                    (expected, read.json()["version"])
                    for read in reads
                    if read.json()["version"] != expected
                ]
                # Read again so both workers hold this version when the next write comes.
                await asyncio.gather(*(client.get(url) for _ in range(READS_PER_ROUND)))
        return stale

    hits_before = _cache_hits(cached_server)
    assert asyncio.run(write_then_read()) == []
    # Some reads were served from the cache, so the check above could have failed. Most of
    # the 800 miss: besides the writer's own bump, each write bumps its id's generation once
    # per worker when its NOTIFY arrives, milliseconds later, which drops what was cached in
    # between. 78-165 hits in runs on the development machine; at least one per ten rounds.
    assert _cache_hits(cached_server) - hits_before >= ROUNDS // 10


def test_a_write_on_one_instance_reaches_the_others_cache_within_the_bound(
    cached_server: str, database_url: str, tmp_path: Path
) -> None:
    reader = cached_server
    with running_server(
        database_url, log_path=tmp_path / "writer.log", WORKERS="2", RATE_LIMIT="off"
    ) as writer:
        url = _create(writer)
        lags = []
        with httpx.Client(timeout=10) as client:
            for quantity in range(1, 21):
                for _ in range(3):  # cache it on the reader
                    assert client.get(reader + url).status_code == 200
                written = client.patch(
                    writer + url, json={"quantity": quantity}, headers=write_headers()
                )
                assert written.status_code == 200
                done = time.monotonic()
                while client.get(reader + url).json()["quantity"] != quantity:
                    assert time.monotonic() - done < CROSS_MACHINE_BOUND_S, "stale too long"
                    time.sleep(0.001)
                lags.append(time.monotonic() - done)
        log.info(
            "cross-instance invalidation: max %.1f ms, mean %.1f ms over %d writes",
            max(lags) * 1000,
            sum(lags) / len(lags) * 1000,
            len(lags),
        )
        assert _cache_hits(reader) > 0
