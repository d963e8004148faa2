"""Graceful drain on SIGTERM, start-up SIGTERM, worker crashes, and the log format: real
`python -m app serve` processes with 2 workers."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest

from tests.server.writes import write_headers
from tests.support import (
    ROOT,
    app_settings,
    fetch_sql,
    free_port,
    run_sql,
    server_env,
    server_process,
)

log = logging.getLogger(__name__)

IN_FLIGHT = 60


def worker_pids(main_pid: int, port: int) -> set[int]:
    """The main process's children that accept on the API port."""
    pids = set()
    for child in psutil.Process(main_pid).children(recursive=True):
        try:
            listening = child.net_connections("tcp")
        except psutil.Error:
            continue
        if any(c.laddr.port == port and c.status == "LISTEN" for c in listening):
            pids.add(child.pid)
    return pids


async def blocked_inserts(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO items%'"
            )
        )
    finally:
        await conn.close()


def test_sigterm_lets_every_in_flight_write_finish(throwaway_db: str, tmp_path: Path) -> None:
    run_sql(throwaway_db, "TRUNCATE items RESTART IDENTITY")
    with server_process(
        throwaway_db,
        log_path=tmp_path / "server.log",
        WORKERS="2",
        DB_POOL_MAX="40",
        DB_ACQUIRE_TIMEOUT="30",
        SHUTDOWN_DELAY="1",
        GRACEFUL_SHUTDOWN_TIMEOUT="20",
        RATE_LIMIT="off",
    ) as server:

        async def scenario() -> dict[str, object]:
            # Hold the table so every INSERT waits: the requests are truly in flight.
            lock = await asyncpg.connect(throwaway_db)
            await lock.execute("BEGIN; LOCK TABLE items IN EXCLUSIVE MODE")
            limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=server.base, limits=limits, timeout=60) as client:
                writes = [
                    asyncio.create_task(
                        client.post(
                            "/items",
                            json={"name": f"drain {n}", "price": n},
                            headers=write_headers(),
                        )
                    )
                    for n in range(IN_FLIGHT)
                ]
                deadline = time.monotonic() + 15
                while await blocked_inserts(throwaway_db) < 40 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)
                in_flight = sum(not task.done() for task in writes)
                waiting_in_db = await blocked_inserts(throwaway_db)

                signalled = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.4)
                async with httpx.AsyncClient(base_url=server.base, timeout=2) as probe:
                    ready = await probe.get("/health/ready")
                # After SHUTDOWN_DELAY the listener closes: a new connection is refused, at once.
                await asyncio.sleep(1.8 - (time.monotonic() - signalled))
                refused_at = time.monotonic()
                try:
                    async with httpx.AsyncClient(base_url=server.base, timeout=5) as late:
                        late_status: object = (await late.get("/health")).status_code
                except httpx.ConnectError:
                    late_status = "refused"
                late_seconds = time.monotonic() - refused_at

                await lock.execute("COMMIT")
                await lock.close()
                responses = await asyncio.gather(*writes, return_exceptions=True)
            return {
                "in_flight": in_flight,
                "waiting_in_db": waiting_in_db,
                "ready": ready,
                "late_status": late_status,
                "late_seconds": late_seconds,
                "responses": responses,
            }

        outcome = asyncio.run(scenario())
        exit_code = server.process.wait(timeout=30)

    responses = outcome["responses"]
    assert isinstance(responses, list)
    statuses = Counter(
        r.status_code if isinstance(r, httpx.Response) else type(r).__name__ for r in responses
    )
    log.info(
        "drain: in flight %s (%s waiting in the database), completed %s, exit %s",
        outcome["in_flight"],
        outcome["waiting_in_db"],
        dict(statuses),
        exit_code,
    )
    assert outcome["in_flight"] == IN_FLIGHT
    ready = outcome["ready"]
    assert isinstance(ready, httpx.Response)
    assert ready.status_code == 503
    assert ready.json()["checks"]["shutdown"]["status"] == "fail"
    assert outcome["late_status"] == "refused"
    assert isinstance(outcome["late_seconds"], float) and outcome["late_seconds"] < 1
    assert statuses == Counter({201: IN_FLIGHT})
    assert exit_code == 0
    created = {r.json()["id"] for r in responses if isinstance(r, httpx.Response)}
    stored = {row["id"] for row in fetch_sql(throwaway_db, "SELECT id FROM items")}
    assert stored == created and len(created) == IN_FLIGHT


