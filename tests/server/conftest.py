"""A real `python -m app serve` with 2 workers, shared by this package's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import run_sql, running_server


@pytest.fixture(scope="package")
def live_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_path = Path(tmp_path_factory.mktemp("server")) / "server.log"
    with running_server(database_url, log_path=log_path, WORKERS="2") as base:
        yield base


@pytest.fixture
def live(live_server: str, database_url: str) -> str:
    """The live server's base URL, over an empty table."""
    run_sql(database_url, "TRUNCATE items RESTART IDENTITY")
    return live_server
