"""Every field rule of an item, at and just past its boundary."""

from __future__ import annotations

from typing import Any

import pytest
from sanic_testing.reusable import ReusableClient

from tests.api.items.helpers import JSON_HEADERS, assert_rejected_field, create, valid_item
from tests.support import fetch_sql

MAX_PRICE = 9999999999.99
MAX_QUANTITY = 2_147_483_647


def post(client: ReusableClient, body: dict[str, Any]) -> Any:
    _, resp = client.post("/items", json=body)
    return resp


# name


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("a", "a"),
        ("x" * 200, "x" * 200),
        ("   " + "x" * 200 + "   ", "x" * 200),
        ("é" * 200, "é" * 200),
    ],
    ids=["1-char", "200-chars", "200-after-trimming", "200-non-ascii"],
)
def test_name_of_1_to_200_characters_after_trimming_is_accepted(
    client: ReusableClient, sent: str, stored: str
) -> None:
    resp = post(client, valid_item(name=sent))
    assert resp.status == 201, resp.text
    assert resp.json["name"] == stored


def test_name_is_stored_trimmed(client: ReusableClient, clean_db: str) -> None:
    item = create(client, name="  Widget \t")
    assert item["name"] == "Widget"
    rows = fetch_sql(clean_db, "SELECT name FROM items WHERE id = $1", item["id"])
    assert rows[0]["name"] == "Widget"


@pytest.mark.parametrize(
    "name",
    ["", "   ", "\t \n", "x" * 201, "  " + "x" * 201 + "  "],
    ids=["empty", "blank", "whitespace-only", "201-chars", "201-after-trimming"],
)
def test_name_empty_blank_or_over_200_characters_is_rejected(
    client: ReusableClient, name: str
) -> None:
    assert_rejected_field(post(client, valid_item(name=name)), "name")


@pytest.mark.parametrize(
    "name",
    ["a\x00b", "a\nb", "a\tb", "a\x1bb", "a\x7fb", "a\x85b", "a\x9fb"],
    ids=["NUL", "newline", "tab", "escape", "DEL", "C1-NEL", "C1-APC"],
)
def test_name_with_a_control_character_is_rejected(client: ReusableClient, name: str) -> None:
    assert_rejected_field(post(client, valid_item(name=name)), "name")


@pytest.mark.parametrize("name", [None, 42, True, ["a"]], ids=["null", "number", "bool", "list"])
def test_name_that_is_not_a_string_is_rejected(client: ReusableClient, name: object) -> None:
    assert_rejected_field(post(client, valid_item(name=name)), "name")


def test_missing_name_is_rejected(client: ReusableClient) -> None:
    assert_rejected_field(post(client, {"price": 1}), "name")


# description


def test_description_defaults_to_empty_string(client: ReusableClient) -> None:
    assert create(client)["description"] == ""


@pytest.mark.parametrize("length", [0, 1, 2000])
def test_description_up_to_2000_characters_is_accepted(client: ReusableClient, length: int) -> None:
    assert create(client, description="d" * length)["description"] == "d" * length


def test_description_of_2000_multibyte_characters_is_accepted(client: ReusableClient) -> None:
    assert create(client, description="€" * 2000)["description"] == "€" * 2000


def test_description_of_2001_characters_is_rejected(client: ReusableClient) -> None:
    assert_rejected_field(post(client, valid_item(description="d" * 2001)), "description")


def test_description_may_span_lines(client: ReusableClient) -> None:
    assert create(client, description="one\ntwo\r\n\tthree")["description"] == "one\ntwo\r\n\tthree"


@pytest.mark.parametrize("text", ["a\x00b", "a\x1bb", "a\x7fb"], ids=["NUL", "escape", "DEL"])
def test_description_with_a_control_character_is_rejected(
    client: ReusableClient, text: str
) -> None:
    assert_rejected_field(post(client, valid_item(description=text)), "description")


def test_description_that_is_not_a_string_is_rejected(client: ReusableClient) -> None:
    assert_rejected_field(post(client, valid_item(description=12)), "description")


# sku


@pytest.mark.parametrize(
    "sku",
    ["A", "x" * 64, "Az09-_", "-", "_"],
    ids=["1-char", "64-chars", "every-class", "dash", "underscore"],
)
def test_sku_of_1_to_64_allowed_characters_is_accepted(client: ReusableClient, sku: str) -> None:
    assert create(client, sku=sku)["sku"] == sku


