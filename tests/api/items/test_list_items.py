"""GET /items: keyset pagination on every sort, the Link header, and the filters."""

from __future__ import annotations

from base64 import urlsafe_b64encode
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from sanic_testing.reusable import ReusableClient

from tests.api.items.helpers import assert_problem, create, next_link
from tests.support import fetch_sql, run_sql

TOTAL = 57
SORTS = ["id", "-id", "price", "-price", "created_at", "-created_at"]
# Many equal prices and groups of equal created_at values, neither in id order, so that page
# boundaries fall inside runs of equal sort keys. The microseconds check cursor precision.
SEED = f"""
INSERT INTO items (name, price, quantity, created_at, updated_at)
SELECT
    CASE i % 3 WHEN 0 THEN 'Red Apple ' WHEN 1 THEN 'green pear ' ELSE 'APPLE pie ' END
        || lpad(i::text, 2, '0'),
    (ARRAY[0, 1.50, 1.50, 10, 9999999999.99])[(i * 3) % 5 + 1],
    i,
    ts,
    ts
FROM generate_series(1, {TOTAL}) AS i,
    LATERAL (
        SELECT timestamptz '2024-01-01 00:00:00.123456+00' + ((i * 7) % 15) * interval '1 second'
    ) AS t(ts)
"""  # noqa: S608 (constant text)


@dataclass(frozen=True)
class Row:
    id: int
    name: str
    price: Decimal
    created_at: datetime


def expected_order(rows: list[Row], sort: str) -> list[int]:
    """Ids in the order `sort` promises: the key, then id, both reversed by a leading `-`."""
    column = sort.lstrip("-")
    keys: dict[str, Callable[[Row], Any]] = {
        "id": lambda row: row.id,
        "price": lambda row: (row.price, row.id),
        "created_at": lambda row: (row.created_at, row.id),
    }
    ordered = sorted(rows, key=keys[column], reverse=sort.startswith("-"))
    return [row.id for row in ordered]


@pytest.fixture
def seeded(client: ReusableClient, clean_db: str) -> list[Row]:
    """57 rows inserted with SQL, so created_at can tie."""
    del client  # the table must be emptied first
    run_sql(clean_db, SEED)
    records = fetch_sql(clean_db, "SELECT id, name, price, created_at FROM items")
    rows = [Row(r["id"], r["name"], r["price"], r["created_at"]) for r in records]
    assert len({row.price for row in rows}) == 4
    assert len({row.created_at for row in rows}) == 15
    return rows


def get_page(client: ReusableClient, **params: object) -> Any:
    query = urlencode({key: value for key, value in params.items() if value is not None})
    _, resp = client.get(f"/items?{query}" if query else "/items")
    assert resp.status == 200, resp.text
    return resp


def walk(client: ReusableClient, limit: int, **params: object) -> list[int]:
    """Follow next_cursor to the end; every page but the last is full."""
    ids: list[int] = []
    cursor = None
    for _ in range(TOTAL + 2):
        page = get_page(client, limit=limit, cursor=cursor, **params).json
        ids.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            assert len(page["items"]) <= limit
            return ids
        assert len(page["items"]) == limit
    raise AssertionError("the walk never reached a last page")


# walks


@pytest.mark.parametrize("limit", [1, 7, 20, 56, 57, 100])
@pytest.mark.parametrize("sort", SORTS)
def test_walk_visits_every_item_once_in_sort_order(
    client: ReusableClient, seeded: list[Row], sort: str, limit: int
) -> None:
    assert walk(client, limit, sort=sort) == expected_order(seeded, sort)


def test_default_sort_is_by_id(client: ReusableClient, seeded: list[Row]) -> None:
    ids = [item["id"] for item in get_page(client, limit=100).json["items"]]
    assert ids == expected_order(seeded, "id")


def test_default_limit_is_20(client: ReusableClient, seeded: list[Row]) -> None:
    page = get_page(client).json
    assert len(page["items"]) == 20
    assert page["next_cursor"] is not None


@pytest.mark.parametrize("limit", [1, 2, 56, 57, 99, 100])
def test_page_holds_up_to_limit_items(
    client: ReusableClient, seeded: list[Row], limit: int
) -> None:
    page = get_page(client, limit=limit).json
    assert len(page["items"]) == min(limit, len(seeded))


