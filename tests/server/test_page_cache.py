"""List pages in the read cache of real servers: a write on one worker is never read stale on
another, a write that commits while pages are read is never served stale after its response,
and a write on another instance reaches the pages within the cross-machine bound."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.ops.metrics import FLUSH_SECONDS
from tests.server.test_cache import CROSS_MACHINE_BOUND_S, Pinned, _one_connection_per_worker
from tests.server.writes import write_headers
from tests.support import fetch_sql, notify_silenced, run_sql, running_server

PAGE = "/items?limit=100"
# A write's commit is held this long by `slow_commits`: reads run inside that window.
COMMIT_HELD_S = 1.0

Write = tuple[str, str, dict[str, Any] | None, dict[str, str], int]


@pytest.fixture
def server(cached_server: str, database_url: str) -> str:
    """The server, over an empty table (so every new row is on the page)."""
    run_sql(database_url, "TRUNCATE items RESTART IDENTITY")
    return cached_server


def _writes(path: str, tag: str) -> list[Write]:
    """One of each write to `items` the API makes: (method, target, body, headers, status)."""
    return [
        ("POST", "/items", {"name": "new", "price": 3}, {}, 201),
        ("POST", "/items", {"name": "new", "price": 4}, {"Idempotency-Key": f"{tag}-1"}, 201),
        ("PUT", path, {"name": "replaced", "price": 5}, {}, 200),
        ("PATCH", path, {"quantity": 6}, {}, 200),
        ("DELETE", path, None, {}, 204),
    ]


def _create(base: str) -> str:
    created = httpx.post(
        f"{base}/items", json={"name": "paged", "price": 1}, headers=write_headers()
    )
    assert created.status_code == 201, created.text
    return str(created.headers["location"])


def _truth(database_url: str) -> list[tuple[int, int]]:
    """The page as the database holds it now: (id, version) in id order."""
    rows = fetch_sql(database_url, "SELECT id, version FROM items ORDER BY id LIMIT 100")
    return [(row["id"], row["version"]) for row in rows]


def _shown(page: dict[str, Any]) -> list[tuple[int, int]]:
    return [(item["id"], item["version"]) for item in page["items"]]


def _read(worker: Pinned) -> list[tuple[int, int]]:
    status, page = worker.request("GET", PAGE)
    assert status == 200, page
    return _shown(page)


def _cached_on(workers: list[Pinned]) -> None:
    """Read the page on each worker until its cache holds a page (its readiness says so)."""
    deadline = time.monotonic() + 10
    for worker in workers:
        while True:
            _read(worker)
            cache = worker.request("GET", "/health/ready")[1]["checks"]["cache"]
            if cache["status"] == "ok" and cache["pages"] >= 1:
                break
            assert time.monotonic() < deadline, "a worker never cached the page"
            time.sleep(0.05)


def _write(worker: Pinned | None, base: str, write: Write) -> None:
    method, target, body, headers, status = write
    sent = {**write_headers(), **headers}
    if worker is None:  # a connection of its own, on whichever worker takes it
        answer = httpx.request(method, base + target, json=body, headers=sent, timeout=30)
        assert answer.status_code == status, answer.text
        return
    code, data = worker.request(method, target, body, sent)
    assert code == status, data


def _write_in_background(base: str, write: Write) -> tuple[threading.Thread, list[object]]:
    """Run `write` in a thread; its outcome lands in the list (None: as expected)."""
    outcome: list[object] = []

    def run() -> None:
        try:
            _write(None, base, write)
        except Exception as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _page_hits(base: str) -> float:
    time.sleep(FLUSH_SECONDS + 0.3)  # every worker's counts reach the metrics by then
    text = httpx.get(f"{base}/metrics").text
    prefix = 'items_cache_hits_total{cache="pages"}'
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


@contextmanager
def slow_commits(database_url: str) -> Iterator[None]:
    """Inside, every write to `items` holds its commit for COMMIT_HELD_S, after its statement
    has run: a deferred trigger, run by COMMIT itself."""
    run_sql(
        database_url,
        "CREATE FUNCTION hold_commit() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN PERFORM pg_sleep({COMMIT_HELD_S}); RETURN NULL; END $$",
        "CREATE CONSTRAINT TRIGGER hold_commit AFTER INSERT OR UPDATE OR DELETE ON items "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hold_commit()",
    )
    try:
        yield
    finally:
        run_sql(database_url, "DROP TRIGGER hold_commit ON items", "DROP FUNCTION hold_commit()")


def test_each_write_through_one_worker_reaches_the_other_workers_pages(
    server: str, database_url: str
) -> None:
    workers = _one_connection_per_worker(server)
    path = _create(server)
    # Silenced: only the shared table generation can tell the other worker.
    with notify_silenced(database_url):
        for write in _writes(path, "one-worker"):
            _cached_on(workers)
            _write(workers[0], server, write)
            truth = _truth(database_url)
            assert [_read(worker) for worker in workers] == [truth, truth], (
                f"a worker served a stale page after {write[0]} {write[3]}"
            )
    for worker in workers:
        worker.conn.close()


def test_a_page_read_while_a_write_commits_is_not_served_after_its_response(
    server: str, database_url: str
) -> None:
    workers = _one_connection_per_worker(server)
    path = _create(server)
    with notify_silenced(database_url), slow_commits(database_url):
        for write in _writes(path, "commit-window"):
            _cached_on(workers)
            writer, outcome = _write_in_background(server, write)
            time.sleep(COMMIT_HELD_S / 3)
            # While the write's row is written but not committed: each worker reads (and may
            # store) the page without it.
            window = [_read(worker) for worker in workers]
            assert writer.is_alive(), "the reads came after the write's commit"
            writer.join(30)
            assert outcome == [None]
            truth = _truth(database_url)
            assert window != [truth, truth]
            assert [_read(worker) for worker in workers] == [truth, truth], (
                f"a page read before {write[0]} {write[3]} committed was served after it"
            )
    for worker in workers:
        worker.conn.close()


def test_a_write_on_another_instance_reaches_the_pages_within_the_bound(
    server: str, database_url: str, tmp_path: Path
) -> None:
    reader = server
    hits_before = _page_hits(reader)
    workers = _one_connection_per_worker(reader)
    with running_server(
        database_url, log_path=tmp_path / "writer.log", WORKERS="2", RATE_LIMIT="off"
    ) as writer:
        path = _create(writer)
        lags = []
        for write in _writes(path, "other-instance"):
            _cached_on(workers)
            _write(None, writer, write)
            done = time.monotonic()
            truth = _truth(database_url)
            for worker in workers:
                while _read(worker) != truth:
                    assert time.monotonic() - done < CROSS_MACHINE_BOUND_S, (
                        f"a stale page outlived {write[0]} {write[3]} on another instance"
                    )
                    time.sleep(0.001)
            lags.append(time.monotonic() - done)
    for worker in workers:
        worker.conn.close()
    assert _page_hits(reader) > hits_before
