"""Keyset pagination: list query parameters, sort keys and opaque cursors."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from app.items.schemas import MAX_PRICE

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_QUERY_LENGTH = 200
# A price in a query is a JSON number (RFC 8259), ASCII only: Decimal() alone also takes
# " 1", "1_0", "+1" and digits of other scripts ("\u0661"), none of which a client means.
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")

# sort parameter -> (column, descending)
SORTS: dict[str, tuple[str, bool]] = {
    "id": ("id", False),
    "-id": ("id", True),
    "price": ("price", False),
    "-price": ("price", True),
    "created_at": ("created_at", False),
    "-created_at": ("created_at", True),
}


class QueryError(Exception):
    """A query parameter is malformed; `errors` names each one and why."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("invalid query parameters")
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the previous page ended: its sort, last key value and last id."""

    sort: str
    key: Any
    id: int


@dataclass(frozen=True, slots=True)
class ListQuery:
    limit: int = DEFAULT_LIMIT
    sort: str = "id"
    cursor: Cursor | None = None
    q: str | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None


def encode_cursor(sort: str, row: Mapping[str, Any]) -> str:
    column = SORTS[sort][0]
    key = row[column]
    if column == "price":
        # Rows carry price as a float; NUMERIC(12,2) values round-trip exactly through repr.
        key = repr(key)
    elif column == "created_at":
        key = key.isoformat()
    raw = orjson.dumps([sort, key, row["id"]])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(token: str, sort: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        cursor_sort, key, last_id = orjson.loads(raw)
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise ValueError("is not a cursor this server issued") from exc
    if cursor_sort != sort:
        raise ValueError(f"was issued for sort={cursor_sort!r}, not sort={sort!r}")
    if not isinstance(last_id, int) or isinstance(last_id, bool) or not 0 < last_id < 2**63:
        raise ValueError("is not a cursor this server issued")
    column = SORTS[sort][0]
    try:
        if column == "id":
            if key != last_id:
                raise ValueError
        elif column == "price":
            key = _price(key)
        else:
            key = datetime.fromisoformat(key)
            if key.tzinfo is None:
                raise ValueError
            key = key.astimezone(UTC)
    except (ValueError, TypeError, InvalidOperation, OverflowError) as exc:
        raise ValueError("is not a cursor this server issued") from exc
    return Cursor(sort=sort, key=key, id=last_id)


def _single(args: Mapping[str, Sequence[str]], name: str) -> str | None:
    # Not `args.get(name)`: Sanic's RequestParameters.get() answers the first value, a str,
    # whose last character would then be taken for the value.
    values = args[name] if name in args else None
    if not values:
        return None
    return values[-1]


def _price(value: str) -> Decimal:
    if not _NUMBER.fullmatch(value):
        raise ValueError("must be a number")
    try:
        price = Decimal(value)
    except InvalidOperation:  # an exponent beyond what Decimal holds
        raise ValueError(f"must be between 0 and {MAX_PRICE}") from None
    if not price.is_finite() or not 0 <= price <= MAX_PRICE:
        raise ValueError(f"must be between 0 and {MAX_PRICE}")
    if price != price.quantize(Decimal("0.01")):
        raise ValueError("must have at most 2 decimal places")
    return price


def parse_list_query(args: Mapping[str, Sequence[str]]) -> ListQuery:
    """Parse and check `limit`, `sort`, `cursor`, `q`, `min_price`, `max_price`."""
    errors: list[dict[str, str]] = []
    fields: dict[str, Any] = {}

    if (raw := _single(args, "limit")) is not None:
        if not raw.isascii() or not raw.isdigit():
            errors.append({"field": "limit", "message": "must be an integer"})
        elif not 1 <= int(raw) <= MAX_LIMIT:
            errors.append({"field": "limit", "message": f"must be between 1 and {MAX_LIMIT}"})
        else:
            fields["limit"] = int(raw)

    sort = _single(args, "sort")
    sort = "id" if sort is None else sort
    if sort not in SORTS:
        errors.append({"field": "sort", "message": "must be one of " + ", ".join(SORTS)})
    else:
        fields["sort"] = sort
        if (raw := _single(args, "cursor")) is not None:
            try:
                fields["cursor"] = decode_cursor(raw, sort)
            except ValueError as exc:
                errors.append({"field": "cursor", "message": str(exc)})

    if (raw := _single(args, "q")) is not None:
        if len(raw) > MAX_QUERY_LENGTH:
            errors.append(
                {"field": "q", "message": f"must be at most {MAX_QUERY_LENGTH} characters"}
            )
        elif "\x00" in raw:
            errors.append({"field": "q", "message": "must not contain NUL"})
        elif raw:
            fields["q"] = raw

    for name in ("min_price", "max_price"):
        if (raw := _single(args, name)) is not None:
            try:
                fields[name] = _price(raw)
            except ValueError as exc:
                errors.append({"field": name, "message": str(exc)})

    low, high = fields.get("min_price"), fields.get("max_price")
    if low is not None and high is not None and low > high:
        errors.append({"field": "min_price", "message": "must not exceed max_price"})

    if errors:
        raise QueryError(errors)
    return ListQuery(**fields)
