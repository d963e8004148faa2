"""Request and response models: pydantic validates input; output is plain rows."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
)

MAX_PRICE = Decimal("9999999999.99")
MAX_QUANTITY = 2_147_483_647

# C0 and C1 control characters plus DEL; PostgreSQL also refuses NUL in text.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Free text may span lines and use tabs, but never NUL or other control characters.
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _strict_text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _clean_name(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    if len(value) > 200:
        raise ValueError("must be at most 200 characters after trimming")
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _clean_description(value: str) -> str:
    if _TEXT_CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _json_number(value: Any) -> Any:
    # Accept JSON numbers only: a string, bool or null price is a client bug, not a price.
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError("must be a number")
    return value


def _json_integer(value: Any) -> Any:
    # sanic-ext validates with strict=False, which overrides a field's own `strict=True`:
    # without this, false, 1.0 and "1" would all pass as quantities.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    return value


_CENT = Decimal("0.01")


def _two_places(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("must be a finite number")
    cents = value.quantize(_CENT)
    if value != cents:
        raise ValueError("must have at most 2 decimal places")
    return cents


# The JSON Schema of each rule, for the OpenAPI document: it must accept exactly what the
# validators accept, or API clients and the contract fuzzer are misled.
# Python's str.strip() removes these; the name is 1-200 other characters once stripped.
_STRIPPED = r"\t-\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_NAME_EDGE = r"[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
NAME_JSON_SCHEMA = {
    "type": "string",
    "pattern": rf"^[{_STRIPPED}]*{_NAME_EDGE}(?:[^\x00-\x1f\x7f-\x9f]{{0,198}}{_NAME_EDGE})?"
    rf"[{_STRIPPED}]*$",
    "description": "1-200 characters after trimming surrounding whitespace; no control characters.",
}
DESCRIPTION_JSON_SCHEMA = {
    "type": "string",
    "maxLength": 2000,
    "pattern": r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$",
    "description": "Free text; tabs and line breaks allowed, other control characters not.",
}
SKU_JSON_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_-]+$"}
PRICE_JSON_SCHEMA = {
    "type": "number",
    "minimum": 0,
    "maximum": float(MAX_PRICE),
    "multipleOf": 0.01,
    "description": "A JSON number with at most 2 decimal places, stored exactly.",
}

Name = Annotated[
    str,
    BeforeValidator(_strict_text),
    AfterValidator(_clean_name),
    WithJsonSchema(NAME_JSON_SCHEMA),
]
Description = Annotated[
    str,
    BeforeValidator(_strict_text),
    Field(max_length=2000),
    AfterValidator(_clean_description),
    WithJsonSchema(DESCRIPTION_JSON_SCHEMA),
]
Sku = Annotated[
    str,
    BeforeValidator(_strict_text),
    Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$"),
    WithJsonSchema(SKU_JSON_SCHEMA),
]
Price = Annotated[
    Decimal,
    BeforeValidator(_json_number),
    Field(ge=0, le=MAX_PRICE, allow_inf_nan=False),
    AfterValidator(_two_places),
    WithJsonSchema(PRICE_JSON_SCHEMA),
]
Quantity = Annotated[
    int,
    BeforeValidator(_json_integer),
    Field(ge=0, le=MAX_QUANTITY, strict=True),
    WithJsonSchema({"type": "integer", "minimum": 0, "maximum": MAX_QUANTITY}),
]


class ItemIn(BaseModel):
    """A whole item as the client sends it (create and full replace)."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Description = ""
    sku: Sku | None = None
    price: Price
    quantity: Quantity = 0


class ItemPatch(BaseModel):
    """A partial update: only the fields present change; `null` resets an optional field."""

    model_config = ConfigDict(extra="forbid")

    # `null` is refused for the two required fields, so the document offers no null for them.
    name: Annotated[Name | None, WithJsonSchema(NAME_JSON_SCHEMA)] = None
    description: Description | None = None
    sku: Sku | None = None
    price: Annotated[Price | None, WithJsonSchema(PRICE_JSON_SCHEMA)] = None
    quantity: Quantity | None = None

    @field_validator("name", "price")
    @classmethod
    def _required_not_null(cls, value: Any) -> Any:
        # Only runs for fields the client sent: a required field cannot be removed.
        if value is None:
            raise ValueError("may not be null")
        return value

    def changes(self) -> dict[str, Any]:
        """The columns to write, with `null` turned into each optional field's default."""
        sent = self.model_dump(exclude_unset=True)
        if sent.get("description", "") is None:
            sent["description"] = ""
        if "quantity" in sent and sent["quantity"] is None:
            sent["quantity"] = 0
        return sent


class ItemOut(BaseModel):
    """An item as the server returns it."""

    id: int
    name: str
    description: str
    sku: str | None
    price: float
    quantity: int
    version: int
    created_at: datetime
    updated_at: datetime


class ItemPage(BaseModel):
    """One page of items and the cursor of the next one."""

    items: list[ItemOut]
    next_cursor: str | None
