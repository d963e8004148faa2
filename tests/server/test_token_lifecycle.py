"""The token lifecycle across real servers: rotation, replay, and revocation within a second.

Two `python -m app serve` instances (two "machines", 2 workers each) share the session
database; users are changed through the CLI, the way an operator does it.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.auth.token_cache import MAX_AGE
from tests.pg_cluster import ThrowawayCluster
from tests.support import (
    ROOT,
    TEST_PASSWORD,
    bearer,
    create_user_cli,
    free_port,
    login,
    run_sql,
    running_server,
    server_env,
)

log = logging.getLogger(__name__)

ITEM = {"name": "lifecycle", "price": 1}
# The documented bound (README, "Tokens"): a change is in force on every worker this long
# after it is committed. Requests sent later than this after the CLI returned must all fail.
BOUND = MAX_AGE
RACERS = 8


@pytest.fixture(scope="module")
def machines(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Two instances on one database, rate limits off (this module logs in often)."""
    folder = Path(tmp_path_factory.mktemp("lifecycle"))
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                running_server(
                    database_url,
                    log_path=folder / f"server-{n}.log",
                    WORKERS="2",
                    DB_POOL_MAX="4",  # a small share of a database other tests use too
                    RATE_LIMIT="off",
                )
            )
            for n in range(2)
        ]


def _user(database_url: str, username: str, scopes: tuple[str, ...] = ("items:write",)) -> None:
    created = create_user_cli(database_url, username, list(scopes))
    assert created.returncode == 0, created.stderr