@pytest.mark.parametrize(
    "sku",
    ["", "x" * 65, "a b", "a.b", "a/b", "é", "abc\n", " abc", "a+b"],
    ids=[
        "empty",
        "65-chars",
        "space",
        "dot",
        "slash",
        "non-ascii",
        "newline",
        "lead-space",
        "plus",
    ],
)
def test_sku_empty_too_long_or_outside_the_charset_is_rejected(
    client: ReusableClient, sku: str
) -> None:
    assert_rejected_field(post(client, valid_item(sku=sku)), "sku")


def test_sku_that_is_not_a_string_is_rejected(client: ReusableClient) -> None:
    assert_rejected_field(post(client, valid_item(sku=123)), "sku")


def test_sku_defaults_to_null(client: ReusableClient) -> None:
    assert create(client)["sku"] is None


def test_sku_may_be_null(client: ReusableClient) -> None:
    assert create(client, sku=None)["sku"] is None


def test_two_items_without_sku_are_both_accepted(client: ReusableClient) -> None:
    first = create(client, sku=None)
    second = create(client)
    assert first["id"] != second["id"]


def test_duplicate_sku_is_a_conflict(client: ReusableClient) -> None:
    create(client, sku="ABC-1")
    _, resp = client.post("/items", json=valid_item(sku="ABC-1"))
    assert resp.status == 409


def test_sku_uniqueness_is_case_sensitive(client: ReusableClient) -> None:
    create(client, sku="abc")
    assert create(client, sku="ABC")["sku"] == "ABC"


# price


@pytest.mark.parametrize(
    "price", [0, 0.0, 0.01, 5, MAX_PRICE], ids=["zero", "zero-float", "cent", "int", "max"]
)
def test_price_from_0_to_the_maximum_is_accepted(client: ReusableClient, price: float) -> None:
    assert create(client, price=price)["price"] == price


@pytest.mark.parametrize(
    "price",
    [-0.01, 10000000000.00, 10000000000, -1],
    ids=["minus-cent", "max-plus-cent", "max-plus-cent-int", "negative"],
)
def test_price_outside_0_to_the_maximum_is_rejected(client: ReusableClient, price: float) -> None:
    assert_rejected_field(post(client, valid_item(price=price)), "price")


@pytest.mark.parametrize("raw", [b"1.005", b"0.001", b"9999999999.999", b"19.991"])
def test_price_with_more_than_2_decimal_places_is_rejected(
    client: ReusableClient, raw: bytes
) -> None:
    body = b'{"name": "Widget", "price": ' + raw + b"}"
    _, resp = client.post("/items", content=body, headers=JSON_HEADERS)
    assert_rejected_field(resp, "price")


@pytest.mark.parametrize(
    "price",
    ["1.00", "", True, False, None, [1], {"amount": 1}],
    ids=["string", "empty-string", "true", "false", "null", "list", "object"],
)
def test_price_that_is_not_a_json_number_is_rejected(client: ReusableClient, price: object) -> None:
    assert_rejected_field(post(client, valid_item(price=price)), "price")


@pytest.mark.parametrize("raw", [b"1e400", b"-1e400"])
def test_price_that_overflows_a_float_is_rejected(client: ReusableClient, raw: bytes) -> None:
    body = b'{"name": "Widget", "price": ' + raw + b"}"
    _, resp = client.post("/items", content=body, headers=JSON_HEADERS)
    assert_rejected_field(resp, "price")


def test_missing_price_is_rejected(client: ReusableClient) -> None:
    assert_rejected_field(post(client, {"name": "Widget"}), "price")


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"0.1", "0.10"),
        (b"0.29", "0.29"),
        (b"19.99", "19.99"),
        (b"1234567890.12", "1234567890.12"),
        (b"9999999999.99", "9999999999.99"),
        (b"1.10", "1.10"),
    ],
)
def test_price_is_stored_and_returned_exactly(
    client: ReusableClient, clean_db: str, raw: bytes, text: str
) -> None:
    body = b'{"name": "Widget", "price": ' + raw + b"}"
    _, resp = client.post("/items", content=body, headers=JSON_HEADERS)
    assert resp.status == 201, resp.text
    assert resp.json["price"] == float(text)
    rows = fetch_sql(
        clean_db, "SELECT price::text AS price FROM items WHERE id = $1", resp.json["id"]
    )
    assert rows[0]["price"] == text
    _, fetched = client.get(f"/items/{resp.json['id']}")
    assert fetched.json["price"] == float(text)