@pytest.mark.parametrize("sort", SORTS)
def test_walk_continues_after_the_last_item_of_a_page_is_deleted(
    client: ReusableClient, seeded: list[Row], sort: str
) -> None:
    first = get_page(client, sort=sort, limit=10).json
    last_id = first["items"][-1]["id"]
    _, deleted = client.delete(f"/items/{last_id}")
    assert deleted.status == 204
    rest: list[int] = []
    cursor = first["next_cursor"]
    while cursor is not None:
        page = get_page(client, sort=sort, limit=10, cursor=cursor).json
        rest.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
    assert rest == expected_order(seeded, sort)[10:]


# the last page


def test_next_cursor_is_null_on_the_last_page(client: ReusableClient, seeded: list[Row]) -> None:
    first = get_page(client, limit=50).json
    last = get_page(client, limit=50, cursor=first["next_cursor"]).json
    assert len(last["items"]) == TOTAL - 50
    assert last["next_cursor"] is None


def test_page_that_ends_exactly_at_the_last_item_has_no_next_cursor(
    client: ReusableClient, seeded: list[Row]
) -> None:
    page = get_page(client, limit=TOTAL).json
    assert len(page["items"]) == TOTAL
    assert page["next_cursor"] is None


def test_empty_collection_is_one_empty_page(client: ReusableClient) -> None:
    resp = get_page(client)
    assert resp.json == {"items": [], "next_cursor": None}
    assert "link" not in resp.headers


def test_listed_items_are_the_items_as_read_one_by_one(client: ReusableClient) -> None:
    made = [create(client, name="One", sku="S-1", quantity=2), create(client, price=0.1)]
    assert get_page(client).json["items"] == made


# the Link header


@pytest.mark.parametrize("sort", SORTS)
def test_link_header_is_present_exactly_when_there_is_a_next_page(
    client: ReusableClient, seeded: list[Row], sort: str
) -> None:
    cursor = None
    while True:
        resp = get_page(client, sort=sort, limit=20, cursor=cursor)
        cursor = resp.json["next_cursor"]
        link = next_link(resp)
        if cursor is None:
            assert link is None
            assert "link" not in resp.headers
            return
        assert link is not None
        assert parse_qs(urlsplit(link).query)["cursor"] == [cursor]


@pytest.mark.parametrize("sort", SORTS)
def test_following_the_link_gives_the_same_page_as_the_cursor(
    client: ReusableClient, seeded: list[Row], sort: str
) -> None:
    first = get_page(client, sort=sort, limit=9)
    link = next_link(first)
    assert link is not None
    _, via_link = client.get(link)
    via_cursor = get_page(client, sort=sort, limit=9, cursor=first.json["next_cursor"])
    assert via_link.status == 200
    assert via_link.json == via_cursor.json
    assert via_link.json["items"]


def test_link_keeps_sort_limit_and_filters(client: ReusableClient, seeded: list[Row]) -> None:
    resp = get_page(client, sort="-price", limit=3, q="apple", min_price="1.5", max_price="10")
    link = next_link(resp)
    assert link is not None
    target = urlsplit(link)
    assert target.path == "/items"
    params = parse_qs(target.query)
    assert params["sort"] == ["-price"]
    assert params["limit"] == ["3"]
    assert params["q"] == ["apple"]
    assert params["min_price"] == ["1.5"]
    assert params["max_price"] == ["10"]


def test_walking_by_link_alone_visits_every_item_once(
    client: ReusableClient, seeded: list[Row]
) -> None:
    ids: list[int] = []
    path: str | None = "/items?sort=-created_at&limit=8"
    while path is not None:
        _, resp = client.get(path)
        assert resp.status == 200, resp.text
        ids.extend(item["id"] for item in resp.json["items"])
        path = next_link(resp)
    assert ids == expected_order(seeded, "-created_at")


# q


def test_q_matches_names_containing_it_ignoring_case(client: ReusableClient) -> None:
    wanted = [create(client, name="Red Apple"), create(client, name="APPLE pie")]
    create(client, name="Banana")
    assert [item["id"] for item in get_page(client, q="aPpLe").json["items"]] == [
        item["id"] for item in wanted
    ]


def test_q_matches_inside_a_name(client: ReusableClient) -> None:
    wanted = create(client, name="Pineapple juice")
    create(client, name="Grape")
    assert [item["id"] for item in get_page(client, q="eapp").json["items"]] == [wanted["id"]]


@pytest.mark.parametrize(
    ("q", "match", "decoy"),
    [
        ("%", "50% off", "500 off"),
        ("_", "a_b", "axb"),
        ("5%", "5% more", "55 more"),
        ("a_c", "a_c", "abc"),
        ("\\", "back\\slash", "backslash"),
    ],
    ids=["percent", "underscore", "percent-suffix", "underscore-inside", "backslash"],
)
def test_q_treats_wildcard_characters_literally(
    client: ReusableClient, q: str, match: str, decoy: str
) -> None:
    wanted = create(client, name=match)
    create(client, name=decoy)
    assert [item["id"] for item in get_page(client, q=q).json["items"]] == [wanted["id"]]


