"""Prometheus metrics, aggregated over every worker process (prometheus-client multiprocess mode).

`python -m app serve` points PROMETHEUS_MULTIPROC_DIR at a fresh folder before this module is
first imported (see `app.lifecycle.prepare_metrics_dir`); each process then writes its samples
to its own files there and a scrape sums them. Without that folder (tests building an app in
process) the metrics live in the default in-process registry.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import platform
import time
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from sanic import HTTPResponse, Request
from sanic.exceptions import Unauthorized

from app.background import run_in_background
from app.db.batch import BATCH_SIZES, SIZE_BOUNDS
from app.db.batch import KINDS as BATCH_KINDS
from app.items.cache import LOOKUPS, PAGE_LOOKUPS
from app.ops import openapi
from app.settings import Settings

if TYPE_CHECKING:
    from sanic import Sanic

# prometheus-client's own switch; set by `prepare_metrics_dir` in the main process.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter(
    "items_http_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "items_http_request_duration_seconds",
    "Time from the request head to the end of the response, by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
IN_FLIGHT = Gauge(
    "items_http_requests_in_flight",
    "Requests being handled now, over all live workers.",
    multiprocess_mode="livesum",
)
POOL_SIZE = Gauge(
    "items_db_pool_connections",
    "Open database connections, over all live workers' pools.",
    multiprocess_mode="livesum",
)
POOL_IN_USE = Gauge(
    "items_db_pool_connections_in_use",
    "Database connections lent to a request now, over all live workers.",
    multiprocess_mode="livesum",
)
POOL_WAITING = Gauge(
    "items_db_pool_waiting",
    "Requests waiting for a pool connection now, over all live workers.",
    multiprocess_mode="livesum",
)
POOL_MAX = Gauge(
    "items_db_pool_max_connections",
    "The pools' size limit, over all live workers.",
    multiprocess_mode="livesum",
)
WORKER_CRASHES = Counter(
    "items_worker_crashes_total", "Worker processes that died unexpectedly and were replaced."
)
# Cache lookups are counted by the cache (app/items/cache.py `LOOKUPS`) and added at each
# flush; `RATE_LIMITED.inc()` per 429.
CACHE_HITS = Counter("items_cache_hits_total", "Cache lookups answered from the cache.", ["cache"])
CACHE_MISSES = Counter("items_cache_misses_total", "Cache lookups that missed.", ["cache"])
# Per cache (`GET /items/{id}`, `GET /items`): its counts and their children, label values
# from this fixed pair.
_CACHE_LOOKUPS = tuple(
    (lookups, CACHE_HITS.labels(cache), CACHE_MISSES.labels(cache))
    for lookups, cache in ((LOOKUPS, "items"), (PAGE_LOOKUPS, "pages"))
)
DB_BATCH_SIZE = Histogram(
    "items_db_batch_size",
    "Requests served by one batched statement, per batch and kind (app/db/batch.py).",
    ["kind"],
    buckets=SIZE_BOUNDS,
)
RATE_LIMITED = Counter("items_rate_limit_rejections_total", "Requests refused with 429.")
BUILD_INFO = Gauge(
    "items_build_info",
    "Always 1; the labels say what is running.",
    ["version", "python", "sanic"],
    multiprocess_mode="max",
)

# Every label value comes from a small fixed set, never from the request as sent: a method
# is any token a client writes (`ZQXYZ /items` reaches the app and gets a 404), and each new
# value would add a series to every worker's dicts and files and to each scrape. Routes are
# labelled by template or `<unmatched>` (app/ops/hook.py), statuses are the server's own.
# tests/server/test_metrics.py sends invented methods and paths and checks /metrics stays put.
STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
)
OTHER_METHOD = "other"


def method_label(method: str) -> str:
    """The method's label value: the method when standard, else `other`."""
    return method if method in STANDARD_METHODS else OTHER_METHOD


# Children made once per label combination: `labels()` takes a lock and builds a key each call.
_request_children: dict[tuple[str, str, int], Any] = {}
_latency_children: dict[tuple[str, str], Any] = {}
# LATENCY's upper bounds with +Inf: bisect_left finds the bucket `Histogram.observe` would.
_BOUNDS = (*LATENCY._upper_bounds,)  # noqa: SLF001
# How stale a worker's request counts and pool gauges may be in a scrape another process renders.
FLUSH_SECONDS = 0.5


class RequestStats:
    """This worker's requests since the last flush: plain counters on the hot path.

    Every prometheus-client update in multiprocess mode takes a lock, asks the OS for the pid
    and writes a memory-mapped file; five of them per request (in-flight up and down, the
    counter, a histogram's bucket and sum) would be a visible share of a cheap request. Here a
    request costs two dict updates; `flush()` hands the totals to the metrics every
    FLUSH_SECONDS, before this worker renders a scrape, and when the worker stops.
    """

    __slots__ = ("_counts", "_latency", "finished", "started")

    def __init__(self) -> None:
        self.started = 0
        self.finished = 0
        self._counts: dict[tuple[str, str, int], int] = {}
        # Per (method, route): [sum of seconds, count in bucket 0, bucket 1, ...].
        self._latency: dict[tuple[str, str], list[float]] = {}

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        self.finished += 1
        key = (method, route, status)
        self._counts[key] = self._counts.get(key, 0) + 1
        entry = self._latency.get((method, route))
        if entry is None:
            entry = self._latency[(method, route)] = [0.0] * (len(_BOUNDS) + 1)
        entry[0] += seconds
        entry[bisect_left(_BOUNDS, seconds) + 1] += 1

    def flush(self) -> None:
        counts, self._counts = self._counts, {}
        for (method, route, status), count in counts.items():
            child = _request_children.get((method, route, status))
            if child is None:
                child = _request_children[(method, route, status)] = REQUESTS.labels(
                    method, route, str(status)
                )
            child.inc(count)
        latency, self._latency = self._latency, {}
        for (method, route), entry in latency.items():
            child = _latency_children.get((method, route))
            if child is None:
                child = _latency_children[(method, route)] = LATENCY.labels(method, route)
            add_observations(child, entry)
        IN_FLIGHT.set(self.started - self.finished)
        for lookups, hits_child, misses_child in _CACHE_LOOKUPS:
            hits, misses = lookups.take()
            if hits:
                hits_child.inc(hits)
            if misses:
                misses_child.inc(misses)
        for kind in BATCH_KINDS:
            batches, sizes = BATCH_SIZES.take(kind)
            if sizes:
                add_observations(DB_BATCH_SIZE.labels(kind), [sizes, *batches])


