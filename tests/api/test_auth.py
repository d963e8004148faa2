"""Login, refresh, logout and the scope checks on item writes, through a real server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import jwt
import pytest
from sanic_testing.reusable import ReusableClient
from sanic_testing.testing import TestingResponse as Response

from app.auth import users
from app.auth.token_cache import MAX_AGE
from app.db.wiring import orm_session
from app.factory import create_app
from app.settings import load_settings
from tests.support import (
    ROOT,
    TEST_PASSWORD,
    app_settings,
    bearer,
    create_user_cli,
    free_port,
    run_sql,
)

WRITER, READER, DISABLED = "auth-writer", "auth-reader", "auth-disabled"
ITEM = {"name": "Widget", "price": 9.99}


def _settings(database_url: str, **extra: Any) -> Any:
    return app_settings(
        database_url,
        RATE_LIMIT="off",
        **extra,
    )


@pytest.fixture(scope="module")
def accounts(database_url: str) -> None:
    async def create() -> None:
        async with orm_session(app_settings(database_url)) as db:
            await users.create_user(db, WRITER, TEST_PASSWORD, [users.SCOPE_WRITE])
            await users.create_user(db, READER, TEST_PASSWORD, [users.SCOPE_READ])
            await users.create_user(db, DISABLED, TEST_PASSWORD, [users.SCOPE_WRITE])
            await users.set_active(db, DISABLED, active=False)

    asyncio.run(create())


@pytest.fixture(scope="module")
def api(database_url: str, accounts: None) -> Iterator[ReusableClient]:
    """One server for the module, with no default credentials."""
    del accounts
    with ReusableClient(create_app(_settings(database_url)), port=free_port()) as client:
        yield client


def _login(api: ReusableClient, username: str, password: str = TEST_PASSWORD) -> Response:
    _, resp = api.post("/auth", json={"username": username, "password": password})
    return resp


def _tokens(api: ReusableClient, username: str) -> dict[str, Any]:
    resp = _login(api, username)
    assert resp.status == 200, resp.text
    tokens: dict[str, Any] = resp.json
    return tokens


def _problem(resp: Response, status: int) -> dict[str, Any]:
    assert resp.status == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = resp.json
    assert body["status"] == status
    return body


def _challenge(resp: Response) -> str:
    challenge: str = resp.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="items"'), challenge
    return challenge


def test_login_gives_bearer_tokens_that_no_cache_keeps(api: ReusableClient) -> None:
    resp = _login(api, WRITER)
    assert resp.status == 200
    assert set(resp.json) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert resp.json["token_type"] == "Bearer"
    assert resp.json["expires_in"] == 900
    assert resp.headers["cache-control"] == "no-store"
    claims = jwt.decode(resp.json["access_token"], options={"verify_signature": False})
    assert claims["scopes"] == ["items:write"]
    assert claims["exp"] - claims["iat"] == 900


@pytest.mark.parametrize(
    ("username", "password"),
    [
        (WRITER, "wrong password, long enough"),
        ("nobody-here", TEST_PASSWORD),
        (DISABLED, TEST_PASSWORD),
    ],
    ids=["wrong-password", "unknown-user", "disabled-user"],
)
def test_login_failures_all_look_the_same(
    api: ReusableClient, username: str, password: str
) -> None:
    resp = _login(api, username, password)
    body = _problem(resp, 401)
    assert body["detail"] == "Wrong username or password, or the account is disabled."
    assert _challenge(resp) == 'Bearer realm="items"'
    assert resp.headers["cache-control"] == "no-store"


def test_unknown_users_cost_a_password_hash_too(
    database_url: str, accounts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    del accounts
    verified: list[str] = []
    real_verify = users._verify
    monkeypatch.setattr(users, "_verify", lambda h, p: verified.append(h) or real_verify(h, p))

    async def attempt(username: str) -> users.User | None:
        async with orm_session(app_settings(database_url)) as db:
            return await users.authenticate(db, username, TEST_PASSWORD)

    assert asyncio.run(attempt("nobody-here")) is None
    assert asyncio.run(attempt(DISABLED)) is None
    assert len(verified) == 2
    assert all(h.startswith("$argon2id$") for h in verified)


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", b'{"username": "a"}', b'{"username": 1, "password": "x"}']
)
def test_login_without_a_proper_body_is_400(api: ReusableClient, body: bytes) -> None:
    _, resp = api.post("/auth", content=body, headers={"content-type": "application/json"})
    _problem(resp, 400)


@pytest.mark.parametrize("path", ["/auth", "/auth/logout"])
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_an_auth_body_not_sent_as_json_is_415(
    api: ReusableClient, path: str, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    body = b'{"username": "a", "password": "b", "refresh_token": "c"}'
    _, resp = api.post(path, content=body, headers=headers)
    _problem(resp, 415)


def test_write_with_an_items_write_token_succeeds(api: ReusableClient) -> None:
    token = _tokens(api, WRITER)["access_token"]
    _, resp = api.post("/items", json=ITEM, headers=bearer(token))
    assert resp.status == 201, resp.text


def _expired_token() -> str:
    now = int(time.time())
    settings = load_settings(env_file=None)
    claims = {"user_id": 1, "scopes": ["items:write"], "iat": now - 7200, "exp": now - 3600}
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, None),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "invalid_request"),
        ({"Authorization": "Bearer"}, "invalid_request"),
        ({"Authorization": "Bearer not-a-jwt"}, "invalid_token"),
        (
            bearer(
                jwt.encode(
                    {"user_id": 1, "scopes": ["items:write"], "iat": 1, "exp": 4102444800},
                    "someone-elses-key-that-is-32-bytes!",
                    algorithm="HS256",
                )
            ),
            "invalid_token",
        ),
        (
            bearer(
                "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."
                "eyJ1c2VyX2lkIjoxLCJzY29wZXMiOlsiaXRlbXM6d3JpdGUiXSwiaWF0IjoxLCJleHAiOjQxMDI0NDQ4MDB9."
            ),
            "invalid_token",
        ),
        (bearer(_expired_token()), "invalid_token"),
    ],
    ids=["missing", "basic", "empty", "malformed", "wrong-key", "alg-none", "expired"],
)
@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_write_without_a_valid_token_is_401_with_a_challenge(
    api: ReusableClient, method: str, headers: dict[str, str], error: str | None
) -> None:
    path = "/items" if method == "post" else "/items/1"
    _, resp = api.request(path, http_method=method, json=ITEM, headers=headers)
    body = _problem(resp, 401)
    assert body["type"] == "/problems/unauthorized"
    challenge = _challenge(resp)
    assert (f'error="{error}"' in challenge) if error else ("error=" not in challenge)


def test_a_verified_token_does_not_vouch_for_altered_copies(api: ReusableClient) -> None:
    token = _tokens(api, WRITER)["access_token"]
    _, first = api.post("/items", json=ITEM, headers=bearer(token))
    assert first.status == 201  # verified once; its claims are now kept by this worker
    header, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    for altered in (f"{header}.{payload}.{flipped}", f"{header}.{payload}.", token + "x"):
        _, resp = api.post("/items", json=ITEM, headers=bearer(altered))
        assert resp.status == 401, altered
    _, again = api.post("/items", json=ITEM, headers=bearer(token))
    assert again.status == 201


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_write_with_a_read_only_token_is_403(api: ReusableClient, method: str) -> None:
    token = _tokens(api, READER)["access_token"]
    path = "/items" if method == "post" else "/items/1"
    _, resp = api.request(path, http_method=method, json=ITEM, headers=bearer(token))
    body = _problem(resp, 403)
    assert body["type"] == "/problems/insufficient-scope"
    assert 'error="insufficient_scope"' in resp.headers["www-authenticate"]
    assert 'scope="items:write"' in resp.headers["www-authenticate"]


def test_reads_are_public_by_default(api: ReusableClient) -> None:
    _, resp = api.get("/items")
    assert resp.status == 200
    _, resp = api.get("/items/999999")
    assert resp.status == 404


def test_me_shows_the_user_without_the_password_hash(api: ReusableClient) -> None:
    token = _tokens(api, READER)["access_token"]
    _, resp = api.get("/auth/me", headers=bearer(token))
    assert resp.status == 200
    assert resp.json == {
        "me": {"user_id": resp.json["me"]["user_id"], "username": READER, "scopes": ["items:read"]}
    }
    assert resp.headers["cache-control"] == "no-store"
    _, anon = api.get("/auth/me")
    _problem(anon, 401)
    _challenge(anon)


def _refresh(api: ReusableClient, tokens: dict[str, Any]) -> Response:
    _, resp = api.post(
        "/auth/refresh",
        json={"refresh_token": tokens["refresh_token"]},
        headers=bearer(tokens["access_token"]),
    )
    return resp


def test_refresh_gives_a_new_access_token_and_a_new_refresh_token(api: ReusableClient) -> None:
    tokens = _tokens(api, WRITER)
    resp = _refresh(api, tokens)
    assert resp.status == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    assert set(resp.json) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert resp.json["refresh_token"] != tokens["refresh_token"]
    _, write = api.post("/items", json=ITEM, headers=bearer(resp.json["access_token"]))
    assert write.status == 201
    # The successor rotates in turn: a chain of refreshes works, one token at a time.
    assert _refresh(api, resp.json).status == 200


def test_a_refresh_token_used_twice_revokes_its_login(
    api: ReusableClient, database_url: str
) -> None:
    tokens, other_login = _tokens(api, WRITER), _tokens(api, WRITER)
    successor = _refresh(api, tokens).json
    replay = _refresh(api, tokens)
    body = _problem(replay, 401)
    assert "already used" in body["detail"]
    _challenge(replay)
    # Every token of that login is gone (the successor too); the other login is untouched.
    _problem(_refresh(api, successor), 401)
    assert _refresh(api, other_login).status == 200
    assert users.hash_token(successor["refresh_token"]) not in asyncio.run(
        _fetch_hashes(database_url)
    )


def test_refresh_tokens_are_stored_hashed(api: ReusableClient, database_url: str) -> None:
    tokens = _tokens(api, WRITER)
    stored = asyncio.run(_fetch_hashes(database_url))
    assert users.hash_token(tokens["refresh_token"]) in stored
    assert tokens["refresh_token"] not in stored


async def _fetch_hashes(database_url: str) -> set[str]:
    conn = await asyncpg.connect(database_url)
    try:
        return {
            row["token_hash"] for row in await conn.fetch("SELECT token_hash FROM refresh_tokens")
        }
    finally:
        await conn.close()


def test_refresh_with_an_unknown_refresh_token_is_401(api: ReusableClient) -> None:
    tokens = _tokens(api, WRITER)
    resp = _refresh(api, {**tokens, "refresh_token": "made-up"})
    _problem(resp, 401)


def test_refresh_with_another_users_refresh_token_is_401(api: ReusableClient) -> None:
    writer, reader = _tokens(api, WRITER), _tokens(api, READER)
    resp = _refresh(api, {**reader, "refresh_token": writer["refresh_token"]})
    _problem(resp, 401)


def test_logout_revokes_the_refresh_token(api: ReusableClient) -> None:
    tokens = _tokens(api, WRITER)
    _, resp = api.post("/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    assert resp.status == 204
    _problem(_refresh(api, tokens), 401)


def test_logout_with_a_used_refresh_token_ends_its_whole_login(api: ReusableClient) -> None:
    tokens = _tokens(api, WRITER)
    successor = _refresh(api, tokens).json
    _, resp = api.post("/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    assert resp.status == 204
    _problem(_refresh(api, successor), 401)


def _refused_soon(api: ReusableClient, token: str, path: str = "/items") -> Response:
    """The first answer to `token` that is not a success, within the revocation bound."""
    deadline = time.monotonic() + MAX_AGE + 2
    while True:
        if path == "/items":
            _, resp = api.post(path, json=ITEM, headers=bearer(token))
        else:
            _, resp = api.get(path, headers=bearer(token))
        if resp.status >= 400 or time.monotonic() > deadline:
            return resp
        time.sleep(0.05)


def test_revoke_tokens_command_revokes_every_refresh_token_of_a_user(
    api: ReusableClient, database_url: str
) -> None:
    first, second = _tokens(api, READER), _tokens(api, READER)
    result = subprocess.run(
        [sys.executable, "-m", "app", "revoke-tokens", READER],
        cwd=ROOT,
        env=_cli_env(database_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    _problem(_refresh(api, first), 401)
    _problem(_refresh(api, second), 401)
    # The access tokens too, and on the routes sanic-jwt serves.
    for path in ("/auth/me", "/auth/verify"):
        body = _problem(_refused_soon(api, first["access_token"], path), 401)
        assert "revoked" in body["detail"]


def test_disable_user_command_locks_the_user_out(api: ReusableClient, database_url: str) -> None:
    username = "auth-cli-disabled"
    asyncio.run(_create(database_url, username))
    tokens = _tokens(api, username)
    _, write = api.post("/items", json=ITEM, headers=bearer(tokens["access_token"]))
    assert write.status == 201  # verified, and kept by the worker's token cache
    _cli(database_url, "disable-user", username)
    _problem(_refused_soon(api, tokens["access_token"]), 401)
    _problem(_refresh(api, tokens), 401)
    _problem(_login(api, username), 401)
    _cli(database_url, "enable-user", username)
    # Re-enabled: it logs in again, but the login from before stays ended.
    _problem(_refresh(api, tokens), 401)
    _, write = api.post("/items", json=ITEM, headers=bearer(_tokens(api, username)["access_token"]))
    assert write.status == 201


def test_set_scopes_command_lowers_a_users_scopes(api: ReusableClient, database_url: str) -> None:
    username = "auth-cli-lowered"
    asyncio.run(_create(database_url, username))
    tokens = _tokens(api, username)
    _cli(database_url, "set-scopes", username, "--scopes", "items:read")
    # Tokens issued with the old scopes: 401 (refresh); the refreshed token: 403.
    _problem(_refused_soon(api, tokens["access_token"]), 401)
    refreshed = _refresh(api, tokens)
    assert refreshed.status == 200, refreshed.text
    _, write = api.post("/items", json=ITEM, headers=bearer(refreshed.json["access_token"]))
    _problem(write, 403)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["disable-user", "nobody-here"], "no user 'nobody-here'"),
        (["set-scopes", WRITER, "--scopes", "items:admin"], "scopes: unknown items:admin"),
    ],
)
def test_user_commands_refuse_unknown_users_and_scopes(
    database_url: str, accounts: None, args: list[str], message: str
) -> None:
    del accounts
    result = _run_cli(database_url, *args)
    assert result.returncode == 1
    assert message in result.stderr


def _run_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=_cli_env(database_url),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _cli(database_url: str, *args: str) -> None:
    result = _run_cli(database_url, *args)
    assert result.returncode == 0, result.stderr


def test_a_disabled_user_cannot_refresh(api: ReusableClient, database_url: str) -> None:
    username = "auth-soon-disabled"
    asyncio.run(_create(database_url, username))
    tokens = _tokens(api, username)
    run_sql(database_url, "UPDATE users SET is_active = false WHERE username LIKE 'auth-soon-%'")
    _problem(_refresh(api, tokens), 401)


async def _create(database_url: str, username: str) -> None:
    async with orm_session(app_settings(database_url)) as db:
        await users.create_user(db, username, TEST_PASSWORD, [users.SCOPE_WRITE])


def _cli_env(database_url: str) -> dict[str, str]:
    from tests.support import server_env

    return server_env(database_url, free_port())


def test_create_user_reads_the_password_from_stdin_and_stores_a_hash(
    api: ReusableClient, database_url: str
) -> None:
    result = create_user_cli(database_url, "auth-cli", ["items:write"], "a piped password!")
    assert result.returncode == 0, result.stderr
    assert "a piped password!" not in result.stderr + result.stdout
    stored = asyncio.run(_password_hash(database_url, "auth-cli"))
    assert stored.startswith("$argon2id$")
    _, resp = api.post("/auth", json={"username": "auth-cli", "password": "a piped password!"})
    assert resp.status == 200


async def _password_hash(database_url: str, username: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        value: str = await conn.fetchval(
            "SELECT password_hash FROM users WHERE username = $1", username
        )
        return value
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("username", "scopes", "password", "message"),
    [
        ("auth-short", ["items:write"], "short", "password: 12 to 1024 characters"),
        ("auth-scope", ["items:admin"], TEST_PASSWORD, "scopes: unknown items:admin"),
        ("bad name!", ["items:write"], TEST_PASSWORD, "username:"),
        (WRITER, ["items:write"], TEST_PASSWORD, "already exists"),
    ],
)
def test_create_user_refuses_bad_input(
    database_url: str, accounts: None, username: str, scopes: list[str], password: str, message: str
) -> None:
    del accounts
    result = create_user_cli(database_url, username, scopes, password)
    assert result.returncode == 1
    assert message in result.stderr
