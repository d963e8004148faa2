"""The OpenAPI document: named schemas, reusable responses and one decorator per operation.

Each handler gets exactly one line, e.g. `@docs.create_item`, placed directly under its
route decorator (sanic-ext finds an operation's documentation by the function the route
holds). The summary is the handler's one-line docstring.

sanic-ext labels the document OpenAPI 3.0.3, while pydantic v2 writes JSON Schema 2020-12;
`openapi30` rewrites the models' schemas into the 3.0 dialect (`nullable: true` instead of
`anyOf [..., {"type": "null"}]`). Responses are written as plain OpenAPI objects because
sanic-ext's `Response` definition drops `headers`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from sanic_ext import openapi
from sanic_ext.extensions.openapi.builders import OperationStore, SpecificationBuilder
from sanic_ext.extensions.openapi.definitions import RequestBody
from sanic_ext.extensions.openapi.types import Schema

from app.auth.users import MAX_PASSWORD_LENGTH, USERNAME
from app.items.pagination import DEFAULT_LIMIT, MAX_LIMIT, MAX_QUERY_LENGTH, SORTS
from app.items.schemas import MAX_PRICE, ItemIn, ItemOut, ItemPage, ItemPatch
from app.items.store import MAX_ID

H = TypeVar("H", bound=Callable[..., Any])

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
PROBLEM_JSON = "application/problem+json"
BEARER = "bearerAuth"
WRITE_SCOPE = "items:write"


def openapi30(schema: Any) -> Any:
    """Rewrite a pydantic (JSON Schema 2020-12) schema into the OpenAPI 3.0 dialect."""
    if isinstance(schema, list):
        return [openapi30(part) for part in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: openapi30(value) for key, value in schema.items()}
    for key in ("anyOf", "oneOf"):
        options = out.get(key)
        if not options or {"type": "null"} not in options:
            continue
        rest = [option for option in options if option != {"type": "null"}]
        del out[key]
        if len(rest) > 1:
            out[key] = rest
        elif "$ref" in rest[0]:
            out["allOf"] = rest  # 3.0 ignores siblings of $ref: wrap it to add `nullable`
        else:
            out = {**rest[0], **out}
        out["nullable"] = True
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if "default" in out and out["default"] is None and not out.get("nullable"):
        del out["default"]  # "absent" in a patch model, not a value a client may send
    return out


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str, schema: dict[str, Any]) -> dict[str, str]:
    SpecificationBuilder().add_component("schemas", name, schema)
    return _ref("schemas", name)


def _model(model: type[BaseModel]) -> dict[str, str]:
    """A pydantic model as a named schema component (and its nested models too)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, nested in schema.pop("$defs", {}).items():
        _schema(name, openapi30(nested))
    return _schema(model.__name__, openapi30(schema))


# --------------------------------------------------------------------------- schemas

ITEM_IN = _model(ItemIn)
ITEM_PATCH = _model(ItemPatch)
ITEM_OUT = _model(ItemOut)
ITEM_PAGE = _model(ItemPage)

FIELD_ERROR = _schema(
    "FieldError",
    {
        "type": "object",
        "description": "One bad field (or query parameter) and why.",
        "required": ["field", "message"],
        "properties": {
            "field": {"type": "string", "description": "Dotted path, or `body`."},
            "message": {"type": "string"},
            "type": {"type": "string", "description": "Machine-readable error kind."},
        },
    },
)
PROBLEM = _schema(
    "Problem",
    {
        "type": "object",
        "description": "An RFC 9457 problem detail.",
        "required": ["type", "title", "status", "detail", "instance", "request_id"],
        "properties": {
            "type": {"type": "string", "description": "`about:blank` or `/problems/...`."},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 100, "maximum": 599},
            "detail": {"type": "string"},
            "instance": {"type": "string", "description": "The request path."},
            "request_id": {"type": "string", "description": "Also in `X-Request-ID`."},
            "errors": {"type": "array", "items": FIELD_ERROR},
        },
    },
)
VALIDATION_PROBLEM = _schema(
    "ValidationProblem",
    {
        "description": "A problem detail naming each bad field.",
        "allOf": [PROBLEM, {"type": "object", "required": ["errors"]}],
    },
)
READINESS = _schema(
    "Readiness",
    {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "fail"]},
            "checks": {
                "type": "object",
                "description": "One entry per dependency, e.g. `database`.",
                "additionalProperties": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"type": "string"}},
                },
            },
        },
    },
)

