"""Rate limits through a real (single-process) server: 429s, headers, exemptions, keys."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest
from sanic_testing.reusable import ReusableClient
from sanic_testing.testing import TestingResponse as Response

from app.factory import create_app
from app.settings import load_settings
from tests.api.items.helpers import assert_problem
from tests.support import free_port
from tests.tokens import token_headers

LIMIT = 5
_addresses = (f"198.51.100.{n}" for n in itertools.count(1))


@pytest.fixture(scope="module")
def limited(database_url: str) -> Iterator[ReusableClient]:
    """A server allowing 5 requests a minute per client, behind a trusted proxy (this host)."""
    settings = load_settings(
        env_file=None,
        DATABASE_URL=database_url,
        WORKERS=1,
        DB_POOL_MIN=1,
        DB_POOL_MAX=4,
        ACCESS_LOG=False,
        RATE_LIMIT=f"{LIMIT}/minute",
        RATE_LIMIT_AUTH="2/minute",
        TRUSTED_PROXIES="127.0.0.1",
    )
    with ReusableClient(create_app(settings), port=free_port()) as client:
        yield client


@pytest.fixture
def client_ip() -> str:
    """A client address of its own for each test, sent as X-Forwarded-For by the proxy."""
    # Counts are per minute window: never start a test in a window's last seconds.
    left = 60 - time.time() % 60
    if left < 5:
        time.sleep(left + 0.05)
    return next(_addresses)


def _get(client: ReusableClient, ip: str, path: str = "/items", **headers: str) -> Response:
    _, resp = client.get(path, headers={"X-Forwarded-For": ip, **headers})
    return resp


def test_the_request_over_the_limit_gets_429_with_retry_after(
    limited: ReusableClient, client_ip: str
) -> None:
    remaining = []
    for _ in range(LIMIT):
        resp = _get(limited, client_ip)
        assert resp.status == 200
        remaining.append(int(resp.headers["ratelimit-remaining"]))
    assert remaining == [4, 3, 2, 1, 0]

    resp = _get(limited, client_ip)
    body = assert_problem(resp, 429)
    assert body["type"] == "/problems/rate-limited"
    headers = resp.headers
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["ratelimit-limit"] == str(LIMIT)
    assert headers["ratelimit-remaining"] == "0"
    assert headers["ratelimit-reset"] == headers["retry-after"]
    assert headers["ratelimit-policy"] == f"{LIMIT};w=60"
    assert len(headers.get_list("ratelimit-remaining")) == 1


def test_every_answer_counted_carries_its_count_errors_included(
    limited: ReusableClient, client_ip: str
) -> None:
    # The headers are decided before the handler runs and added to whatever answer follows:
    # a success, an error of the handler, or one of the router.
    answers = [
        _get(limited, client_ip, "/items"),
        _get(limited, client_ip, "/items/2147483000"),
        _get(limited, client_ip, "/items?limit=nope"),
        _get(limited, client_ip, "/items/1/nowhere"),
    ]
    assert [resp.status for resp in answers] == [200, 404, 400, 404]
    assert [resp.headers["ratelimit-remaining"] for resp in answers] == ["4", "3", "2", "1"]
    for resp in answers:
        assert resp.headers["ratelimit-limit"] == str(LIMIT)
        assert resp.headers["ratelimit-policy"] == f"{LIMIT};w=60"
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert len(resp.headers.get_list("ratelimit-remaining")) == 1


def test_probes_are_never_limited(limited: ReusableClient, client_ip: str) -> None:
    for _ in range(LIMIT + 1):
        _get(limited, client_ip)
    for path in ("/health", "/health/ready"):
        resp = _get(limited, client_ip, path)
        assert resp.status == 200, path
        assert "ratelimit-limit" not in resp.headers


def test_clients_behind_a_trusted_proxy_are_counted_apart(
    limited: ReusableClient, client_ip: str
) -> None:
    for _ in range(LIMIT + 1):
        _get(limited, client_ip)
    assert _get(limited, client_ip).status == 429
    other = next(_addresses)
    assert _get(limited, other).status == 200


def test_a_token_subject_has_a_limit_of_its_own(limited: ReusableClient, client_ip: str) -> None:
    for _ in range(LIMIT + 1):
        _get(limited, client_ip)
    token = token_headers(user_id=4242)
    statuses = [_get(limited, client_ip, **token).status for _ in range(LIMIT + 1)]
    assert statuses == [200] * LIMIT + [429]


def test_an_invalid_token_counts_as_the_client_address(
    limited: ReusableClient, client_ip: str
) -> None:
    for _ in range(LIMIT + 1):
        _get(limited, client_ip)
    resp = _get(limited, client_ip, Authorization="Bearer not-a-token")
    assert resp.status == 429


def test_login_has_its_own_stricter_limit(limited: ReusableClient, client_ip: str) -> None:
    statuses = []
    for _ in range(3):
        _, resp = limited.post(
            "/auth",
            json={"username": "nobody", "password": "wrong-password"},
            headers={"X-Forwarded-For": client_ip},
        )
        statuses.append(resp.status)
    assert 429 not in statuses[:2]
    assert statuses[2] == 429


def test_off_means_no_limit_and_no_headers(database_url: str) -> None:
    settings = load_settings(
        env_file=None, DATABASE_URL=database_url, WORKERS=1, ACCESS_LOG=False, RATE_LIMIT="off"
    )
    with ReusableClient(create_app(settings), port=free_port()) as client:
        for _ in range(3):
            _, resp = client.get("/items")
            assert resp.status == 200
            assert "ratelimit-limit" not in resp.headers