def test_a_killed_worker_is_replaced_and_the_server_keeps_answering(
    database_url: str, tmp_path: Path
) -> None:
    with server_process(database_url, log_path=tmp_path / "server.log", WORKERS="2") as server:
        deadline = time.monotonic() + 15
        while server.log().count("Worker ready") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        before = worker_pids(server.process.pid, server.port)
        assert len(before) == 2
        victim = min(before)
        psutil.Process(victim).kill()

        statuses: Counter[int] = Counter()
        deadline = time.monotonic() + 15
        now = before - {victim}
        while time.monotonic() < deadline:
            # A fresh connection each time, so both live workers get asked.
            statuses[httpx.get(f"{server.base}/items", timeout=5).status_code] += 1
            now = worker_pids(server.process.pid, server.port)
            if len(now) == 2 and victim not in now and statuses.total() >= 20:
                break
            time.sleep(0.05)
        log_text = server.log()

    assert statuses.keys() == {200}
    assert len(now) == 2 and victim not in now
    assert f"(pid {victim}) died (signal SIGKILL); starting a replacement" in log_text


def test_a_stop_signal_whose_exit_was_swallowed_still_stops_start_up(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start-up SIGTERM handler raises SystemExit wherever the main thread is; Python
    ignores it inside a weakref callback or a finaliser (seen: "Exception ignored in:
    WeakSet._remove ... SystemExit: 0", then workers started and served). Start-up must
    still stop before it starts the workers."""
    from sanic import Sanic

    from app import __main__ as cli

    def started(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("workers started after SIGTERM")

    monkeypatch.setattr(Sanic, "serve", started)
    monkeypatch.setattr(cli._StopRequest, "signalled", False)
    try:
        cli._stop_before_serving(signal.SIGTERM, None)
    except SystemExit:
        pass  # what a weakref callback does with it
    assert cli._serve(app_settings(database_url, WORKERS=2)) == 0


@pytest.mark.parametrize("trigger", ["database capacity", "Starting worker", "Worker ready"])
def test_sigterm_while_starting_up_exits_cleanly(database_url: str, trigger: str) -> None:
    """SIGTERM right after the log line `trigger`: before serving, and while workers start."""
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve"],
        cwd=ROOT,
        env=server_env(database_url, free_port(), WORKERS="2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # Its own group, so a failure can end every process holding the output pipe.
        start_new_session=True,
    )
    assert process.stdout is not None
    seen = []
    for raw in process.stdout:
        seen.append(raw.decode())
        if trigger in seen[-1]:
            process.send_signal(signal.SIGTERM)
            break
    try:
        rest, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        rest, _ = process.communicate(timeout=10)
        pytest.fail(f"server still running 30 s after SIGTERM:\n{''.join(seen)}{rest.decode()}")
    output = "".join(seen) + rest.decode()
    assert trigger in output
    assert process.returncode == 0, output


def test_logs_are_json_lines_once_each_with_the_request_id(
    database_url: str, tmp_path: Path
) -> None:
    with server_process(
        database_url, log_path=tmp_path / "server.log", WORKERS="2", LOG_FORMAT="json"
    ) as server:
        response = httpx.get(f"{server.base}/items/424242", headers={"X-Request-ID": "ops-log-1"})
        made = httpx.get(f"{server.base}/items?limit=1")
        httpx.get(f"{server.base}/health", headers={"X-Request-ID": "bad id with spaces"})
        # Each worker flushes its own access lines (every 0.1 s): wait for all three.
        lines = server.log_once_it_has(
            '"request_id":"ops-log-1"',
            f'"request_id":"{made.headers["x-request-id"]}"',
            '"path":"/health"',
        ).splitlines()

    assert response.headers["x-request-id"] == "ops-log-1"
    assert response.json()["request_id"] == "ops-log-1"
    generated = made.headers["x-request-id"]
    assert len(generated) == 32
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    access = [e for e in entries if e["logger"] == "app.access"]
    [miss] = [e for e in access if e["request_id"] == "ops-log-1"]
    assert miss["method"] == "GET"
    assert miss["route"] == "/items/<item_id:int>"
    assert miss["path"] == "/items/424242"
    assert miss["status"] == 404
    assert miss["bytes"] > 0 and miss["duration_ms"] > 0
    assert miss["client_ip"] == "127.0.0.1"
    assert isinstance(miss["pid"], int)
    assert [e["status"] for e in access if e["request_id"] == generated] == [200]
    # An unsafe id is replaced, not logged.
    assert not any("spaces" in e["request_id"] for e in entries)
    # One handler for everything: no line twice, no Sanic prefixes.
    assert len({line for line in lines if "Worker" in line}) == len(
        [line for line in lines if "Worker" in line]
    )
    assert not any("Srv " in line for line in lines)
