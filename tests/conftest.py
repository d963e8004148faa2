"""Session database (real PostgreSQL), per-test app and real-server client."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sanic import Sanic
from sanic_testing.reusable import ReusableClient

from app.auth import users
from app.db.migrate import migrate as migrate_database
from app.db.wiring import orm_session
from app.factory import create_app
from app.settings import Settings, load_settings
from tests.pg_cluster import ThrowawayCluster
from tests.support import (
    READER,
    ROOT,
    TEST_PASSWORD,
    WRITER,
    app_settings,
    create_database,
    drop_database,
    free_port,
    run_sql,
)

# Each test builds its own app under the same name.
Sanic.test_mode = True


@pytest.fixture(scope="session")
def server_url() -> str:
    """A PostgreSQL server: TEST_DATABASE_URL when set, else the embedded one."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        return url
    from app.db import embedded

    return embedded.start(ROOT / ".data" / "test")


@pytest.fixture(scope="module")
def throwaway_cluster() -> Iterator[ThrowawayCluster]:
    """A private PostgreSQL this module may stop and start (outage, drain and alert tests)."""
    cluster = ThrowawayCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A fresh database for this session, built by the real migrations."""
    name = f"items_test_{os.getpid()}"
    url = create_database(server_url, name)
    asyncio.run(migrate_database(load_settings(env_file=None, DATABASE_URL=url)))
    yield url
    drop_database(server_url, name)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return app_settings(database_url)


@pytest.fixture
def clean_db(database_url: str) -> str:
    run_sql(database_url, "TRUNCATE items RESTART IDENTITY")
    return database_url


@pytest.fixture(scope="session")
def auth_tokens(database_url: str) -> dict[str, dict[str, str]]:
    """Login responses of the session's users (WRITER: items:write, READER: items:read).

    The users are created once, in the session database; the tokens come from a real
    `POST /auth`, and any app of the session accepts them (same key, from the settings).
    """

    async def create_users() -> None:
        async with orm_session(app_settings(database_url)) as db:
            await users.create_user(db, WRITER, TEST_PASSWORD, [users.SCOPE_WRITE])
            await users.create_user(db, READER, TEST_PASSWORD, [users.SCOPE_READ])

    asyncio.run(create_users())
    # Tokens valid for the whole session, however long it runs.
    settings = app_settings(database_url, DB_POOL_MAX=2, ACCESS_TOKEN_TTL=86_400)
    tokens = {}
    with ReusableClient(create_app(settings), port=free_port()) as client:
        for username in (WRITER, READER):
            _, resp = client.post("/auth", json={"username": username, "password": TEST_PASSWORD})
            assert resp.status == 200, resp.text
            tokens[username] = resp.json
    return tokens


@pytest.fixture(scope="session")
def write_headers(auth_tokens: dict[str, dict[str, str]]) -> dict[str, str]:
    """`Authorization` for a token with scope items:write."""
    return {"Authorization": f"Bearer {auth_tokens[WRITER]['access_token']}"}


@pytest.fixture(scope="session")
def read_headers(auth_tokens: dict[str, dict[str, str]]) -> dict[str, str]:
    """`Authorization` for a token with scope items:read only."""
    return {"Authorization": f"Bearer {auth_tokens[READER]['access_token']}"}


@pytest.fixture
def client(
    settings: Settings, clean_db: str, write_headers: dict[str, str]
) -> Iterator[ReusableClient]:
    """A real Sanic server on a TCP port (not the ASGI shortcut), over an empty table.

    Every request carries an items:write bearer token; use `anon_client` for none.
    """
    app = create_app(settings)
    with ReusableClient(app, port=free_port(), client_kwargs={"headers": write_headers}) as client:
        yield client


@pytest.fixture
def anon_client(settings: Settings, clean_db: str) -> Iterator[ReusableClient]:
    """Like `client`, with no credentials."""
    app = create_app(settings)
    with ReusableClient(app, port=free_port()) as client:
        yield client


def pytest_configure(config: pytest.Config) -> None:
    Path(ROOT / ".data").mkdir(exist_ok=True)
    del config
