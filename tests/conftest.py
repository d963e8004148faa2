"""Session database (real PostgreSQL), per-test app and real-server client."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sanic import Sanic
from sanic_testing.reusable import ReusableClient

from app import db as app_db
from app.server import create_app
from app.settings import Settings, load_settings
from tests.support import ROOT, create_database, drop_database, free_port, run_sql

# Each test builds its own app under the same name.
Sanic.test_mode = True


@pytest.fixture(scope="session")
def server_url() -> str:
    """A PostgreSQL server: TEST_DATABASE_URL when set, else the embedded one."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        return url
    from app import embedded

    return embedded.start(ROOT / ".data" / "test")


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A fresh database for this session, built by the real migrations."""
    name = f"items_test_{os.getpid()}"
    url = create_database(server_url, name)
    asyncio.run(app_db.migrate(load_settings(env_file=None, DATABASE_URL=url)))
    yield url
    drop_database(server_url, name)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return load_settings(
        env_file=None,
        DATABASE_URL=database_url,
        WORKERS=1,
        DB_POOL_MIN=1,
        DB_POOL_MAX=4,
        ACCESS_LOG=False,
    )


@pytest.fixture
def clean_db(database_url: str) -> str:
    run_sql(database_url, "TRUNCATE items RESTART IDENTITY")
    return database_url


@pytest.fixture
def client(settings: Settings, clean_db: str) -> Iterator[ReusableClient]:
    """A real Sanic server on a TCP port (not the ASGI shortcut), over an empty table."""
    app = create_app(settings)
    with ReusableClient(app, port=free_port()) as client:
        yield client


def pytest_configure(config: pytest.Config) -> None:
    Path(ROOT / ".data").mkdir(exist_ok=True)
    del config
