"""One real `python -m app serve` (2 workers) for the contract tests, and what they send it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ROOT, create_user_cli, login, running_server

OUTPUT = ROOT / "test-output"

# Rate limiting is off: the fuzzer sends thousands of requests from one address, and a 429
# would hide what it is testing. The 429 responses are still documented and checked by shape.
# Tokens live 3 h: `make fuzz` runs for ten minutes, after the browser tests.
SERVER_ENV = {
    "WORKERS": "2",
    "RATE_LIMIT": "off",
    "ACCESS_LOG": "false",
    "ACCESS_TOKEN_TTL": "10800",
}
CONTRACT_WRITER = "contract-writer"


@pytest.fixture(scope="package")
def output_dir() -> Path:
    OUTPUT.mkdir(exist_ok=True)
    return OUTPUT


@pytest.fixture(scope="package")
def docs_server(database_url: str, output_dir: Path) -> Iterator[str]:
    with running_server(
        database_url, log_path=output_dir / "contract-server.log", **SERVER_ENV
    ) as base:
        yield base


@pytest.fixture(scope="package")
def openapi_document(docs_server: str) -> dict[str, Any]:
    response = httpx.get(f"{docs_server}/docs/openapi.json", timeout=10)
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


@pytest.fixture(scope="package")
def write_token(database_url: str, docs_server: str) -> str:
    """A bearer token with scope items:write, from a real login of a user that exists, so
    `GET /auth/me` is fuzzed past its 401 too. Made with the CLI and plain HTTP: the browser
    tests may first ask for it while Playwright's event loop runs in this thread."""
    created = create_user_cli(database_url, CONTRACT_WRITER, ["items:write"])
    assert created.returncode == 0, created.stderr
    return login(docs_server, CONTRACT_WRITER)["access_token"]
