"""The field rules of ItemIn and ItemPatch, validated the way sanic-ext's @validate does."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from app.items.schemas import ItemIn, ItemPatch


def validate(model: type[BaseModel], data: dict[str, Any]) -> Any:
    # sanic-ext calls model_validate(data, strict=False): the rules must hold in lax mode too.
    return model.model_validate(data, strict=False)


def rejected_fields(model: type[BaseModel], data: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as caught:
        validate(model, data)
    return {".".join(str(part) for part in error["loc"]) for error in caught.value.errors()}


def item(**overrides: Any) -> dict[str, Any]:
    return {"name": "Widget", "price": 1, **overrides}


def test_defaults_fill_the_optional_fields() -> None:
    model = validate(ItemIn, item())
    assert (model.description, model.sku, model.quantity) == ("", None, 0)


@pytest.mark.parametrize(
    ("name", "stored"), [("a", "a"), ("x" * 200, "x" * 200), (" \t" + "x" * 200 + "\n ", "x" * 200)]
)
def test_name_is_trimmed_and_kept_up_to_200_characters(name: str, stored: str) -> None:
    assert validate(ItemIn, item(name=name)).name == stored


@pytest.mark.parametrize(
    "name", ["", "  ", "x" * 201, "a\x00", "a\nb", "a\x7fb", "a\x9fb", 5, None]
)
def test_name_rule_refuses(name: object) -> None:
    assert rejected_fields(ItemIn, item(name=name)) == {"name"}


def test_description_of_2000_characters_is_accepted() -> None:
    assert validate(ItemIn, item(description="d" * 2000)).description == "d" * 2000


@pytest.mark.parametrize("description", ["d" * 2001, "a\x00b", 5])
def test_description_rule_refuses(description: object) -> None:
    assert rejected_fields(ItemIn, item(description=description)) == {"description"}


@pytest.mark.parametrize("sku", ["a", "x" * 64, "A-z_0", None])
def test_sku_rule_accepts(sku: str | None) -> None:
    assert validate(ItemIn, item(sku=sku)).sku == sku


@pytest.mark.parametrize("sku", ["", "x" * 65, "a b", "a.b", "é", "a\n", 5])
def test_sku_rule_refuses(sku: object) -> None:
    assert rejected_fields(ItemIn, item(sku=sku)) == {"sku"}


@pytest.mark.parametrize(
    ("price", "exact"),
    [
        (0, "0"),
        (0.1, "0.10"),
        (19.99, "19.99"),
        (1234567890.12, "1234567890.12"),
        (9999999999.99, "9999999999.99"),
    ],
)
def test_price_is_kept_exactly(price: float, exact: str) -> None:
    assert validate(ItemIn, item(price=price)).price == Decimal(exact)


@pytest.mark.parametrize(
    "price",
    [-0.01, 10000000000.0, 1.005, 0.001, "1", True, None, float("nan"), float("inf")],
    ids=["negative", "over-max", "3-places", "tiny", "string", "bool", "null", "nan", "inf"],
)
def test_price_rule_refuses(price: object) -> None:
    assert rejected_fields(ItemIn, item(price=price)) == {"price"}


@pytest.mark.parametrize("quantity", [0, 2147483647])
def test_quantity_rule_accepts(quantity: int) -> None:
    assert validate(ItemIn, item(quantity=quantity)).quantity == quantity


@pytest.mark.parametrize(
    "quantity",
    [-1, 2147483648, 1.5, 1.0, "1", True],
    ids=["-1", "over", "fraction", "whole-float", "string", "bool"],
)
def test_quantity_rule_refuses(quantity: object) -> None:
    assert rejected_fields(ItemIn, item(quantity=quantity)) == {"quantity"}


@pytest.mark.parametrize("field", ["id", "version", "created_at", "updated_at", "nmae"])
def test_unknown_or_server_assigned_field_is_refused(field: str) -> None:
    assert rejected_fields(ItemIn, item(**{field: 1})) == {field}


def test_empty_patch_changes_nothing() -> None:
    assert validate(ItemPatch, {}).changes() == {}


def test_patch_changes_only_the_fields_sent() -> None:
    assert validate(ItemPatch, {"quantity": 3, "name": " New "}).changes() == {
        "quantity": 3,
        "name": "New",
    }


@pytest.mark.parametrize(
    ("field", "default"), [("description", ""), ("quantity", 0), ("sku", None)]
)
def test_patch_null_resets_an_optional_field(field: str, default: object) -> None:
    assert validate(ItemPatch, {field: None}).changes() == {field: default}


@pytest.mark.parametrize("field", ["name", "price"])
def test_patch_null_on_a_required_field_is_refused(field: str) -> None:
    assert rejected_fields(ItemPatch, {field: None}) == {field}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("price", 1.005),
        ("quantity", -1),
        ("quantity", "1"),
        ("sku", "a b"),
        ("id", 1),
    ],
)
def test_patch_applies_the_field_rules(field: str, value: object) -> None:
    assert rejected_fields(ItemPatch, {field: value}) == {field}
