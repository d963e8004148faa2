"""Create, read, replace, patch and delete one item, with its ETag preconditions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sanic_testing.reusable import ReusableClient

from tests.api.items.helpers import assert_problem, assert_rejected_field, create, parse_timestamp
from tests.support import fetch_sql

FULL = {"name": "Widget", "description": "A widget", "sku": "W-1", "price": 19.99, "quantity": 3}
PATCH_TYPES = ["application/json", "application/merge-patch+json"]
WRITE_METHODS = ["PUT", "PATCH", "DELETE"]


def write_kwargs(method: str) -> dict[str, object]:
    """A valid body for `method` (DELETE sends none)."""
    if method == "PUT":
        return {"json": {"name": "Replaced", "price": 1}}
    if method == "PATCH":
        return {"json": {"name": "Patched"}}
    return {}


# create


def test_create_answers_201_with_the_item(client: ReusableClient) -> None:
    _, resp = client.post("/items", json=FULL)
    assert resp.status == 201
    item = resp.json
    assert {key: item[key] for key in FULL} == FULL
    assert item["version"] == 1
    assert isinstance(item["id"], int) and item["id"] >= 1


def test_create_sets_location_to_the_new_item(client: ReusableClient) -> None:
    _, resp = client.post("/items", json=FULL)
    assert resp.headers["location"] == f"/items/{resp.json['id']}"
    _, fetched = client.get(resp.headers["location"])
    assert fetched.json == resp.json


def test_create_sets_the_etag_of_version_1(client: ReusableClient) -> None:
    _, resp = client.post("/items", json=FULL)
    assert resp.headers["etag"] == '"v1"'


def test_create_sets_rfc3339_utc_timestamps_equal_to_each_other(client: ReusableClient) -> None:
    item = create(client)
    created, updated = parse_timestamp(item["created_at"]), parse_timestamp(item["updated_at"])
    assert created.utcoffset() == timedelta(0)
    assert created == updated


def test_create_answers_json(client: ReusableClient) -> None:
    _, resp = client.post("/items", json=FULL)
    assert resp.headers["content-type"].split(";")[0] == "application/json"


def test_create_assigns_increasing_ids(client: ReusableClient) -> None:
    first, second = create(client), create(client)
    assert second["id"] > first["id"]


def test_create_stores_the_row(client: ReusableClient, clean_db: str) -> None:
    item = create(client, **FULL)
    rows = fetch_sql(
        clean_db,
        "SELECT name, description, sku, price::text AS price, quantity, version FROM items",
    )
    assert [dict(row) for row in rows] == [
        {
            "name": "Widget",
            "description": "A widget",
            "sku": "W-1",
            "price": "19.99",
            "quantity": 3,
            "version": item["version"],
        }
    ]


# read


def test_read_answers_200_with_the_item_and_its_etag(client: ReusableClient) -> None:
    item = create(client, **FULL)
    _, resp = client.get(f"/items/{item['id']}")
    assert resp.status == 200
    assert resp.json == item
    assert resp.headers["etag"] == '"v1"'


@pytest.mark.parametrize("if_none_match", ['"v1"', 'W/"v1"', "*", '"v0", "v1"', '"v0", W/"v1"'])
def test_read_with_if_none_match_holding_the_current_etag_is_not_modified(
    client: ReusableClient, if_none_match: str
) -> None:
    item = create(client)
    _, resp = client.get(f"/items/{item['id']}", headers={"If-None-Match": if_none_match})
    assert resp.status == 304
    assert resp.content == b""
    assert resp.headers["etag"] == '"v1"'


@pytest.mark.parametrize("if_none_match", ['"v2"', '"v0"', '"other"', 'W/"v2"'])
def test_read_with_a_stale_if_none_match_answers_200(
    client: ReusableClient, if_none_match: str
) -> None:
    item = create(client)
    _, resp = client.get(f"/items/{item['id']}", headers={"If-None-Match": if_none_match})
    assert resp.status == 200
    assert resp.json == item


def test_read_with_the_etag_of_a_previous_version_answers_200(client: ReusableClient) -> None:
    item = create(client)
    client.patch(f"/items/{item['id']}", json={"quantity": 5})
    _, resp = client.get(f"/items/{item['id']}", headers={"If-None-Match": '"v1"'})
    assert resp.status == 200
    assert resp.json["quantity"] == 5
    assert resp.headers["etag"] == '"v2"'


def test_read_with_if_none_match_of_an_unknown_item_is_not_found(client: ReusableClient) -> None:
    _, resp = client.get("/items/7", headers={"If-None-Match": "*"})
    assert_problem(resp, 404)


# replace


def test_replace_answers_200_with_the_new_item(client: ReusableClient) -> None:
    item = create(client, **FULL)
    new = {"name": "Gadget", "description": "new", "sku": "G-1", "price": 5.5, "quantity": 9}
    _, resp = client.put(f"/items/{item['id']}", json=new)
    assert resp.status == 200
    assert {key: resp.json[key] for key in new} == new
    assert resp.json["id"] == item["id"]


def test_replace_resets_omitted_optional_fields_to_defaults(client: ReusableClient) -> None:
    item = create(client, **FULL)
    _, resp = client.put(f"/items/{item['id']}", json={"name": "Bare", "price": 2})
    assert resp.json["description"] == ""
    assert resp.json["sku"] is None
    assert resp.json["quantity"] == 0


def test_replace_increments_the_version_and_the_etag(client: ReusableClient) -> None:
    item = create(client)
    _, resp = client.put(f"/items/{item['id']}", json={"name": "Bare", "price": 2})
    assert resp.json["version"] == 2
    assert resp.headers["etag"] == '"v2"'


def test_replace_moves_updated_at_and_keeps_created_at(client: ReusableClient) -> None:
    item = create(client)
    _, resp = client.put(f"/items/{item['id']}", json={"name": "Bare", "price": 2})
    assert resp.json["created_at"] == item["created_at"]
    assert parse_timestamp(resp.json["updated_at"]) > parse_timestamp(item["updated_at"])


def test_replace_is_what_a_later_read_returns(client: ReusableClient) -> None:
    item = create(client)
    _, replaced = client.put(f"/items/{item['id']}", json={"name": "Bare", "price": 2})
    _, fetched = client.get(f"/items/{item['id']}")
    assert fetched.json == replaced.json
    assert fetched.headers["etag"] == replaced.headers["etag"]


def test_replace_needs_every_required_field(client: ReusableClient) -> None:
    item = create(client)
    _, resp = client.put(f"/items/{item['id']}", json={"name": "No price"})
    assert_rejected_field(resp, "price")


def test_replace_of_an_unknown_item_is_not_found(client: ReusableClient, clean_db: str) -> None:
    _, resp = client.put("/items/42", json={"name": "Ghost", "price": 1})
    assert_problem(resp, 404)
    assert fetch_sql(clean_db, "SELECT count(*) AS n FROM items")[0]["n"] == 0


# patch


@pytest.mark.parametrize("content_type", PATCH_TYPES)
def test_patch_changes_only_the_fields_sent(client: ReusableClient, content_type: str) -> None:
    item = create(client, **FULL)
    _, resp = client.patch(
        f"/items/{item['id']}", content=b'{"quantity": 7}', headers={"content-type": content_type}
    )
    assert resp.status == 200, resp.text
    expected = {**item, "quantity": 7, "version": 2, "updated_at": resp.json["updated_at"]}
    assert resp.json == expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "  Renamed  "),
        ("description", "changed"),
        ("sku", "NEW-SKU"),
        ("price", 0.5),
        ("quantity", 2147483647),
    ],
)
def test_patch_sets_each_field(client: ReusableClient, field: str, value: object) -> None:
    item = create(client, **FULL)
    _, resp = client.patch(f"/items/{item['id']}", json={field: value})
    assert resp.status == 200, resp.text
    assert resp.json[field] == (value.strip() if isinstance(value, str) else value)


@pytest.mark.parametrize("content_type", PATCH_TYPES)
@pytest.mark.parametrize(
    ("field", "default"), [("description", ""), ("quantity", 0), ("sku", None)]
)
def test_patch_null_resets_an_optional_field_to_its_default(
    client: ReusableClient, content_type: str, field: str, default: object
) -> None:
    item = create(client, **FULL)
    body = b'{"' + field.encode() + b'": null}'
    _, resp = client.patch(
        f"/items/{item['id']}", content=body, headers={"content-type": content_type}
    )
    assert resp.status == 200, resp.text
    assert resp.json[field] == default
    _, fetched = client.get(f"/items/{item['id']}")
    assert fetched.json[field] == default


@pytest.mark.parametrize("content_type", PATCH_TYPES)
@pytest.mark.parametrize("field", ["name", "price"])
def test_patch_null_on_a_required_field_is_rejected(
    client: ReusableClient, content_type: str, field: str
) -> None:
    item = create(client, **FULL)
    body = b'{"' + field.encode() + b'": null}'
    _, resp = client.patch(
        f"/items/{item['id']}", content=body, headers={"content-type": content_type}
    )
    assert_rejected_field(resp, field)
    _, fetched = client.get(f"/items/{item['id']}")
    assert fetched.json == item


@pytest.mark.parametrize("content_type", PATCH_TYPES)
def test_empty_patch_answers_200_and_changes_nothing(
    client: ReusableClient, content_type: str
) -> None:
    item = create(client, **FULL)
    _, resp = client.patch(
        f"/items/{item['id']}", content=b"{}", headers={"content-type": content_type}
    )
    assert resp.status == 200
    assert resp.json == item
    assert resp.headers["etag"] == '"v1"'


def test_patch_increments_the_version_and_the_etag(client: ReusableClient) -> None:
    item = create(client)
    _, resp = client.patch(f"/items/{item['id']}", json={"quantity": 1})
    assert resp.json["version"] == 2
    assert resp.headers["etag"] == '"v2"'


def test_patch_moves_updated_at_and_keeps_created_at(client: ReusableClient) -> None:
    item = create(client)
    _, resp = client.patch(f"/items/{item['id']}", json={"quantity": 1})
    assert resp.json["created_at"] == item["created_at"]
    assert parse_timestamp(resp.json["updated_at"]) > parse_timestamp(item["updated_at"])


def test_every_patch_is_a_new_version(client: ReusableClient) -> None:
    item = create(client)
    for expected in (2, 3, 4):
        _, resp = client.patch(f"/items/{item['id']}", json={"quantity": expected})
        assert resp.json["version"] == expected


def test_patch_of_an_unknown_item_is_not_found(client: ReusableClient) -> None:
    _, resp = client.patch("/items/42", json={"quantity": 1})
    assert_problem(resp, 404)


def test_empty_patch_of_an_unknown_item_is_not_found(client: ReusableClient) -> None:
    _, resp = client.patch("/items/42", json={})
    assert_problem(resp, 404)


# delete


def test_delete_answers_204_with_no_body(client: ReusableClient) -> None:
    item = create(client)
    _, resp = client.delete(f"/items/{item['id']}")
    assert resp.status == 204
    assert resp.content == b""


def test_deleted_item_is_not_found(client: ReusableClient) -> None:
    item = create(client)
    client.delete(f"/items/{item['id']}")
    _, resp = client.get(f"/items/{item['id']}")
    assert_problem(resp, 404)


def test_second_delete_is_not_found(client: ReusableClient) -> None:
    item = create(client)
    client.delete(f"/items/{item['id']}")
    _, resp = client.delete(f"/items/{item['id']}")
    assert_problem(resp, 404)


def test_delete_removes_only_that_item(client: ReusableClient) -> None:
    doomed, kept = create(client), create(client)
    client.delete(f"/items/{doomed['id']}")
    _, resp = client.get(f"/items/{kept['id']}")
    assert resp.json == kept


# If-Match


@pytest.mark.parametrize("method", WRITE_METHODS)
@pytest.mark.parametrize("if_match", ['"v1"', "*", '"v0", "v1"', '"v0","v1"'])
def test_write_with_a_matching_if_match_succeeds(
    client: ReusableClient, method: str, if_match: str
) -> None:
    item = create(client)
    _, resp = client.request(
        f"/items/{item['id']}",
        http_method=method.lower(),
        headers={"If-Match": if_match},
        **write_kwargs(method),
    )
    assert resp.status == (204 if method == "DELETE" else 200), resp.text


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_weak_etag_never_matches_if_match(client: ReusableClient, method: str) -> None:
    item = create(client)
    _, resp = client.request(
        f"/items/{item['id']}",
        http_method=method.lower(),
        headers={"If-Match": 'W/"v1"'},
        **write_kwargs(method),
    )
    assert_problem(resp, 412)


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_if_match_with_the_etag_before_a_change_fails(client: ReusableClient, method: str) -> None:
    item = create(client)
    client.patch(f"/items/{item['id']}", json={"quantity": 1})
    _, resp = client.request(
        f"/items/{item['id']}",
        http_method=method.lower(),
        headers={"If-Match": '"v1"'},
        **write_kwargs(method),
    )
    assert_problem(resp, 412)


def test_etag_from_a_write_satisfies_the_next_if_match(client: ReusableClient) -> None:
    item = create(client)
    _, first = client.patch(f"/items/{item['id']}", json={"quantity": 1})
    _, second = client.patch(
        f"/items/{item['id']}", json={"quantity": 2}, headers={"If-Match": first.headers["etag"]}
    )
    assert second.status == 200
    assert second.json["version"] == 3


def test_empty_patch_with_a_stale_if_match_fails(client: ReusableClient) -> None:
    item = create(client)
    _, resp = client.patch(f"/items/{item['id']}", json={}, headers={"If-Match": '"v2"'})
    assert_problem(resp, 412)


def test_empty_patch_with_a_matching_if_match_succeeds(client: ReusableClient) -> None:
    item = create(client)
    _, resp = client.patch(f"/items/{item['id']}", json={}, headers={"If-Match": '"v1"'})
    assert resp.status == 200
    assert resp.json == item


def test_if_match_failure_leaves_the_item_in_place(client: ReusableClient) -> None:
    item = create(client)
    client.delete(f"/items/{item['id']}", headers={"If-Match": '"v2"'})
    _, resp = client.get(f"/items/{item['id']}")
    assert resp.json == item


def test_delete_with_if_match_of_an_unknown_item_is_not_found(client: ReusableClient) -> None:
    _, resp = client.delete("/items/42", headers={"If-Match": '"v1"'})
    assert_problem(resp, 404)


# HTTP niceties every response shares


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
    ],
)
def test_responses_carry_security_headers(client: ReusableClient, header: str, value: str) -> None:
    item = create(client)
    _, ok = client.get(f"/items/{item['id']}")
    _, missing = client.get("/items/999")
    assert ok.headers[header] == value
    assert missing.headers[header] == value