def add_observations(histogram: Histogram, entry: list[float]) -> None:
    """What `histogram.observe()` of each recorded value would have added, in one go.

    prometheus-client has no public call for many observations; this writes the same sum and
    bucket values `observe()` writes (tests/unit/test_metrics_batching.py checks they agree).
    """
    histogram._sum.inc(entry[0])  # noqa: SLF001
    for bucket, count in zip(histogram._buckets, entry[1:], strict=True):  # noqa: SLF001
        if count:
            bucket.inc(count)


# The one per process (workers are spawned: each has its own).
STATS = RequestStats()


def registry() -> CollectorRegistry:
    """The registry a scrape reads: every process's files in multiprocess mode."""
    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    collector_registry = CollectorRegistry()
    prometheus_multiprocess.MultiProcessCollector(collector_registry)  # type: ignore[no-untyped-call]
    return collector_registry


def render() -> bytes:
    return generate_latest(registry())


class ScrapeRenders:
    """At most `per_second` renders of `/metrics` per second in this worker; beyond, the last.

    `/metrics` is exempt from rate limits, and one render reads every process's files (~20 ms
    with the series of a busy server, against ~1 ms for a probe): rendered per request, one
    client scraping in a loop could spend a worker on it. Labels from fixed sets
    (`method_label`) bound what one render costs; this bounds how often it is paid, whatever
    the rate of scrapes. Scrapers (one every 15 s or so, a few with HA pairs) always get a
    fresh render; only scrapes beyond `per_second` in a second get the latest one again.
    """

    __slots__ = ("_body", "_renders", "_second", "per_second")

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._second = float("-inf")
        self._renders = 0
        self._body = b""

    def latest(self) -> bytes:
        now = time.monotonic()
        if now - self._second >= 1.0:
            self._second, self._renders = now, 0
        if self._renders < self.per_second:
            self._renders += 1
            STATS.flush()  # this worker's own requests up to now; the others' FLUSH_SECONDS old
            self._body = render()
        return self._body


RENDERS_PER_SECOND = 4
SCRAPES = ScrapeRenders(RENDERS_PER_SECOND)


def mark_process_dead(pid: int) -> None:
    """Drop a finished process's live gauges (its counters stay in the totals)."""
    if os.environ.get(MULTIPROC_ENV):
        prometheus_multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


async def _sample(app: Sanic[Any, Any]) -> None:
    while True:
        STATS.flush()
        db = app.ctx.db
        if db is not None:
            size = db.pool.get_size()
            POOL_SIZE.set(size)
            POOL_IN_USE.set(size - db.pool.get_idle_size())
            POOL_WAITING.set(db.waiting)
            POOL_MAX.set(db.pool.get_max_size())
        await asyncio.sleep(FLUSH_SECONDS)


def register(app: Sanic[Any, Any], settings: Settings) -> None:
    """Serve `/metrics` on the API port (unless it has its own port) and sample the pool."""
    if not settings.METRICS_ENABLED:
        return
    token = settings.METRICS_TOKEN.get_secret_value().encode()
    expected = b"Bearer " + token

    @openapi.metrics
    async def metrics(request: Request) -> HTTPResponse:
        """Prometheus metrics of every worker process."""
        if token:
            sent = (request.headers.get("authorization") or "").encode()
            if not hmac.compare_digest(sent, expected):
                raise Unauthorized("A valid metrics token is needed.", scheme="Bearer")
        return HTTPResponse(SCRAPES.latest(), content_type=CONTENT_TYPE_LATEST)

    if settings.METRICS_PORT == 0:
        app.add_route(metrics, "/metrics", methods=["GET"], name="metrics")

    @app.after_server_start
    async def publish_build_info(app: Sanic[Any, Any]) -> None:  # noqa: ARG001
        import sanic

        BUILD_INFO.labels(_version(), platform.python_version(), sanic.__version__).set(1)

    run_in_background(app, "metrics-sampler", _sample)

    @app.after_server_stop
    async def forget_worker(app: Sanic[Any, Any]) -> None:  # noqa: ARG001
        STATS.flush()  # the last requests (drained after the sampler stopped), then the gauges go
        mark_process_dead(os.getpid())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("items-service")
    except PackageNotFoundError:
        return "unknown"


def serve_separately(settings: Settings) -> None:
    """In the main process: `/metrics` on METRICS_HOST:METRICS_PORT, from a thread."""
    from prometheus_client import start_http_server

    start_http_server(settings.METRICS_PORT, addr=settings.METRICS_HOST, registry=registry())
