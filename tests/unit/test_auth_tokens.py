"""Access-token rules and the security settings, without a server."""

from __future__ import annotations

import base64
import time
from typing import Any

import jwt
import pytest
from sanic_jwt.validators import validate_single_scope

from app.auth import tokens
from app.auth.tokens import NotAuthenticated, decode_token, holds_scope
from app.settings import DEV_JWT_SECRET, SettingsError, load_settings

SECRET = "unit-test-secret-" + "0123456789abcdef" * 4  # 64+ bytes: HS512 too


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "user_id": 7,
        "scopes": ["items:write"],
        "iat": now,
        "exp": now + 60,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_well_signed_token_gives_its_claims() -> None:
    token = jwt.encode(_claims(), SECRET, algorithm="HS256")
    assert decode_token(token, SECRET, "HS256")["user_id"] == 7


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(
            jwt.encode(_claims(), "another-secret-also-32-bytes-long!!", "HS256"), id="sig"
        ),
        pytest.param(jwt.encode(_claims(), SECRET, algorithm="HS512"), id="other-alg"),
        pytest.param(
            _b64(b'{"alg":"none","typ":"JWT"}') + "." + _b64(b'{"user_id":7}') + ".", id="alg-none"
        ),
        pytest.param(jwt.encode(_claims(exp=int(time.time()) - 60), SECRET, "HS256"), id="expired"),
        pytest.param(jwt.encode(_claims(scopes=None), SECRET, "HS256"), id="no-scopes"),
        pytest.param(jwt.encode(_claims(iat=None), SECRET, "HS256"), id="no-iat"),
        pytest.param(jwt.encode(_claims(scopes="items:write"), SECRET, "HS256"), id="scopes-str"),
        pytest.param(jwt.encode(_claims(user_id=[7]), SECRET, "HS256"), id="user-id-list"),
        pytest.param(jwt.encode(_claims(user_id="7"), SECRET, "HS256"), id="user-id-str"),
        pytest.param(jwt.encode(_claims(token_version=True), SECRET, "HS256"), id="version-bool"),
        pytest.param(jwt.encode(_claims(token_version="1"), SECRET, "HS256"), id="version-str"),
        pytest.param("not.a.jwt", id="garbage"),
    ],
)
def test_a_bad_token_is_refused_as_not_authenticated(token: str) -> None:
    with pytest.raises(NotAuthenticated) as caught:
        decode_token(token, SECRET, "HS256")
    assert caught.value.error == "invalid_token"


def test_refresh_may_read_an_expired_token_but_never_a_forged_one() -> None:
    expired = jwt.encode(_claims(exp=int(time.time()) - 600), SECRET, "HS256")
    assert decode_token(expired, SECRET, "HS256", verify_exp=False)["user_id"] == 7
    forged = jwt.encode(_claims(), "forged-key-forged-key-forged-key-!!", "HS256")
    with pytest.raises(NotAuthenticated):
        decode_token(forged, SECRET, "HS256", verify_exp=False)


_GRANTED = [
    [],
    ["items:read"],
    ["items:write"],
    ["items:read", "items:write"],
    ["items"],
    ["items:read:write"],
    [":read"],
    ["other:write"],
]
_WANTED = [(), ("items:write",), ("items:read", "items:write"), ("items",), (":write",)]


@pytest.mark.parametrize("granted", _GRANTED, ids=repr)
@pytest.mark.parametrize("wanted", _WANTED, ids=repr)
def test_holds_scope_agrees_with_sanic_jwt_first_time_and_remembered(
    granted: list[str], wanted: tuple[str, ...]
) -> None:
    upstream = any(validate_single_scope(scope, granted) for scope in wanted)
    tokens._GRANTS.clear()
    assert holds_scope(granted, wanted) is upstream
    assert holds_scope(granted, wanted) is upstream  # the remembered verdict


def test_remembered_scope_verdicts_are_bounded() -> None:
    tokens._GRANTS.clear()
    for n in range(tokens._MAX_GRANTS + 10):
        holds_scope([f"scope{n}:write"], ("items:write",))
    assert len(tokens._GRANTS) <= tokens._MAX_GRANTS


def test_production_requires_jwt_secret() -> None:
    with pytest.raises(SettingsError, match="JWT_SECRET: required in production"):
        load_settings(env_file=None, ENV="production", JWT_SECRET="")


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("short", "at least 32 bytes"),
        ("change-me-to-64-hex-characters-from-openssl-rand-hex-32-0000000", "example value"),
        ("CHANGE-ME-to-at-least-32-random-bytes-openssl-rand-hex-32", "example value"),
        ("please-change-me-before-going-live-0123456789", "example value"),
        (DEV_JWT_SECRET, "example value"),
    ],
)
def test_weak_or_example_secrets_are_refused(secret: str, message: str) -> None:
    with pytest.raises(SettingsError, match=f"JWT_SECRET: .*{message}"):
        load_settings(env_file=None, ENV="production", JWT_SECRET=secret)


def test_development_without_a_secret_uses_one_fixed_key_for_every_worker() -> None:
    first = load_settings(env_file=None, ENV="development", JWT_SECRET="")
    second = load_settings(env_file=None, ENV="development", JWT_SECRET="")
    assert first.jwt_secret == second.jwt_secret == DEV_JWT_SECRET


def test_the_algorithm_is_pinned() -> None:
    with pytest.raises(SettingsError, match="JWT_ALGORITHM"):
        load_settings(env_file=None, JWT_ALGORITHM="none")


@pytest.mark.parametrize(
    ("env", "enabled"),
    [
        ({}, False),
        ({"TLS_CERT": "x.pem"}, True),
        ({"TLS_KEY": "x.pem"}, True),
        ({"TLS_ENABLED": "true"}, True),
        ({"TLS_ENABLED": "false", "TLS_CERT": "x.pem"}, False),
        ({"TLS_CERT": ""}, False),
    ],
)
def test_tls_is_on_when_enabled_or_when_files_are_named(env: dict[str, str], enabled: bool) -> None:
    assert load_settings(env_file=None, **env).tls_enabled is enabled


def test_tls_paths_default_to_the_certs_folder() -> None:
    settings = load_settings(env_file=None, TLS_ENABLED="true")
    assert (str(settings.tls_cert), str(settings.tls_key)) == (
        "certs/fullchain.pem",
        "certs/privkey.pem",
    )


def test_redirect_port_needs_tls_and_its_own_port() -> None:
    with pytest.raises(SettingsError, match="HTTP_REDIRECT_PORT: needs TLS"):
        load_settings(env_file=None, HTTP_REDIRECT_PORT="8080")
    with pytest.raises(SettingsError, match="HTTP_REDIRECT_PORT: must differ from PORT"):
        load_settings(env_file=None, TLS_ENABLED="true", PORT="8443", HTTP_REDIRECT_PORT="8443")
