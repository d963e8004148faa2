"""Which limit applies follows the route that serves a request, on a real 2-worker server.

Every spelling of a path that Sanic's router sends to the login handler must count against
the login limits; spellings it does not route are 404s under the general limit, and only
routes (never path prefixes) are exempt. Logins are also counted per username, over every
client address. Each test uses addresses (sent through the trusted proxy header) and
usernames of its own, and hour-long windows, so tests cannot spend each other's counts.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import RawResponse, raw_request, server_process

LOGIN_LIMIT = 3
USER_LIMIT = 5
GENERAL = "1000;w=3600"
LOGIN_POLICY = f"{LOGIN_LIMIT};w=3600"
USER_POLICY = f"{USER_LIMIT};w=3600"

_addresses = (f"198.51.100.{n}" for n in itertools.count(1))
_usernames = (f"guessed-{n}" for n in itertools.count(1))


@pytest.fixture(scope="module")
def port(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    left = 3600 - time.time() % 3600
    if left < 60:  # never straddle the hour: counts here are per hour window
        time.sleep(left + 0.1)
    log_path = Path(tmp_path_factory.mktemp("ratelimit-routes")) / "server.log"
    with server_process(
        database_url,
        log_path=log_path,
        WORKERS="2",
        RATE_LIMIT="1000/hour",
        RATE_LIMIT_AUTH=f"{LOGIN_LIMIT}/hour",
        RATE_LIMIT_AUTH_USER=f"{USER_LIMIT}/hour",
        TRUSTED_PROXIES="127.0.0.1",
    ) as server:
        yield server.port


def _login(
    port: int, target: str, address: str, username: str | None = None, body: bytes | None = None
) -> RawResponse:
    """A login with a wrong password; a username of its own unless one is given."""
    credentials = {"username": username or next(_usernames), "password": "not the password"}
    sent = body if body is not None else json.dumps(credentials).encode()
    return raw_request(
        port,
        "POST",
        target,
        sent,
        {"Content-Type": "application/json", "X-Forwarded-For": address},
    )


def _served_by_login(response: RawResponse) -> bool:
    """The login handler answered: a wrong password is its 401, with its problem body."""
    return response.status == 401 and b"Wrong username or password" in response.body


# Spellings Sanic's router gives to the login route (trailing slashes, a query, a fragment,
# the absolute form of the target): each must be under the login limit.
LOGIN_SPELLINGS = ["/auth", "/auth/", "/auth//", "/auth///", "/auth?next=/items", "/auth#x"]
# Spellings it routes nowhere: 404s, under the general limit, never a way to the handler.
OTHER_SPELLINGS = ["//auth", "///auth", "/AUTH", "/Auth", "/%61uth", "/./auth", "/x/../auth"]
OTHER_SPELLINGS += ["/auth%2F", "/auth;x", "/auth/.", "/auth%20", "/auth/%2e"]


@pytest.mark.parametrize("target", [*LOGIN_SPELLINGS, "absolute-form"])
def test_every_spelling_of_the_login_route_is_under_the_login_limit(port: int, target: str) -> None:
    if target == "absolute-form":
        target = f"http://127.0.0.1:{port}/auth"
    address = next(_addresses)
    answers = [_login(port, target, address) for _ in range(LOGIN_LIMIT + 1)]
    assert all(_served_by_login(answer) for answer in answers[:LOGIN_LIMIT]), [
        (answer.status, answer.body[:80]) for answer in answers
    ]
    assert [answer.headers.get("ratelimit-policy") for answer in answers[:LOGIN_LIMIT]] == [
        LOGIN_POLICY
    ] * LOGIN_LIMIT
    refused = answers[-1]
    assert refused.status == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["retry-after"]) >= 1


@pytest.mark.parametrize("target", OTHER_SPELLINGS)
def test_spellings_the_router_does_not_serve_never_reach_the_login_handler(
    port: int, target: str
) -> None:
    answer = _login(port, target, next(_addresses))
    assert not _served_by_login(answer)
    assert answer.status in (400, 404, 405), (answer.status, answer.body[:200])
    assert answer.headers.get("ratelimit-policy") == GENERAL


def test_one_address_spelling_login_differently_shares_one_count(port: int) -> None:
    address = next(_addresses)
    statuses = [_login(port, target, address).status for target in LOGIN_SPELLINGS]
    assert statuses == [401] * LOGIN_LIMIT + [429] * (len(LOGIN_SPELLINGS) - LOGIN_LIMIT)


def test_logins_for_one_username_are_limited_over_every_address(port: int) -> None:
    victim = next(_usernames)
    answers = [_login(port, "/auth", next(_addresses), victim) for _ in range(USER_LIMIT + 1)]
    assert [answer.status for answer in answers] == [401] * USER_LIMIT + [429]
    # The stricter of the two counts is the one each answer reports.
    assert answers[0].headers["ratelimit-policy"] == LOGIN_POLICY
    assert answers[-2].headers["ratelimit-policy"] == USER_POLICY
    assert answers[-2].headers["ratelimit-remaining"] == "0"
    refused = answers[-1]
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["ratelimit-policy"] == USER_POLICY
    assert int(refused.headers["retry-after"]) >= 1
    # Other usernames, and the trailing-slash spelling for the victim, are judged the same.
    assert _login(port, "/auth", next(_addresses), next(_usernames)).status == 401
    assert _login(port, "/auth/", next(_addresses), victim).status == 429


def test_an_address_refused_spends_none_of_the_usernames_count(port: int) -> None:
    victim, address = next(_usernames), next(_addresses)
    statuses = [_login(port, "/auth", address, victim).status for _ in range(USER_LIMIT + 2)]
    assert statuses == [401] * LOGIN_LIMIT + [429] * (USER_LIMIT + 2 - LOGIN_LIMIT)
    # The username used LOGIN_LIMIT of its USER_LIMIT attempts: others can still try it.
    others = [_login(port, "/auth", next(_addresses), victim).status for _ in range(3)]
    assert others == [401] * (USER_LIMIT - LOGIN_LIMIT) + [429]


@pytest.mark.parametrize(
    "body",
    [
        b'{"username": "VICTIM", "password": ',  # malformed JSON
        b"",
        b'["VICTIM", "a password"]',
        b'{"username": ["VICTIM"], "password": "x"}',
        b'{"username": "' + b"v" * 10_000 + b'", "password": "x"}',
        b'{"username": "VICTIM\\u0000", "password": "x"}',
    ],
)
def test_a_login_body_the_handler_refuses_is_answered_and_not_counted_per_username(
    port: int, body: bytes
) -> None:
    victim = next(_usernames)
    answer = _login(port, "/auth", next(_addresses), body=body.replace(b"VICTIM", victim.encode()))
    assert 400 <= answer.status < 500, (answer.status, answer.body[:200])
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["ratelimit-policy"] == LOGIN_POLICY
    # None of the username's attempts were spent: it still has all of them.
    statuses = [_login(port, "/auth", next(_addresses), victim).status for _ in range(USER_LIMIT)]
    assert statuses == [401] * USER_LIMIT


@pytest.mark.parametrize("target", ["/health", "/health/", "/health/ready", "/metrics/", "/docs"])
def test_exempt_routes_in_any_spelling_carry_no_limit(port: int, target: str) -> None:
    answer = raw_request(port, "GET", target, headers={"X-Forwarded-For": next(_addresses)})
    assert answer.status == 200, (target, answer.status)
    assert "ratelimit-policy" not in answer.headers


@pytest.mark.parametrize("target", ["/healthz", "/health%2Fready", "/metricsX", "/docs-nope"])
def test_unmatched_paths_under_an_exempt_prefix_are_limited(port: int, target: str) -> None:
    answer = raw_request(port, "GET", target, headers={"X-Forwarded-For": next(_addresses)})
    assert answer.status == 404
    assert answer.headers.get("ratelimit-policy") == GENERAL