def test_q_without_a_match_gives_an_empty_page(client: ReusableClient) -> None:
    create(client, name="Widget")
    assert get_page(client, q="gadget").json == {"items": [], "next_cursor": None}


def test_q_matches_non_ascii_names_ignoring_case(client: ReusableClient) -> None:
    wanted = create(client, name="Crème Brûlée")
    create(client, name="Creme")
    assert [item["id"] for item in get_page(client, q="BRÛLÉE").json["items"]] == [wanted["id"]]


# min_price and max_price


@pytest.fixture
def priced(client: ReusableClient) -> dict[str, int]:
    """Items priced 0, 1.49, 1.50, 2.50, 5.00, 5.01 and the maximum, by price text."""
    prices = ["0", "1.49", "1.50", "2.50", "5.00", "5.01", "9999999999.99"]
    return {price: create(client, price=float(price))["id"] for price in prices}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"min_price": "1.5"}, ["1.50", "2.50", "5.00", "5.01", "9999999999.99"]),
        ({"max_price": "5"}, ["0", "1.49", "1.50", "2.50", "5.00"]),
        ({"min_price": "1.50", "max_price": "5.00"}, ["1.50", "2.50", "5.00"]),
        ({"min_price": "2.5", "max_price": "2.5"}, ["2.50"]),
        ({"min_price": "0"}, ["0", "1.49", "1.50", "2.50", "5.00", "5.01", "9999999999.99"]),
        ({"max_price": "0"}, ["0"]),
        ({"min_price": "9999999999.99"}, ["9999999999.99"]),
        ({"min_price": "5.02", "max_price": "9999999999.98"}, []),
    ],
    ids=["min", "max", "both", "equal", "min-0", "max-0", "min-max-price", "none-between"],
)
def test_price_filters_are_inclusive(
    client: ReusableClient, priced: dict[str, int], params: dict[str, str], expected: list[str]
) -> None:
    ids = [item["id"] for item in get_page(client, sort="price", **params).json["items"]]
    assert ids == [priced[price] for price in expected]


def test_min_price_equal_to_max_price_is_not_an_error(client: ReusableClient) -> None:
    assert get_page(client, min_price="3", max_price="3").status == 200


def test_price_filter_with_an_extreme_exponent_is_not_a_server_error(
    client: ReusableClient,
) -> None:
    _, resp = client.get("/items?min_price=1e-1000000")
    assert resp.status < 500, resp.text


# filters with sort and cursor


@pytest.mark.parametrize("sort", SORTS)
def test_walk_with_filters_visits_every_match_once_in_sort_order(
    client: ReusableClient, seeded: list[Row], sort: str
) -> None:
    low, high = Decimal("1.5"), Decimal("10")
    matches = [row for row in seeded if "apple" in row.name.lower() and low <= row.price <= high]
    assert 4 < len(matches) < len(seeded)
    ids = walk(client, 4, sort=sort, q="APPLE", min_price=str(low), max_price=str(high))
    assert ids == expected_order(matches, sort)


def test_cursor_of_one_sort_is_refused_by_another(
    client: ReusableClient, seeded: list[Row]
) -> None:
    cursor = get_page(client, sort="created_at", limit=5).json["next_cursor"]
    _, resp = client.get(f"/items?sort=-created_at&limit=5&cursor={cursor}")
    assert "cursor" in [error["field"] for error in assert_problem(resp, 400)["errors"]]


@pytest.mark.parametrize(
    "cursor",
    [
        '["price", "1E+1000000", 1]',
        '["price", "1E-1000000", 1]',
        '["created_at", "0001-01-01T00:00:00+14:00", 1]',
        '["created_at", "9999-12-31T23:59:59-14:00", 1]',
        '["id", 9223372036854775808, 9223372036854775808]',
        '["id", -9223372036854775809, -9223372036854775809]',
    ],
    ids=["huge-price", "tiny-price", "year-1", "year-9999", "id-over", "id-under"],
)
def test_forged_cursor_is_a_bad_request(client: ReusableClient, cursor: str) -> None:
    sort = cursor.split('"')[1]
    token = urlsafe_b64encode(cursor.encode()).rstrip(b"=").decode()
    _, resp = client.get(f"/items?sort={sort}&cursor={token}")
    assert "cursor" in [error["field"] for error in assert_problem(resp, 400)["errors"]]
