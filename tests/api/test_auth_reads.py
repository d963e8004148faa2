"""AUTH_REQUIRED_FOR_READS=true: item reads need a token too (its own server: one per process)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sanic_testing.reusable import ReusableClient

from app.factory import create_app
from tests.support import app_settings, free_port


@pytest.fixture(scope="module")
def guarded(database_url: str, auth_tokens: object) -> Iterator[ReusableClient]:
    # `auth_tokens` first: it runs its own app, and Tortoise allows one per process at a time.
    del auth_tokens
    settings = app_settings(database_url, RATE_LIMIT="off", AUTH_REQUIRED_FOR_READS=True)
    with ReusableClient(create_app(settings), port=free_port()) as client:
        yield client


@pytest.mark.parametrize("path", ["/items", "/items/1"])
def test_reads_without_a_token_are_401(guarded: ReusableClient, path: str) -> None:
    _, resp = guarded.get(path)
    assert resp.status == 401
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.headers["www-authenticate"].startswith('Bearer realm="items"')


@pytest.mark.parametrize("who", ["read_headers", "write_headers"])
def test_reads_with_an_items_read_or_write_token_pass(
    guarded: ReusableClient, who: str, request: pytest.FixtureRequest
) -> None:
    headers: dict[str, str] = request.getfixturevalue(who)
    _, resp = guarded.get("/items", headers=headers)
    assert resp.status == 200, resp.text


def test_health_stays_public(guarded: ReusableClient) -> None:
    _, resp = guarded.get("/health")
    assert resp.status == 200
