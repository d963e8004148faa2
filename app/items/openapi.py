"""The items operations of the OpenAPI document: one decorator per handler in
`app/items/routes.py`, and the schemas, headers and problems only they use.

Every bound comes from the rule that checks it: the field rules from the pydantic models
(`app/items/schemas.py`), the list parameters from `app/items/pagination.py`, the id bound
from `app/items/store.py`; `tests/unit/test_docs.py` checks the patterns match the validators.
"""

from __future__ import annotations

from typing import Any

from app.constants import JSON, MERGE_PATCH, SCOPE_WRITE
from app.http.openapi import (
    NO_NUL,
    PROBLEM,
    RATE_LIMIT_HEADERS,
    READ_ERRORS,
    TOO_LARGE,
    UNAUTHORIZED,
    UNSUPPORTED,
    VALIDATION_PROBLEM,
    header,
    model_component,
    operation,
    parameter,
    problem,
    response,
)
from app.items.pagination import MAX_LIMIT, MAX_QUERY_LENGTH, SORTS, ListQuery
from app.items.schemas import PRICE_JSON_SCHEMA, ItemIn, ItemOut, ItemPage, ItemPatch
from app.items.store import MAX_ID

# --------------------------------------------------------------------------- schemas

ITEM_IN = model_component(ItemIn)
ITEM_PATCH = model_component(ItemPatch)
ITEM_OUT = model_component(ItemOut)
ITEM_PAGE = model_component(ItemPage)

# --------------------------------------------------------------------------- headers

header(
    "ETag",
    "ETag",
    "The item's version as a strong entity tag.",
    {"type": "string", "pattern": '^"v[0-9]+"$'},
)
header(
    "Location",
    "Location",
    "Where the new item lives.",
    {"type": "string", "pattern": "^/items/[0-9]+$"},
)
header("Link", "Link", 'The next page: `<...>; rel="next"`.', {"type": "string"})

# --------------------------------------------------------------------------- problems

BAD_REQUEST = problem(
    "BadRequest", "Malformed JSON, or a query parameter of the wrong type or out of range."
)
FORBIDDEN = problem("Forbidden", f"The token lacks the `{SCOPE_WRITE}` scope.")
NOT_FOUND = problem("NotFound", "No item has this id.")
CONFLICT = problem(
    "Conflict",
    "Another item has this `sku`, or a request with this `Idempotency-Key` is still running.",
)
PRECONDITION_FAILED = problem("PreconditionFailed", "`If-Match` does not match the item's ETag.")
UNPROCESSABLE = problem(
    "UnprocessableContent",
    "A field breaks its rule (each is listed in `errors`), or an `Idempotency-Key` was "
    "reused with a different body.",
    {"anyOf": [VALIDATION_PROBLEM, PROBLEM]},
)
_WRITE_ERRORS = {
    "400": BAD_REQUEST,
    "401": UNAUTHORIZED,
    "403": FORBIDDEN,
    "413": TOO_LARGE,
    "415": UNSUPPORTED,
    "422": UNPROCESSABLE,
    **READ_ERRORS,
}

# --------------------------------------------------------------------------- parameters

_STRING = {"type": "string"}
ITEM_ID = parameter(
    "item_id",
    {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID},
    "path",
    required=True,
    description="The item's id.",
)
IF_MATCH = parameter(
    "If-Match",
    _STRING,
    "header",
    description="Change only if the item's ETag is one of these (or `*`); else 412.",
)
IF_NONE_MATCH = parameter(
    "If-None-Match",
    _STRING,
    "header",
    description="Answer 304 when the item's ETag is one of these (or `*`).",
)
IDEMPOTENCY_KEY = parameter(
    "Idempotency-Key",
    # 1-255 printable ASCII characters but space, `"` and backslash, optionally in quotes.
    {"type": "string", "pattern": r'^(?:[!#-\[\]-~]{1,255}|"[!#-\[\]-~]{1,255}")$'},
    "header",
    description="Retrying with the same key and body returns the first response; "
    "the same key with another body gets 422.",
)
# A price filter follows the price field's rule; the defaults are those of a bare query.
_PRICE = {key: value for key, value in PRICE_JSON_SCHEMA.items() if key != "description"}
_DEFAULTS = ListQuery()
LIST_PARAMETERS = [
    parameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": _DEFAULTS.limit},
        description="Items per page.",
    ),
    parameter(
        "sort",
        {"type": "string", "enum": list(SORTS), "default": _DEFAULTS.sort},
        description="`-` sorts descending.",
    ),
    parameter(
        "cursor",
        {"type": "string", "minLength": 1},
        description="`next_cursor` of the previous page, for the same `sort`.",
    ),
    parameter(
        "q",
        {"type": "string", "maxLength": MAX_QUERY_LENGTH, "pattern": NO_NUL},
        description="Only items whose name contains this, ignoring case.",
    ),
    parameter("min_price", _PRICE, description="Only items at this price or more."),
    parameter(
        "max_price", _PRICE, description="Only items at this price or less (not below `min_price`)."
    ),
]

# --------------------------------------------------------------------------- operations

_ITEM = response("The item.", ITEM_OUT, required=("ETag",), optional=RATE_LIMIT_HEADERS)

list_items = operation(
    "items",
    {
        "200": response("One page of items.", ITEM_PAGE, optional=("Link", *RATE_LIMIT_HEADERS)),
        "400": BAD_REQUEST,
        **READ_ERRORS,
    },
    parameters=LIST_PARAMETERS,
)
create_item = operation(
    "items",
    {
        "201": response(
            "Created.", ITEM_OUT, required=("ETag", "Location"), optional=RATE_LIMIT_HEADERS
        ),
        "409": CONFLICT,
        **_WRITE_ERRORS,
    },
    body={JSON: ITEM_IN},
    parameters=[IDEMPOTENCY_KEY],
    secured=True,
)
get_item = operation(
    "items",
    {
        "200": _ITEM,
        "304": response("The client's copy is current.", required=("ETag",)),
        "404": NOT_FOUND,
        **READ_ERRORS,
    },
    parameters=[ITEM_ID, IF_NONE_MATCH],
)
_UPDATE_RESPONSES: dict[str, Any] = {
    "200": _ITEM,
    "404": NOT_FOUND,
    "409": CONFLICT,
    "412": PRECONDITION_FAILED,
    **_WRITE_ERRORS,
}
replace_item = operation(
    "items",
    _UPDATE_RESPONSES,
    body={JSON: ITEM_IN},
    parameters=[ITEM_ID, IF_MATCH],
    secured=True,
)
patch_item = operation(
    "items",
    _UPDATE_RESPONSES,
    body={JSON: ITEM_PATCH, MERGE_PATCH: ITEM_PATCH},
    parameters=[ITEM_ID, IF_MATCH],
    secured=True,
)
delete_item = operation(
    "items",
    {
        "204": response("Deleted.", optional=RATE_LIMIT_HEADERS),
        "401": UNAUTHORIZED,
        "403": FORBIDDEN,
        "404": NOT_FOUND,
        "412": PRECONDITION_FAILED,
        **READ_ERRORS,
    },
    parameters=[ITEM_ID, IF_MATCH],
    secured=True,
)
