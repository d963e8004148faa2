"""A real `python -m app serve` with 2 workers, shared by this package's tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.db.migrate import migrate as migrate_database
from app.settings import load_settings
from tests.pg_cluster import ThrowawayCluster
from tests.support import bearer, create_database, create_user_cli, login, run_sql, running_server


@pytest.fixture(scope="package")
def live_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_path = Path(tmp_path_factory.mktemp("server")) / "server.log"
    with running_server(database_url, log_path=log_path, WORKERS="2") as base:
        yield base


@pytest.fixture(scope="module")
def cached_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 2-worker server with the cache on, whose connections stay on the worker they reach
    (one per test module that asks)."""
    log_path = Path(tmp_path_factory.mktemp("cache")) / "server.log"
    with running_server(
        database_url,
        log_path=log_path,
        WORKERS="2",
        RATE_LIMIT="off",
        CONNECTION_BALANCE="false",
        KEEP_ALIVE_TIMEOUT="60",
    ) as base:
        yield base


@pytest.fixture(scope="package")
def live_write_headers(live_server: str, database_url: str) -> dict[str, str]:
    """An items:write bearer token for the live server, the way an operator gets one:
    `python -m app create-user` (password piped on stdin), then `POST /auth`."""
    created = create_user_cli(database_url, "live-writer", ["items:write"])
    assert created.returncode == 0, created.stderr
    return bearer(login(live_server, "live-writer")["access_token"])


@pytest.fixture
def live(live_server: str, database_url: str) -> str:
    """The live server's base URL, over an empty table."""
    run_sql(database_url, "TRUNCATE items RESTART IDENTITY")
    return live_server


@pytest.fixture(scope="module")
def throwaway_db(throwaway_cluster: ThrowawayCluster) -> str:
    """A migrated database on the throwaway cluster."""
    url = create_database(throwaway_cluster.url, "items")
    asyncio.run(migrate_database(load_settings(env_file=None, DATABASE_URL=url)))
    return url
