"""A database outage and its recovery, against a real 2-worker server and a throwaway cluster."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx

from tests.pg_cluster import ThrowawayCluster
from tests.server.writes import write_headers
from tests.support import run_sql, server_process

log = logging.getLogger(__name__)

FAST = 2.0  # seconds: a request that needs the database fails within this while it is down
RECOVERY = 10.0  # seconds: the service answers again within this once the database is back


def timed(
    client: httpx.Client, method: str, path: str, **kwargs: object
) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
    return response, time.monotonic() - started


def test_outage_answers_503_fast_and_recovers_by_itself(
    throwaway_cluster: ThrowawayCluster, throwaway_db: str, tmp_path: Path
) -> None:
    run_sql(throwaway_db, "TRUNCATE items RESTART IDENTITY")
    with (
        server_process(
            throwaway_db,
            log_path=tmp_path / "server.log",
            WORKERS="2",
            LOG_FORMAT="json",
            RATE_LIMIT="off",
            CACHE_ENABLED="false",
        ) as server,
        httpx.Client(base_url=server.base, timeout=10) as client,
    ):
        created = client.post(
            "/items", json={"name": "before", "price": 1}, headers=write_headers()
        )
        assert created.status_code == 201

        throwaway_cluster.stop("fast")
        stopped_at = time.monotonic()
        worst = 0.0
        db_requests = 0
        rid = None
        while time.monotonic() - stopped_at < 4:
            for method, path, kwargs in [
                ("GET", "/items", {}),
                ("GET", "/items/1", {}),
                ("POST", "/items", {"json": {"name": "x", "price": 1}, "headers": write_headers()}),
            ]:
                response, seconds = timed(client, method, path, **kwargs)
                db_requests += 1
                worst = max(worst, seconds)
                assert response.status_code == 503, (method, path, response.text)
                assert response.headers["content-type"] == "application/problem+json"
                assert int(response.headers["retry-after"]) > 0
                # The first failure is logged; later ones only once per interval, counted.
                rid = rid or response.json()["request_id"]
            assert client.get("/health").status_code == 200
            ready = client.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"]["status"] == "fail"

        throwaway_cluster.start()
        restarted_at = time.monotonic()
        while True:
            response = client.get("/items")
            if response.status_code == 200:
                break
            assert time.monotonic() - restarted_at < RECOVERY, response.text
            time.sleep(0.1)
        recovered_after = time.monotonic() - restarted_at
        # Every worker's pool is back, not only the one that answered first.
        statuses = {httpx.get(f"{server.base}/items/1", timeout=5).status_code for _ in range(20)}
        assert client.get("/health/ready").status_code == 200
        time.sleep(0.2)
        lines = [json.loads(line) for line in server.log().splitlines()]

    log.info(
        "outage: %d requests needing the database while it was down, slowest 503 in %.3f s; "
        "recovered %.2f s after the database restarted",
        db_requests,
        worst,
        recovered_after,
    )
    assert worst < FAST
    assert statuses == {200}
    # Not one warning per failed request: per worker, the first, then one per interval.
    outage_warnings = [line for line in lines if line["msg"].startswith("database unavailable")]
    assert 1 <= len(outage_warnings) <= 4 < db_requests
    same_request = [line for line in lines if line["request_id"] == rid]
    assert {line["logger"] for line in same_request} == {"app.errors", "app.access"}
    log.info("one request's log lines: %s", json.dumps(same_request))
