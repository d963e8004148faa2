"""Behaviour that only exists in a real multi-worker server process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter

import httpx
import psutil

from tests.support import ROOT, fetch_sql, free_port, server_env


def _server_process(base: str) -> psutil.Process:
    port = int(base.rsplit(":", 1)[1])
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if cmd[-3:] == ["-m", "app", "serve"]:
            try:
                if any(c.laddr.port == port for c in proc.net_connections("tcp")):
                    return proc
            except psutil.Error:
                continue
    raise AssertionError(f"no server process listens on {port}")


def server_workers(base: str) -> list[psutil.Process]:
    """The Sanic server workers (not the manager or resource tracker) of the server at `base`."""
    return [
        w
        for w in _server_process(base).children(recursive=True)
        if (w.environ().get("SANIC_WORKER_NAME") or "").startswith("Sanic-Server-")
    ]


def test_both_workers_answer_requests(live: str) -> None:
    # Workers race to accept on one socket, and a busy machine can let one win a whole
    # round: gather the answering workers over a few rounds of held connections.
    async def hold_connections() -> set[int]:
        clients = [httpx.AsyncClient(base_url=live) for _ in range(32)]
        try:
            responses = await asyncio.gather(*(c.get("/health") for c in clients))
            assert all(r.status_code == 200 for r in responses)
            # While the keep-alive connections stay open, see which worker holds each one.
            port = int(live.rsplit(":", 1)[1])
            answering = set()
            for worker in _server_process(live).children(recursive=True):
                try:
                    conns = worker.net_connections("tcp")
                except psutil.Error:
                    continue
                if any(c.laddr.port == port and c.status == "ESTABLISHED" for c in conns):
                    answering.add(worker.pid)
            return answering
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))

    answering: set[int] = set()
    for _ in range(10):
        answering |= asyncio.run(hold_connections())
        if len(answering) == 2:
            break
        time.sleep(0.2)
    assert len(answering) == 2


def test_racing_patches_with_one_if_match_have_exactly_one_winner(
    live: str, database_url: str, live_write_headers: dict[str, str]
) -> None:
    created = httpx.post(
        f"{live}/items", json={"name": "contended", "price": 1}, headers=live_write_headers
    )
    item_id = created.json()["id"]

    async def race() -> Counter[int]:
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=live, limits=limits, timeout=30) as client:
            responses = await asyncio.gather(
                *(
                    client.patch(
                        f"/items/{item_id}",
                        json={"quantity": n + 1},
                        headers={"If-Match": created.headers["etag"], **live_write_headers},
                    )
                    for n in range(50)
                )
            )
        return Counter(r.status_code for r in responses)

    statuses = asyncio.run(race())
    assert statuses == Counter({200: 1, 412: 49})
    [row] = fetch_sql(database_url, "SELECT version FROM items WHERE id = $1", item_id)
    assert row["version"] == 2


def _serve_expecting_refusal(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m app serve` that is expected to stop during start-up."""
    return subprocess.run(
        [sys.executable, "-m", "app", "serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_start_up_refuses_pools_larger_than_max_connections(database_url: str) -> None:
    env = server_env(database_url, free_port(), WORKERS="2", DB_POOL_MAX="100000")
    result = _serve_expecting_refusal(env)
    assert result.returncode == 2
    assert "DB_POOL_MAX" in result.stderr
    assert "max_connections" in result.stderr


def test_a_bad_setting_stops_start_up_naming_the_variable(database_url: str) -> None:
    env = server_env(database_url, free_port(), WORKERS="many")
    result = _serve_expecting_refusal(env)
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid configuration: WORKERS:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_workers_verify_tokens_without_loading_cryptography(
    live: str, live_write_headers: dict[str, str]
) -> None:
    created = httpx.post(
        f"{live}/items", json={"name": "x", "price": 1}, headers=live_write_headers
    )
    assert created.status_code == 201
    workers = server_workers(live)
    assert len(workers) == 2
    for worker in workers:
        assert not [m.path for m in worker.memory_maps() if "cryptography" in m.path]
