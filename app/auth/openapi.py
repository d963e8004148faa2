"""The /auth operations of the OpenAPI document: sanic-jwt's login, refresh, me and verify
(`app/auth/endpoints.py` applies these decorators to their class views' methods) and our
logout, with the bearer security scheme and the schemas, header and problems only they use.
"""

from __future__ import annotations

from app.auth.users import MAX_PASSWORD_LENGTH, USERNAME
from app.constants import JSON, SCOPE_WRITE
from app.http.openapi import (
    NO_NUL,
    RATE_LIMIT_HEADERS,
    READ_ERRORS,
    TOO_LARGE,
    UNAUTHORIZED,
    UNSUPPORTED,
    bearer_scheme,
    header,
    operation,
    problem,
    response,
    schema_component,
)

bearer_scheme(
    f"An access token from `POST /auth` (Try it out, then paste its `access_token` here); "
    f"item writes need the `{SCOPE_WRITE}` scope."
)

# --------------------------------------------------------------------------- schemas

_TOKEN_TYPE = {"type": "string", "enum": ["Bearer"]}
_EXPIRES_IN = {"type": "integer", "minimum": 1, "description": "Seconds the access token lives."}
_ACCESS_TOKEN = {"type": "string", "description": "A JWT: send it as `Authorization: Bearer ...`."}
# No credential holds NUL: the handlers refuse it with 400 before any hash or query sees it.
_REFRESH_TOKEN = {
    "type": "string",
    "pattern": NO_NUL,
    "description": "Exchanged for a new access token at `POST /auth/refresh`.",
}
CREDENTIALS_IN = schema_component(
    "CredentialsIn",
    {
        "type": "object",
        "required": ["username", "password"],
        "properties": {
            "username": {"type": "string", "pattern": f"^{USERNAME.pattern}$"},
            "password": {
                "type": "string",
                "maxLength": MAX_PASSWORD_LENGTH,
                "pattern": NO_NUL,
                "format": "password",
            },
        },
        "example": {"username": "alice", "password": "correct horse battery staple"},
    },
)
REFRESH_TOKEN_IN = schema_component(
    "RefreshTokenIn",
    {
        "type": "object",
        "required": ["refresh_token"],
        "properties": {"refresh_token": _REFRESH_TOKEN},
    },
)
TOKENS_OUT = schema_component(
    "TokensOut",
    {
        "type": "object",
        "required": ["access_token", "refresh_token", "token_type", "expires_in"],
        "properties": {
            "access_token": _ACCESS_TOKEN,
            "refresh_token": _REFRESH_TOKEN,
            "token_type": _TOKEN_TYPE,
            "expires_in": _EXPIRES_IN,
        },
    },
)
ACCESS_TOKEN_OUT = schema_component(
    "AccessTokenOut",
    {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in"],
        "properties": {
            "access_token": _ACCESS_TOKEN,
            "token_type": _TOKEN_TYPE,
            "expires_in": _EXPIRES_IN,
        },
    },
)
USER_OUT = schema_component(
    "UserOut",
    {
        "type": "object",
        "required": ["user_id", "username", "scopes"],
        "properties": {
            "user_id": {"type": "integer"},
            "username": {"type": "string"},
            "scopes": {
                "type": "array",
                "items": {"type": "string"},
                "description": "e.g. `items:write`.",
            },
        },
    },
)
ME_OUT = schema_component(
    "MeOut", {"type": "object", "required": ["me"], "properties": {"me": USER_OUT}}
)
VERIFIED_OUT = schema_component(
    "VerifiedOut",
    {
        "type": "object",
        "required": ["valid"],
        "properties": {"valid": {"type": "boolean", "enum": [True]}},
    },
)

# --------------------------------------------------------------------------- header, problems

header(
    "Cache-Control",
    "CacheControl",
    "`no-store` on every `/auth` response: tokens never sit in a cache.",
    {"type": "string", "enum": ["no-store"]},
)
_NO_STORE = ("Cache-Control",)

LOGIN_FAILED = problem(
    "LoginFailed",
    "Wrong username or password, or the account is disabled (one answer for all three).",
    required=("WWW-Authenticate",),
)
REFRESH_FAILED = problem(
    "RefreshFailed",
    "No bearer token or an invalid one, or the refresh token is unknown, expired or revoked, "
    "or belongs to another user.",
    required=("WWW-Authenticate",),
)
BAD_AUTH_REQUEST = problem(
    "BadAuthRequest", "Malformed JSON, or not a JSON object with each field as a string."
)
_AUTH_BODY_ERRORS = {
    "400": BAD_AUTH_REQUEST,
    "413": TOO_LARGE,
    "415": UNSUPPORTED,
    **READ_ERRORS,
}

# --------------------------------------------------------------------------- operations

login = operation(
    "auth",
    {
        "200": response(
            "An access token and a refresh token.",
            TOKENS_OUT,
            required=_NO_STORE,
            optional=RATE_LIMIT_HEADERS,
        ),
        "401": LOGIN_FAILED,
        **_AUTH_BODY_ERRORS,
    },
    body={JSON: CREDENTIALS_IN},
    name="login",
    summary="Log in: exchange a username and password for tokens.",
    description="Limited per client address more strictly than other routes "
    "(`RATE_LIMIT_AUTH`, default 10 a minute).",
)
refresh_token = operation(
    "auth",
    {
        "200": response(
            "A new access token and a new refresh token; the refresh token sent stops working.",
            TOKENS_OUT,
            required=_NO_STORE,
            optional=RATE_LIMIT_HEADERS,
        ),
        "401": REFRESH_FAILED,
        **_AUTH_BODY_ERRORS,
    },
    body={JSON: REFRESH_TOKEN_IN},
    secured=True,
    name="refresh_token",
    summary="Exchange a refresh token for a new access token and refresh token.",
    description="The bearer token is the user's access token, which may have expired. "
    "A refresh token works once: presenting it again revokes every refresh token of its "
    "login (log in again).",
)
me = operation(
    "auth",
    {
        "200": response(
            "The token's user.", ME_OUT, required=_NO_STORE, optional=RATE_LIMIT_HEADERS
        ),
        "401": UNAUTHORIZED,
        **READ_ERRORS,
    },
    secured=True,
    name="me",
    summary="Show the user the bearer token belongs to.",
)
verify_token = operation(
    "auth",
    {
        "200": response(
            "The token is valid.", VERIFIED_OUT, required=_NO_STORE, optional=RATE_LIMIT_HEADERS
        ),
        "401": UNAUTHORIZED,
        **READ_ERRORS,  # 503: revocations cannot be checked (app/auth/token_cache.py)
    },
    secured=True,
    name="verify_token",
    summary="Check a bearer token's signature and expiry.",
)
logout = operation(
    "auth",
    {
        "204": response(
            "The refresh token is revoked, or was not valid.",
            required=_NO_STORE,
            optional=RATE_LIMIT_HEADERS,
        ),
        **_AUTH_BODY_ERRORS,
    },
    body={JSON: REFRESH_TOKEN_IN},
    name="logout",
)
