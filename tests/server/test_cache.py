"""The read cache in real servers: never stale on the writer's machine, fresh elsewhere fast."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from app.metrics import FLUSH_SECONDS
from tests.server.writes import write_headers
from tests.support import running_server

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


def test_a_write_is_never_read_stale_on_any_worker(database_url: str, tmp_path: Path) -> None:
    with running_server(
        database_url, log_path=tmp_path / "server.log", WORKERS="2", RATE_LIMIT="off"
    ) as base:
        url = _create(base)

        async def write_then_read() -> list[tuple[int, int]]:
            # A new connection per request, so reads land on both workers.
            limits = httpx.Limits(max_keepalive_connections=0)
            stale = []
            async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
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

        hits_before = _cache_hits(base)
        assert asyncio.run(write_then_read()) == []
        # Some reads were served from the cache, so the check above could have failed. Most of
        # the 800 miss: besides the writer's own bump, each write bumps its id's generation once
        # per worker when its NOTIFY arrives, milliseconds later, which drops what was cached in
        # between. 78-165 hits in runs on the development machine; at least one per ten rounds.
        assert _cache_hits(base) - hits_before >= ROUNDS // 10


def test_a_write_on_one_instance_reaches_the_others_cache_within_the_bound(
    database_url: str, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        writer, reader = (
            stack.enter_context(
                running_server(
                    database_url, log_path=tmp_path / f"{name}.log", WORKERS="2", RATE_LIMIT="off"
                )
            )
            for name in ("writer", "reader")
        )
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
