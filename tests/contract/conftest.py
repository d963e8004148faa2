"""One real `python -m app serve` (2 workers) for the contract tests, and what they send it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from app.settings import load_settings
from tests.support import ROOT, running_server

OUTPUT = ROOT / "test-output"

# Rate limiting is off: the fuzzer sends thousands of requests from one address, and a 429
# would hide what it is testing. The 429 responses are still documented and checked by shape.
SERVER_ENV = {"WORKERS": "2", "RATE_LIMIT": "off", "ACCESS_LOG": "false"}


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
def write_token() -> str | None:
    """A bearer token with scope items:write for the server above (None while there is no auth).

    The server runs in development, where tokens are signed with the settings' development key.
    """
    secret = getattr(load_settings(env_file=None), "jwt_secret", None)
    if secret is None:
        return None
    now = int(time.time())
    claims = {"user_id": 1, "scopes": ["items:write"], "iat": now, "exp": now + 3 * 3600}
    return jwt.encode(claims, secret, algorithm="HS256")