# quantity


def test_quantity_defaults_to_0(client: ReusableClient) -> None:
    assert create(client)["quantity"] == 0


@pytest.mark.parametrize("quantity", [0, 1, MAX_QUANTITY])
def test_quantity_from_0_to_int32_max_is_accepted(client: ReusableClient, quantity: int) -> None:
    assert create(client, quantity=quantity)["quantity"] == quantity


@pytest.mark.parametrize("quantity", [-1, MAX_QUANTITY + 1, 2**63])
def test_quantity_outside_0_to_int32_max_is_rejected(client: ReusableClient, quantity: int) -> None:
    assert_rejected_field(post(client, valid_item(quantity=quantity)), "quantity")


@pytest.mark.parametrize(
    "quantity",
    [1.5, 1.0, "1", True, [1]],
    ids=["fraction", "whole-float", "string", "bool", "list"],
)
def test_quantity_that_is_not_a_json_integer_is_rejected(
    client: ReusableClient, quantity: object
) -> None:
    assert_rejected_field(post(client, valid_item(quantity=quantity)), "quantity")


# unknown and server-assigned fields


@pytest.mark.parametrize("field", ["nmae", "colour", "Name"])
def test_unknown_field_is_rejected(client: ReusableClient, field: str) -> None:
    assert_rejected_field(post(client, valid_item(**{field: "x"})), field)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", 1),
        ("version", 1),
        ("created_at", "2024-01-01T00:00:00Z"),
        ("updated_at", "2024-01-01T00:00:00Z"),
    ],
)
def test_server_assigned_field_in_the_body_is_rejected(
    client: ReusableClient, field: str, value: object
) -> None:
    assert_rejected_field(post(client, valid_item(**{field: value})), field)


def test_every_bad_field_is_named_in_one_response(client: ReusableClient) -> None:
    resp = post(client, {"name": "", "price": -1, "quantity": -1, "sku": "a b", "extra": 1})
    body = resp.json
    assert resp.status == 422
    assert {"name", "price", "quantity", "sku", "extra"} <= {e["field"] for e in body["errors"]}
    assert all(error["message"] for error in body["errors"])


@pytest.mark.parametrize("raw", [b"[]", b'"Widget"', b"42", b"null"])
def test_body_that_is_json_but_not_an_object_is_rejected(
    client: ReusableClient, raw: bytes
) -> None:
    _, resp = client.post("/items", content=raw, headers=JSON_HEADERS)
    assert resp.status == 422
    assert resp.headers["content-type"] == "application/problem+json"


def test_rejected_body_creates_nothing(client: ReusableClient, clean_db: str) -> None:
    post(client, valid_item(price=-1))
    assert fetch_sql(clean_db, "SELECT count(*) AS n FROM items")[0]["n"] == 0


# the same rules on replace and patch


def test_replace_applies_the_field_rules(client: ReusableClient) -> None:
    item = create(client)
    _, resp = client.put(f"/items/{item['id']}", json=valid_item(name="x" * 201))
    assert_rejected_field(resp, "name")


def test_replace_rejects_unknown_fields(client: ReusableClient) -> None:
    item = create(client)
    _, resp = client.put(f"/items/{item['id']}", json=valid_item(id=item["id"]))
    assert_rejected_field(resp, "id")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "   "),
        ("description", "d" * 2001),
        ("sku", "x" * 65),
        ("price", 1.005),
        ("price", "1"),
        ("quantity", MAX_QUANTITY + 1),
        ("quantity", 1.5),
        ("version", 7),
        ("unknown", 1),
    ],
)
def test_patch_applies_the_field_rules(client: ReusableClient, field: str, value: object) -> None:
    item = create(client)
    _, resp = client.patch(f"/items/{item['id']}", json={field: value})
    assert_rejected_field(resp, field)
    _, after = client.get(f"/items/{item['id']}")
    assert after.json == item
