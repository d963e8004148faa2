"""The OpenAPI machinery every resource shares: named schemas, headers, responses, problems
and the one decorator per operation.

Each resource documents its own operations beside its routes (`app/items/openapi.py`,
`app/auth/openapi.py`, `app/ops/openapi.py`); each handler gets exactly one line, e.g.
`@openapi.create_item`, placed directly under its route decorator (sanic-ext finds an
operation's documentation by the function the route holds). The summary is the handler's
one-line docstring.

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

from app.constants import JSON, PROBLEM_JSON

H = TypeVar("H", bound=Callable[..., Any])

BEARER = "bearerAuth"
# A string without NUL: PostgreSQL refuses NUL in text, so the handlers answer 400 first.
NO_NUL = "^[^\\x00]*$"


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


def schema_component(name: str, schema: dict[str, Any]) -> dict[str, str]:
    """Add `schema` to the document's named schemas; return a reference to it."""
    SpecificationBuilder().add_component("schemas", name, schema)
    return _ref("schemas", name)


def model_component(model: type[BaseModel]) -> dict[str, str]:
    """A pydantic model as a named schema component (and its nested models too)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, nested in schema.pop("$defs", {}).items():
        schema_component(name, openapi30(nested))
    return schema_component(model.__name__, openapi30(schema))


# --------------------------------------------------------------------------- sections

# The document's tags, declared here so Swagger UI lists them in this order whichever
# resource module is imported first; each operation names its own tag.
SpecificationBuilder().tag("items", "The items resource.")
SpecificationBuilder().tag("health", "Liveness and readiness probes.")
SpecificationBuilder().tag("metrics", "Prometheus metrics of every worker.")
SpecificationBuilder().tag("auth", "Log in for bearer tokens, refresh them, log out.")

# --------------------------------------------------------------------------- problems

FIELD_ERROR = schema_component(
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
PROBLEM = schema_component(
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
VALIDATION_PROBLEM = schema_component(
    "ValidationProblem",
    {
        "description": "A problem detail naming each bad field.",
        "allOf": [PROBLEM, {"type": "object", "required": ["errors"]}],
    },
)

# --------------------------------------------------------------------------- headers

# HTTP header name -> reference, and component name -> definition.
_HEADERS: dict[str, dict[str, str]] = {}
_HEADER_DEFINITIONS: dict[str, dict[str, Any]] = {}


def header(name: str, component: str, description: str, schema: dict[str, Any]) -> None:
    """Define the response header `name` (as the component `component`) for `response`."""
    _HEADER_DEFINITIONS[component] = {"description": description, "schema": schema}
    SpecificationBuilder().add_component("headers", component, _HEADER_DEFINITIONS[component])
    _HEADERS[name] = _ref("headers", component)


_DIGITS = {"type": "string", "pattern": "^[0-9]+$"}
header("Retry-After", "RetryAfter", "Seconds to wait before retrying.", _DIGITS)
header("RateLimit-Limit", "RateLimitLimit", "Requests allowed per window.", _DIGITS)
header("RateLimit-Remaining", "RateLimitRemaining", "Requests left in this window.", _DIGITS)
header("RateLimit-Reset", "RateLimitReset", "Seconds until the window resets.", _DIGITS)
header(
    "RateLimit-Policy",
    "RateLimitPolicy",
    "The limit and window, e.g. `1200;w=60`.",
    {"type": "string"},
)
header(
    "WWW-Authenticate",
    "WWWAuthenticate",
    "The authentication challenge (`Bearer`).",
    {"type": "string"},
)
header(
    "X-Request-ID",
    "RequestId",
    "The request's id: the client's when sane, else a new one.",
    {"type": "string"},
)
RATE_LIMIT_HEADERS = (
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


def response(
    description: str,
    content: dict[str, Any] | None = None,
    *,
    media_type: str = JSON,
    required: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A response object; `required` and `optional` name headers defined with `header`."""
    described: dict[str, Any] = {
        "description": description,
        "headers": _headers(*required, optional=optional),
    }
    if content is not None:
        described["content"] = {media_type: {"schema": content}}
    return described


def problem(
    name: str, description: str, schema: dict[str, Any] = PROBLEM, **headers: Any
) -> dict[str, str]:
    """A problem+json response as the named component `name`; return a reference to it."""
    SpecificationBuilder().add_component(
        "responses", name, response(description, schema, media_type=PROBLEM_JSON, **headers)
    )
    return _ref("responses", name)


UNAUTHORIZED = problem(
    "Unauthorized", "No bearer token, or an invalid or expired one.", required=("WWW-Authenticate",)
)
TOO_LARGE = problem("PayloadTooLarge", "The body is over the size limit.")
UNSUPPORTED = problem("UnsupportedMediaType", "The body is not sent as JSON.")
TOO_MANY = problem(
    "TooManyRequests",
    "Over the rate limit; retry after `Retry-After` seconds.",
    required=("Retry-After",),
    optional=RATE_LIMIT_HEADERS,
)
UNAVAILABLE = problem(
    "ServiceUnavailable",
    "The database is unreachable or the server is draining; retry shortly.",
    required=("Retry-After",),
)
READ_ERRORS = {"429": TOO_MANY, "503": UNAVAILABLE}

# --------------------------------------------------------------------------- operations


def bearer_scheme(description: str) -> None:
    """Define the JWT bearer security scheme that `operation(secured=True)` names."""
    SpecificationBuilder().add_security_scheme(
        BEARER, "http", scheme="bearer", bearer_format="JWT", description=description
    )


def parameter(
    name: str, schema: dict[str, Any], location: str = "query", **fields: Any
) -> dict[str, Any]:
    """A query, path or header parameter of an operation."""
    # sanic-ext takes a dict schema for an object's properties: hand it a Schema instead.
    typed = Schema(**schema)  # type: ignore[no-untyped-call]
    return {"name": name, "schema": typed, "location": location, **fields}


def operation(
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
