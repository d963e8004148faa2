"""With every pool connection taken, auth and idempotent writes answer 503 fast, then recover.

The app gets a pool of one connection, and the test holds it (acquired on the server's own
event loop), as a burst of slow requests or a wedged database would: through the app's
`Database`, which takes its one turn, so requests queue for the turn; or straight from the pool,
around the turns (as a connection opened by hand would be), which leaves the turn free and the
connection not. Either way requests that need a connection, the ORM's included (app/db/orm.py),
must give up after DB_ACQUIRE_TIMEOUT instead of waiting without bound.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sanic_testing.reusable import ReusableClient
from sanic_testing.testing import TestingResponse as Response

from app.auth import users
from app.db.wiring import orm_session
from app.factory import create_app
from app.settings import load_settings
from tests.support import TEST_PASSWORD, app_settings, bearer, free_port
from tests.tokens import token_headers

USERNAME = "pool-exhausted"
ACQUIRE_TIMEOUT = 0.2
# Far below "forever", far above the acquire timeout plus one password hash.
FAST = 3.0


@pytest.fixture(scope="module")
def account(database_url: str) -> None:
    async def create() -> None:
        async with orm_session(app_settings(database_url)) as db:
            await users.create_user(db, USERNAME, TEST_PASSWORD, [users.SCOPE_WRITE])

    asyncio.run(create())


@pytest.fixture
def one_connection(
    database_url: str, account: None
) -> Iterator[tuple[ReusableClient, asyncio.AbstractEventLoop, Any]]:
    """A server whose pool holds exactly one connection, and the loop it runs on."""
    del account
    settings = load_settings(
        env_file=None,
        DATABASE_URL=database_url,
        WORKERS=1,
        DB_POOL_MIN=1,
        DB_POOL_MAX=1,
        DB_ACQUIRE_TIMEOUT=ACQUIRE_TIMEOUT,
        ACCESS_LOG=False,
        RATE_LIMIT="off",
        CACHE_ENABLED=False,
    )
    app = create_app(settings)
    loop = asyncio.new_event_loop()
    try:
        with ReusableClient(app, port=free_port(), loop=loop) as client:
            yield client, loop, app
    finally:
        loop.close()


def _timed(client: ReusableClient, method: str, path: str, **kwargs: Any) -> tuple[Response, float]:
    started = time.monotonic()
    _, response = getattr(client, method)(path, **kwargs)
    return response, time.monotonic() - started


@pytest.mark.parametrize("holder", ["a request's turn", "a connection outside the turns"])
def test_auth_and_idempotent_writes_answer_503_fast_while_the_pool_is_exhausted(
    one_connection: tuple[ReusableClient, asyncio.AbstractEventLoop, Any], holder: str
) -> None:
    client, loop, app = one_connection
    db = app.ctx.db
    credentials = {"username": USERNAME, "password": TEST_PASSWORD}
    _, login = client.post("/auth", json=credentials)
    assert login.status == 200, login.text
    tokens = login.json
    access = bearer(tokens["access_token"])
    refresh = {"refresh_token": tokens["refresh_token"]}

    by_turn = holder == "a request's turn"
    held = loop.run_until_complete(db.acquire() if by_turn else db.pool.acquire())
    assert db.queue.free == (0 if by_turn else 1)
    try:
        requests: list[tuple[str, str, dict[str, Any]]] = [
            ("post", "/auth", {"json": credentials}),
            ("post", "/auth/refresh", {"json": refresh, "headers": access}),
            ("get", "/auth/me", {"headers": access}),
            ("post", "/auth/logout", {"json": refresh}),
            (
                "post",
                "/items",
                {
                    "json": {"name": "once", "price": 1},
                    "headers": {**token_headers(1), "Idempotency-Key": str(uuid.uuid4())},
                },
            ),
        ]
        for method, path, kwargs in requests:
            response, seconds = _timed(client, method, path, **kwargs)
            assert response.status == 503, (path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert int(response.headers["retry-after"]) > 0
            assert seconds < FAST, (path, seconds)
    finally:
        loop.run_until_complete(db.release(held) if by_turn else db.pool.release(held))

    # The connection is back: the same requests are served again, no restart needed.
    _, again = client.post("/auth", json=credentials)
    assert again.status == 200, again.text
    _, me = client.get("/auth/me", headers=access)
    assert me.status == 200, me.text
    assert me.json["me"]["username"] == USERNAME