def _cli(database_url: str, *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=server_env(database_url, free_port()),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def _refresh(base: str, tokens: dict[str, Any], refresh_token: str | None = None) -> httpx.Response:
    return httpx.post(
        f"{base}/auth/refresh",
        json={"refresh_token": refresh_token or tokens["refresh_token"]},
        headers=bearer(tokens["access_token"]),
        timeout=10,
    )


def _writes_until_refused(base: str, token: str, since: float) -> tuple[float, list[str]]:
    """Write with `token` (a new connection each time, so both workers answer) until one
    write is refused and BOUND has passed; returns when the first refusal was seen (seconds
    after `since`) and what any request sent later than BOUND after `since` got."""
    first_refused: float | None = None
    late_successes = []
    with httpx.Client(base_url=base, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        while True:
            sent = time.monotonic() - since
            response = client.post("/items", json=ITEM, headers=bearer(token))
            if response.status_code in (401, 503):
                if first_refused is None:
                    first_refused = sent
            elif sent > BOUND:
                late_successes.append(f"{sent:.3f} s: {response.status_code} {response.text}")
            if first_refused is not None and sent > BOUND + 0.5:
                return first_refused, late_successes
            assert sent < 30, "the token was never refused"
            time.sleep(0.01)


def test_a_disabled_user_is_refused_on_every_machine_within_the_bound(
    machines: list[str], database_url: str
) -> None:
    first, second = machines
    _user(database_url, "lifecycle-disabled")
    token = login(first, "lifecycle-disabled")["access_token"]
    for base in machines:
        assert httpx.post(f"{base}/items", json=ITEM, headers=bearer(token)).status_code == 201

    # Plain SQL, as an operator might: the trigger on `users` revokes the tokens all the same.
    run_sql(
        database_url, "UPDATE users SET is_active = false WHERE username = 'lifecycle-disabled'"
    )
    disabled_at = time.monotonic()
    seen, late = _writes_until_refused(second, token, disabled_at)
    assert late == []
    refused = httpx.post(f"{second}/items", json=ITEM, headers=bearer(token))
    assert refused.status_code == 401, refused.text
    assert "revoked" in refused.json()["detail"]
    assert httpx.post(f"{first}/items", json=ITEM, headers=bearer(token)).status_code == 401
    assert (
        httpx.post(
            f"{second}/auth", json={"username": "lifecycle-disabled", "password": TEST_PASSWORD}
        ).status_code
        == 401
    )
    log.info("disabled user: first refusal on the other machine %.3f s after the commit", seen)

    _cli(database_url, "enable-user", "lifecycle-disabled")
    # Enabling does not revive the old token: it was issued before the change.
    time.sleep(BOUND + 0.2)
    assert httpx.post(f"{second}/items", json=ITEM, headers=bearer(token)).status_code == 401
    fresh = login(second, "lifecycle-disabled")["access_token"]
    assert httpx.post(f"{first}/items", json=ITEM, headers=bearer(fresh)).status_code == 201


def test_revoked_tokens_and_lowered_scopes_stop_working_on_every_machine(
    machines: list[str], database_url: str
) -> None:
    first, second = machines
    _user(database_url, "lifecycle-revoked")
    revoked = login(first, "lifecycle-revoked")
    _cli(database_url, "revoke-tokens", "lifecycle-revoked")
    seen, late = _writes_until_refused(second, revoked["access_token"], time.monotonic())
    assert late == []
    assert _refresh(second, revoked).status_code == 401
    log.info("revoke-tokens: first refusal on the other machine %.3f s after the CLI", seen)

    _user(database_url, "lifecycle-lowered")
    tokens = login(first, "lifecycle-lowered")
    _cli(database_url, "set-scopes", "lifecycle-lowered", "--scopes", "items:read")
    seen, late = _writes_until_refused(second, tokens["access_token"], time.monotonic())
    assert late == []
    # The refresh token still works, and its access token carries the lowered scope: 403.
    refreshed = _refresh(second, tokens)
    assert refreshed.status_code == 200, refreshed.text
    write = httpx.post(
        f"{first}/items", json=ITEM, headers=bearer(refreshed.json()["access_token"])
    )
    assert write.status_code == 403, write.text
    log.info("set-scopes: first refusal on the other machine %.3f s after the CLI", seen)


def test_a_replayed_refresh_token_revokes_its_login_on_every_machine(
    machines: list[str], database_url: str
) -> None:
    first, second = machines
    _user(database_url, "lifecycle-replay")
    tokens = login(first, "lifecycle-replay")
    other_login = login(first, "lifecycle-replay")

    rotated = _refresh(first, tokens)
    assert rotated.status_code == 200, rotated.text
    successor = rotated.json()
    assert successor["refresh_token"] != tokens["refresh_token"]
    again = _refresh(second, successor)  # the successor rotates on the other machine
    assert again.status_code == 200, again.text
    newest = again.json()

    replay = _refresh(second, tokens)  # the first token, a second time
    assert replay.status_code == 401
    assert "already used" in replay.json()["detail"]
    # Its whole login is gone, on both machines; another login of the same user is not.
    assert _refresh(first, newest).status_code == 401
    assert _refresh(second, other_login).status_code == 200


async def _race(base: str, tokens: dict[str, Any]) -> list[int]:
    async def one() -> int:
        # A client of its own each: a connection each, spread over both workers.
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            response = await client.post(
                "/auth/refresh",
                json={"refresh_token": tokens["refresh_token"]},
                headers=bearer(tokens["access_token"]),
            )
            return response.status_code

    return list(await asyncio.gather(*(one() for _ in range(RACERS))))


def test_concurrent_refreshes_with_one_token_exactly_one_wins(
    machines: list[str], database_url: str
) -> None:
    _user(database_url, "lifecycle-racer")
    for round_ in range(5):
        tokens = login(machines[0], "lifecycle-racer")
        statuses = asyncio.run(_race(machines[round_ % 2], tokens))
        assert sorted(statuses) == [200] + [401] * (RACERS - 1), statuses


def test_a_worker_that_cannot_poll_answers_bearer_requests_503(
    throwaway_cluster: ThrowawayCluster, throwaway_db: str, tmp_path: Path
) -> None:
    """Fail closed: with the database down, a token is neither accepted nor called invalid."""
    _user(throwaway_db, "lifecycle-outage")
    with running_server(
        throwaway_db,
        log_path=tmp_path / "server.log",
        WORKERS="2",
        DB_POOL_MAX="4",
        RATE_LIMIT="off",
    ) as base:
        token = login(base, "lifecycle-outage")["access_token"]
        # /auth/verify checks the token alone: no other query that could fail instead.
        assert httpx.get(f"{base}/auth/verify", headers=bearer(token)).status_code == 200
        throwaway_cluster.stop("fast")
        try:
            time.sleep(BOUND + 0.5)
            for _ in range(6):  # new connections: both workers
                verify = httpx.get(
                    f"{base}/auth/verify", headers={**bearer(token), "Connection": "close"}
                )
                assert verify.status_code == 503, verify.text
                assert int(verify.headers["retry-after"]) > 0
            assert httpx.get(f"{base}/health").status_code == 200
        finally:
            throwaway_cluster.start()
        deadline = time.monotonic() + 15
        while httpx.get(f"{base}/auth/verify", headers=bearer(token)).status_code != 200:
            assert time.monotonic() < deadline, "polls did not recover"
            time.sleep(0.1)