_TOKEN_TYPE = {"type": "string", "enum": ["Bearer"]}
_EXPIRES_IN = {"type": "integer", "minimum": 1, "description": "Seconds the access token lives."}
_ACCESS_TOKEN = {"type": "string", "description": "A JWT: send it as `Authorization: Bearer ...`."}
# No credential holds NUL: the handlers refuse it with 400 before any hash or query sees it.
_NO_NUL = "^[^\\x00]*$"
_REFRESH_TOKEN = {
    "type": "string",
    "pattern": _NO_NUL,
    "description": "Exchanged for a new access token at `POST /auth/refresh`.",
}
CREDENTIALS_IN = _schema(
    "CredentialsIn",
    {
        "type": "object",
        "required": ["username", "password"],
        "properties": {
            "username": {"type": "string", "pattern": f"^{USERNAME.pattern}$"},
            "password": {
                "type": "string",
                "maxLength": MAX_PASSWORD_LENGTH,
                "pattern": _NO_NUL,
                "format": "password",
            },
        },
        "example": {"username": "alice", "password": "correct horse battery staple"},
    },
)
REFRESH_TOKEN_IN = _schema(
    "RefreshTokenIn",
    {
        "type": "object",
        "required": ["refresh_token"],
        "properties": {"refresh_token": _REFRESH_TOKEN},
    },
)
TOKENS_OUT = _schema(
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
ACCESS_TOKEN_OUT = _schema(
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
USER_OUT = _schema(
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
ME_OUT = _schema("MeOut", {"type": "object", "required": ["me"], "properties": {"me": USER_OUT}})
VERIFIED_OUT = _schema(
    "VerifiedOut",
    {
        "type": "object",
        "required": ["valid"],
        "properties": {"valid": {"type": "boolean", "enum": [True]}},
    },
)

# --------------------------------------------------------------------------- headers

_DIGITS = {"type": "string", "pattern": "^[0-9]+$"}


_HEADER_DEFINITIONS: dict[str, dict[str, Any]] = {}


def _header(name: str, description: str, schema: dict[str, Any]) -> dict[str, str]:
    _HEADER_DEFINITIONS[name] = {"description": description, "schema": schema}
    SpecificationBuilder().add_component("headers", name, _HEADER_DEFINITIONS[name])
    return _ref("headers", name)


_HEADERS = {
    "ETag": _header(
        "ETag",
        "The item's version as a strong entity tag.",
        {"type": "string", "pattern": '^"v[0-9]+"$'},
    ),
    "Location": _header(
        "Location", "Where the new item lives.", {"type": "string", "pattern": "^/items/[0-9]+$"}
    ),
    "Link": _header("Link", 'The next page: `<...>; rel="next"`.', {"type": "string"}),
    "Retry-After": _header("RetryAfter", "Seconds to wait before retrying.", _DIGITS),
    "RateLimit-Limit": _header("RateLimitLimit", "Requests allowed per window.", _DIGITS),
    "RateLimit-Remaining": _header("RateLimitRemaining", "Requests left in this window.", _DIGITS),
    "RateLimit-Reset": _header("RateLimitReset", "Seconds until the window resets.", _DIGITS),
    "RateLimit-Policy": _header(
        "RateLimitPolicy", "The limit and window, e.g. `1200;w=60`.", {"type": "string"}
    ),
    "WWW-Authenticate": _header(
        "WWWAuthenticate", "The authentication challenge (`Bearer`).", {"type": "string"}
    ),
    "X-Request-ID": _header(
        "RequestId", "The request's id: the client's when sane, else a new one.", {"type": "string"}
    ),
    "Cache-Control": _header(
        "CacheControl",
        "`no-store` on every `/auth` response: tokens never sit in a cache.",
        {"type": "string", "enum": ["no-store"]},
    ),
}
_RATE_LIMIT_HEADERS = (
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit-Policy",
)


def _required(name: str) -> dict[str, Any]:
    # Written out, not referenced: OpenAPI 3.0 ignores keys beside a `$ref`.
    component = _HEADERS[name]["$ref"].rsplit("/", 1)[1]
    return {**_HEADER_DEFINITIONS[component], "required": True}


def _headers(*required: str, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    headers: dict[str, Any] = {name: _required(name) for name in required}
    headers.update({name: _HEADERS[name] for name in optional})
    headers["X-Request-ID"] = _HEADERS["X-Request-ID"]
    return headers


# --------------------------------------------------------------------------- responses


def _response(
    description: str,
    content: dict[str, Any] | None = None,
    *,
    media_type: str = JSON,
    required: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "headers": _headers(*required, optional=optional),
    }
    if content is not None:
        response["content"] = {media_type: {"schema": content}}
    return response


def _problem(
    name: str, description: str, schema: dict[str, Any] = PROBLEM, **headers: Any
) -> dict[str, str]:
    SpecificationBuilder().add_component(
        "responses", name, _response(description, schema, media_type=PROBLEM_JSON, **headers)
    )
    return _ref("responses", name)


BAD_REQUEST = _problem(
    "BadRequest", "Malformed JSON, or a query parameter of the wrong type or out of range."
)
UNAUTHORIZED = _problem(
    "Unauthorized", "No bearer token, or an invalid or expired one.", required=("WWW-Authenticate",)
)
FORBIDDEN = _problem("Forbidden", f"The token lacks the `{WRITE_SCOPE}` scope.")
NOT_FOUND = _problem("NotFound", "No item has this id.")
CONFLICT = _problem(
    "Conflict",
    "Another item has this `sku`, or a request with this `Idempotency-Key` is still running.",
)
PRECONDITION_FAILED = _problem("PreconditionFailed", "`If-Match` does not match the item's ETag.")
TOO_LARGE = _problem("PayloadTooLarge", "The body is over the size limit.")
UNSUPPORTED = _problem("UnsupportedMediaType", "The body is not sent as JSON.")
UNPROCESSABLE = _problem(
    "UnprocessableContent",
    "A field breaks its rule (each is listed in `errors`), or an `Idempotency-Key` was "
    "reused with a different body.",
    {"anyOf": [VALIDATION_PROBLEM, PROBLEM]},
)
TOO_MANY = _problem(
    "TooManyRequests",
    "Over the rate limit; retry after `Retry-After` seconds.",
    required=("Retry-After",),
    optional=_RATE_LIMIT_HEADERS,
)
UNAVAILABLE = _problem(
    "ServiceUnavailable",
    "The database is unreachable or the server is draining; retry shortly.",
    required=("Retry-After",),
)

LOGIN_FAILED = _problem(
    "LoginFailed",
    "Wrong username or password, or the account is disabled (one answer for all three).",
    required=("WWW-Authenticate",),
)
REFRESH_FAILED = _problem(
    "RefreshFailed",
    "No bearer token or an invalid one, or the refresh token is unknown, expired or revoked, "
    "or belongs to another user.",
    required=("WWW-Authenticate",),
)
BAD_AUTH_REQUEST = _problem(
    "BadAuthRequest", "Malformed JSON, or not a JSON object with each field as a string."
)

_READ_ERRORS = {"429": TOO_MANY, "503": UNAVAILABLE}
_WRITE_ERRORS = {
    "400": BAD_REQUEST,
    "401": UNAUTHORIZED,
    "403": FORBIDDEN,
    "413": TOO_LARGE,
    "415": UNSUPPORTED,
    "422": UNPROCESSABLE,
    **_READ_ERRORS,
}

# --------------------------------------------------------------------------- parameters


def _parameter(
    name: str, schema: dict[str, Any], location: str = "query", **fields: Any
) -> dict[str, Any]:
    # sanic-ext takes a dict schema for an object's properties: hand it a Schema instead.
    typed = Schema(**schema)  # type: ignore[no-untyped-call]
    return {"name": name, "schema": typed, "location": location, **fields}


_STRING = {"type": "string"}
ITEM_ID = _parameter(
    "item_id",
    {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID},
    "path",
    required=True,
    description="The item's id.",
)
IF_MATCH = _parameter(
    "If-Match",
    _STRING,
    "header",
    description="Change only if the item's ETag is one of these (or `*`); else 412.",
)
IF_NONE_MATCH = _parameter(
    "If-None-Match",
    _STRING,
    "header",
    description="Answer 304 when the item's ETag is one of these (or `*`).",
)
IDEMPOTENCY_KEY = _parameter(
    "Idempotency-Key",
    # 1-255 printable ASCII characters but space, `"` and backslash, optionally in quotes.
    {"type": "string", "pattern": r'^(?:[!#-\[\]-~]{1,255}|"[!#-\[\]-~]{1,255}")$'},
    "header",
    description="Retrying with the same key and body returns the first response; "
    "the same key with another body gets 422.",
)
_PRICE = {"type": "number", "minimum": 0, "maximum": float(MAX_PRICE), "multipleOf": 0.01}
LIST_PARAMETERS = [
    _parameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        description="Items per page.",
    ),
    _parameter(
        "sort",
        {"type": "string", "enum": list(SORTS), "default": "id"},
        description="`-` sorts descending.",
    ),
    _parameter(
        "cursor",
        {"type": "string", "minLength": 1},
        description="`next_cursor` of the previous page, for the same `sort`.",
    ),
    _parameter(
        "q",
        {"type": "string", "maxLength": MAX_QUERY_LENGTH, "pattern": "^[^\\x00]*$"},
        description="Only items whose name contains this, ignoring case.",
    ),
    _parameter("min_price", _PRICE, description="Only items at this price or more."),
    _parameter(
        "max_price", _PRICE, description="Only items at this price or less (not below `min_price`)."
    ),
]

# --------------------------------------------------------------------------- operations

SpecificationBuilder().add_security_scheme(
    BEARER,
    "http",
    scheme="bearer",
    bearer_format="JWT",
    description=f"An access token from `POST /auth` (Try it out, then paste its `access_token` "
    f"here); item writes need the `{WRITE_SCOPE}` scope.",
)
SpecificationBuilder().tag("items", "The items resource.")
SpecificationBuilder().tag("health", "Liveness and readiness probes.")
SpecificationBuilder().tag("metrics", "Prometheus metrics of every worker.")
SpecificationBuilder().tag("auth", "Log in for bearer tokens, refresh them, log out.")

_ITEM = _response("The item.", ITEM_OUT, required=("ETag",), optional=_RATE_LIMIT_HEADERS)


def _operation(
    tag: str,
    responses: dict[str, Any],
    *,
    body: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    secured: bool = False,
    name: str | None = None,
    summary: str | None = None,
    description: str | None = None,
) -> Callable[[H], H]:
    """Document one operation; `name` and `summary` default to the handler's name and
    docstring (sanic-jwt's class views have neither worth showing)."""

    def document(handler: H) -> H:
        definition = openapi.definition(
            operation=name or handler.__name__,
            summary=summary,
            description=description,
            tag=tag,
            body=RequestBody(
                {media: {"schema": schema} for media, schema in body.items()}, required=True
            )
            if body
            else None,
            parameter=list[Any](parameters or ()) or None,
            secured={BEARER: []} if secured else None,
        )
        documented: H = definition(handler)
        # Written straight into the builder: sanic-ext's Response object has no `headers`.
        store = OperationStore()  # type: ignore[no-untyped-call]
        store[documented].responses.update(responses)
        # A body wraps the handler; sanic-jwt's class views route to the unwrapped method.
        store[handler] = store[documented]
        return documented

    return document


liveness = _operation("health", {"200": _response("The process answers.")})
readiness = _operation(
    "health",
    {
        "200": _response("Every critical dependency answers.", READINESS),
        "503": _response(
            "A critical dependency failed, or the server is draining.",
            READINESS,
            required=("Retry-After",),
        ),
    },
)
metrics = _operation(
    "metrics",
    {
        "200": _response(
            "Prometheus text format, summed over every worker process.",
            {"type": "string"},
            media_type="text/plain",
        ),
        "401": UNAUTHORIZED,
    },
)
list_items = _operation(
    "items",
    {
        "200": _response("One page of items.", ITEM_PAGE, optional=("Link", *_RATE_LIMIT_HEADERS)),
        "400": BAD_REQUEST,
        **_READ_ERRORS,
    },
    parameters=LIST_PARAMETERS,
)
create_item = _operation(
    "items",
    {
        "201": _response(
            "Created.", ITEM_OUT, required=("ETag", "Location"), optional=_RATE_LIMIT_HEADERS
        ),
        "409": CONFLICT,
        **_WRITE_ERRORS,
    },
    body={JSON: ITEM_IN},
    parameters=[IDEMPOTENCY_KEY],
    secured=True,
)
get_item = _operation(
    "items",
    {
        "200": _ITEM,
        "304": _response("The client's copy is current.", required=("ETag",)),
        "404": NOT_FOUND,
        **_READ_ERRORS,
    },
    parameters=[ITEM_ID, IF_NONE_MATCH],
)
_UPDATE_RESPONSES = {
    "200": _ITEM,
    "404": NOT_FOUND,
    "409": CONFLICT,
    "412": PRECONDITION_FAILED,
    **_WRITE_ERRORS,
}
replace_item = _operation(
    "items",
    _UPDATE_RESPONSES,
    body={JSON: ITEM_IN},
    parameters=[ITEM_ID, IF_MATCH],
    secured=True,
)
patch_item = _operation(
    "items",
    _UPDATE_RESPONSES,
    body={JSON: ITEM_PATCH, MERGE_PATCH: ITEM_PATCH},
    parameters=[ITEM_ID, IF_MATCH],
    secured=True,
)
delete_item = _operation(
    "items",
    {
        "204": _response("Deleted.", optional=_RATE_LIMIT_HEADERS),
        "401": UNAUTHORIZED,
        "403": FORBIDDEN,
        "404": NOT_FOUND,
        "412": PRECONDITION_FAILED,
        **_READ_ERRORS,
    },
    parameters=[ITEM_ID, IF_MATCH],
    secured=True,
)

# sanic-jwt's class views (app/auth.py applies these to their methods) and our logout.
_AUTH_BODY_ERRORS = {
    "400": BAD_AUTH_REQUEST,
    "413": TOO_LARGE,
    "415": UNSUPPORTED,
    **_READ_ERRORS,
}
_NO_STORE = ("Cache-Control",)
login = _operation(
    "auth",
    {
        "200": _response(
            "An access token and a refresh token.",
            TOKENS_OUT,
            required=_NO_STORE,
            optional=_RATE_LIMIT_HEADERS,
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
refresh_token = _operation(
    "auth",
    {
        "200": _response(
            "A new access token and a new refresh token; the refresh token sent stops working.",
            TOKENS_OUT,
            required=_NO_STORE,
            optional=_RATE_LIMIT_HEADERS,
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
me = _operation(
    "auth",
    {
        "200": _response(
            "The token's user.", ME_OUT, required=_NO_STORE, optional=_RATE_LIMIT_HEADERS
        ),
        "401": UNAUTHORIZED,
        **_READ_ERRORS,
    },
    secured=True,
    name="me",
    summary="Show the user the bearer token belongs to.",
)
verify_token = _operation(
    "auth",
    {
        "200": _response(
            "The token is valid.", VERIFIED_OUT, required=_NO_STORE, optional=_RATE_LIMIT_HEADERS
        ),
        "401": UNAUTHORIZED,
        **_READ_ERRORS,  # 503: revocations cannot be checked (app/token_cache.py)
    },
    secured=True,
    name="verify_token",
    summary="Check a bearer token's signature and expiry.",
)
logout = _operation(
    "auth",
    {
        "204": _response(
            "The refresh token is revoked, or was not valid.",
            required=_NO_STORE,
            optional=_RATE_LIMIT_HEADERS,
        ),
        **_AUTH_BODY_ERRORS,
    },
    body={JSON: REFRESH_TOKEN_IN},
    name="logout",
)
