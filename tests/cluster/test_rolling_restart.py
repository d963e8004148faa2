"""Rolling restart under load: A gets SIGTERM, comes back, then B; no client sees a failure."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.cluster.conftest import line_count, nginx_upstreams
from tests.support import fetch_sql

log = logging.getLogger(__name__)

pytestmark = pytest.mark.cluster

CLIENTS = 16
SEED_ITEMS = 20
# Load before the first SIGTERM and after the last instance is back, in seconds.
STEADY_S = 1.5
# Each client cycles through this mix: reads, list pages, keyed creates, full replaces.
MIX = ("get", "get", "list", "create", "get", "put", "get", "list", "create", "get")
EXPECTED = {"get": 200, "list": 200, "create": 201, "put": 200}


@dataclass(frozen=True, slots=True)
class Outcome:
    at: float
    kind: str
    status: int | str  # the HTTP status, or the exception's name

    @property
    def ok(self) -> bool:
        return self.status == EXPECTED[self.kind]


def test_rolling_restart_under_load_fails_no_request(
    cluster: Any, writer: dict[str, str], cluster_db: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    with httpx.Client(base_url=cluster.base, headers=writer, timeout=10) as api:
        seeds = []
        for n in range(SEED_ITEMS):
            made = api.post("/items", json={"name": f"seed-{tag}-{n}", "price": n})
            assert made.status_code == 201
            seeds.append(made.json()["id"])
    first_line = line_count(cluster.nginx_access_log)
    acknowledged: dict[str, int] = {}  # Idempotency-Key -> id, for every 201
    events: list[tuple[float, str]] = []
    started = time.monotonic()

    def note(event: str) -> None:
        events.append((time.monotonic() - started, event))

    async def client_loop(n: int, stop: asyncio.Event) -> list[Outcome]:
        outcomes = []
        rng = random.Random(n)  # noqa: S311 (load shape, not security)
        async with httpx.AsyncClient(base_url=cluster.base, timeout=30) as client:
            step = 0
            while not stop.is_set():
                kind = MIX[(n + step) % len(MIX)]
                step += 1
                try:
                    if kind == "get":
                        resp = await client.get(f"/items/{rng.choice(seeds)}")
                    elif kind == "list":
                        resp = await client.get("/items?limit=10&sort=-id")
                    elif kind == "put":
                        resp = await client.put(
                            f"/items/{rng.choice(seeds)}",
                            json={"name": f"seed-{tag}-put-{n}-{step}", "price": step},
                            headers=writer,
                        )
                    else:
                        key = f"{tag}-{n}-{step}"
                        resp = await client.post(
                            "/items",
                            json={"name": f"load-{tag}-{n}-{step}", "price": step},
                            headers={**writer, "Idempotency-Key": key},
                        )
                        if resp.status_code == 201:
                            acknowledged[key] = resp.json()["id"]
                    status: int | str = resp.status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                outcomes.append(Outcome(time.monotonic() - started, kind, status))
        return outcomes

    async def scenario() -> tuple[list[Outcome], list[int]]:
        stop = asyncio.Event()
        clients = [asyncio.create_task(client_loop(n, stop)) for n in range(CLIENTS)]
        note("load: 16 clients start")
        await asyncio.sleep(STEADY_S)
        codes = await asyncio.to_thread(cluster.rolling_restart, note)
        await asyncio.sleep(STEADY_S)
        stop.set()
        note("load: stop")
        results = await asyncio.gather(*clients)
        return [o for outcomes in results for o in outcomes], codes

    outcomes, exit_codes = asyncio.run(scenario())

    failed = [o for o in outcomes if not o.ok]
    by_kind = {
        kind: (
            sum(o.kind == kind for o in outcomes),
            sum(o.kind == kind and o.ok for o in outcomes),
        )
        for kind in EXPECTED
    }
    routed = nginx_upstreams(cluster.nginx_access_log, first_line)
    stored = {
        row["id"]
        for row in fetch_sql(cluster_db, "SELECT id FROM items WHERE name LIKE $1", f"load-{tag}-%")
    }
    log.info(
        "rolling restart: sent %d, succeeded %d, failed %d %s; by kind (sent, ok) %s; "
        "nginx routed %s; exit codes %s; acknowledged creates %d, stored %d",
        len(outcomes),
        len(outcomes) - len(failed),
        len(failed),
        dict(Counter((o.kind, o.status) for o in failed)),
        by_kind,
        {m.name: routed[m.upstream] for m in cluster.members} | {"retried": routed["retried"]},
        exit_codes,
        len(acknowledged),
        len(stored),
    )
    for at, event in events:
        window = [o for o in outcomes if at - 0.5 <= o.at < at + 0.5]
        log.info(
            "  t=%6.2f s  %-28s requests in +-0.5 s: %d, failed %d",
            at,
            event,
            len(window),
            sum(not o.ok for o in window),
        )
    assert failed == []
    assert exit_codes == [0] * len(cluster.members)
    # Every acknowledged write is there, and no retry made a second item.
    assert set(acknowledged.values()) == stored
    assert by_kind["create"][0] == len(stored)
    # The load really spanned the restarts, on both instances.
    assert all(routed[m.upstream] > 0 for m in cluster.members)
    assert events[-1][0] - events[0][0] > 2 * STEADY_S
