"""`/metrics` sums every worker process of a real 2-worker server."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.ops.metrics import FLUSH_SECONDS, RENDERS_PER_SECOND
from tests.support import free_port, raw_request, running_server


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def health_count(metrics: str) -> float:
    key = (
        "items_http_requests_total",
        frozenset({("method", "GET"), ("route", "/health"), ("status", "200")}),
    )
    return samples(metrics).get(key, 0.0)


async def hit(base: str, requests: int, connections: int) -> list[int]:
    """`requests` GETs of /health over `connections` keep-alive connections at once."""

    async def one_connection(count: int) -> list[int]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            return [(await client.get("/health")).status_code for _ in range(count)]

    per_connection = requests // connections
    results = await asyncio.gather(*(one_connection(per_connection) for _ in range(connections)))
    return [status for statuses in results for status in statuses]


def test_request_counter_grows_by_exactly_the_requests_sent(
    database_url: str, tmp_path: Path
) -> None:
    with running_server(
        database_url, log_path=tmp_path / "server.log", WORKERS="2", ACCESS_LOG="false"
    ) as base:
        before = httpx.get(f"{base}/metrics").text
        statuses = asyncio.run(hit(base, requests=1200, connections=40))
        # The worker rendering the scrape adds its own requests first; the other worker's
        # reach its metrics within FLUSH_SECONDS. After that the totals must be exact.
        time.sleep(FLUSH_SECONDS + 0.5)
        after = httpx.get(f"{base}/metrics").text

    assert statuses == [200] * 1200
    assert health_count(after) - health_count(before) == 1200
    values = samples(after)
    latency_count = values[
        (
            "items_http_request_duration_seconds_count",
            frozenset({("method", "GET"), ("route", "/health")}),
        )
    ]
    assert latency_count == health_count(after)
    # Only the scrape itself is in flight while it is rendered.
    assert values[("items_http_requests_in_flight", frozenset())] == 1
    assert values[("items_db_pool_max_connections", frozenset())] == 2 * 10


def test_metrics_token_is_required_when_set(database_url: str, tmp_path: Path) -> None:
    with running_server(
        database_url, log_path=tmp_path / "server.log", WORKERS="1", METRICS_TOKEN="s3cret-token"
    ) as base:
        refused = httpx.get(f"{base}/metrics")
        wrong = httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer nope"})
        allowed = httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer s3cret-token"})

    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert wrong.status_code == 401
    assert allowed.status_code == 200
    assert "items_http_requests_total" in allowed.text


def test_metrics_can_have_their_own_port(database_url: str, tmp_path: Path) -> None:
    metrics_port = free_port()
    with running_server(
        database_url,
        log_path=tmp_path / "server.log",
        WORKERS="2",
        METRICS_PORT=str(metrics_port),
    ) as base:
        httpx.get(f"{base}/health")
        time.sleep(FLUSH_SECONDS + 0.5)  # the main process renders what the workers flushed
        separate = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
        on_api_port = httpx.get(f"{base}/metrics")

    assert separate.status_code == 200
    assert health_count(separate.text) >= 1
    assert on_api_port.status_code == 404


def _series(text: str) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    return {key for key in samples(text) if key[0].startswith("items_http_")}


def test_invented_methods_and_paths_add_no_series(live_server: str) -> None:
    """Whatever methods and paths clients invent, /metrics holds a fixed set of series."""
    port = int(live_server.rsplit(":", 1)[1])

    def invent(batch: int) -> list[int]:
        statuses = []
        for n in range(25):
            # A method token of its own per request, lower-case `get` too, and paths no
            # route serves: each would be a new label value if taken as sent.
            for method, target in (
                (f"ZQX{batch}X{n}", "/items"),
                ("get", f"/items/{n}"),
                ("GET", f"/no-such-{batch}-{n}"),
            ):
                statuses.append(raw_request(port, method, target).status)
        return statuses

    invent(0)  # the first `other` and `<unmatched>` series appear once
    httpx.get(f"{live_server}/metrics")  # and those of scrapes themselves
    time.sleep(FLUSH_SECONDS + 0.5)
    before = httpx.get(f"{live_server}/metrics").text
    statuses = invent(1)
    time.sleep(FLUSH_SECONDS + 0.5)
    after = httpx.get(f"{live_server}/metrics").text

    assert set(statuses) <= {400, 404, 405}, set(statuses)
    labels = {dict(key[1]).get("method") for key in _series(after)} - {None}
    assert labels <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    routes = {dict(key[1]).get("route") for key in _series(after)} - {None}
    assert all(route.startswith("/") or route == "<unmatched>" for route in routes), routes
    assert not any("no-such" in route for route in routes)
    # 75 more invented requests: the same series (only their values moved).
    assert _series(after) == _series(before)
    assert abs(len(after) - len(before)) < 200


def test_scraping_in_a_loop_renders_a_bounded_number_of_times(live_server: str) -> None:
    """Past RENDERS_PER_SECOND a second, a worker answers scrapes with its latest render."""
    scrapes = 40
    started = time.monotonic()
    with httpx.Client(base_url=live_server, timeout=30) as client:
        bodies = [client.get("/metrics").content for _ in range(scrapes)]
    seconds = time.monotonic() - started
    # Each fresh render counts the scrapes before it, so no two fresh renders are alike; at
    # most RENDERS_PER_SECOND of them per worker in each second the loop lasted.
    bound = 2 * RENDERS_PER_SECOND * (math.ceil(seconds) + 1)
    assert len(set(bodies)) <= min(bound, scrapes - 1), (len(set(bodies)), seconds)
