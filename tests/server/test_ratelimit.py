"""One rate limit for a whole machine (2 workers), and for two machines sharing Redis."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, running_server

LIMIT = 20
REQUESTS = 60


def _start_in_a_fresh_window(period: int = 60, need: float = 20.0) -> None:
    """Counts are per window aligned to the clock: never start a count near a window's end."""
    left = period - time.time() % period
    if left < need:
        time.sleep(left + 0.05)


def _spread_over_connections(bases: list[str], path: str = "/items") -> Counter[int]:
    """REQUESTS requests, a new connection for each, round-robin over `bases`."""

    async def send() -> Counter[int]:
        limits = httpx.Limits(max_connections=30, max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            responses = await asyncio.gather(
                *(client.get(bases[n % len(bases)] + path) for n in range(REQUESTS))
            )
        for response in responses:
            assert "ratelimit-limit" in response.headers
            if response.status_code == 429:
                assert response.headers["content-type"] == "application/problem+json"
                assert int(response.headers["retry-after"]) >= 1
        return Counter(r.status_code for r in responses)

    return asyncio.run(send())


def test_two_workers_admit_exactly_the_limit(database_url: str, tmp_path: Path) -> None:
    with running_server(
        database_url, log_path=tmp_path / "server.log", WORKERS="2", RATE_LIMIT=f"{LIMIT}/minute"
    ) as base:
        _start_in_a_fresh_window()
        statuses = _spread_over_connections([base])
        # Probes stay exempt however spent the limit is.
        assert httpx.get(f"{base}/health").status_code == 200
    assert statuses == Counter({200: LIMIT, 429: REQUESTS - LIMIT})


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway Redis of this module's own (no persistence), stopped afterwards."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed: cannot test limits shared through Redis")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_two_instances_sharing_redis_admit_exactly_the_limit(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        bases = [
            stack.enter_context(
                running_server(
                    database_url,
                    log_path=tmp_path / f"server-{n}.log",
                    WORKERS="2",
                    RATE_LIMIT=f"{LIMIT}/minute",
                    REDIS_URL=redis_url,
                )
            )
            for n in range(2)
        ]
        _start_in_a_fresh_window()
        statuses = _spread_over_connections(bases)
    assert statuses == Counter({200: LIMIT, 429: REQUESTS - LIMIT})
