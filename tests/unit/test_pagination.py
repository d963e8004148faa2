"""Cursor encoding and the list query parameters, without a server."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sanic.request import RequestParameters

from app.items.pagination import (
    DEFAULT_LIMIT,
    SORTS,
    QueryError,
    decode_cursor,
    encode_cursor,
    parse_list_query,
)

ROW = {
    "id": 42,
    "price": 1234567890.12,
    "created_at": datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
}


def token(value: object) -> str:
    """A cursor-shaped token the server never issued."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def fields(error: QueryError) -> list[str]:
    return [entry["field"] for entry in error.errors]


# cursors


@pytest.mark.parametrize("sort", SORTS)
def test_cursor_round_trips_the_last_id(sort: str) -> None:
    assert decode_cursor(encode_cursor(sort, ROW), sort).id == 42


@pytest.mark.parametrize("sort", SORTS)
def test_cursor_is_url_safe_without_padding(sort: str) -> None:
    cursor = encode_cursor(sort, ROW)
    assert cursor.isascii()
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize("sort", ["price", "-price"])
@pytest.mark.parametrize("price", [0.0, 0.1, 19.99, 1234567890.12, 9999999999.99])
def test_price_cursor_keeps_the_exact_price(sort: str, price: float) -> None:
    cursor = decode_cursor(encode_cursor(sort, {**ROW, "price": price}), sort)
    assert cursor.key == Decimal(repr(price))


@pytest.mark.parametrize("sort", ["created_at", "-created_at"])
def test_created_at_cursor_keeps_microseconds_and_zone(sort: str) -> None:
    cursor = decode_cursor(encode_cursor(sort, ROW), sort)
    assert cursor.key == ROW["created_at"]
    assert cursor.key.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("issued", "used"),
    [("id", "-id"), ("price", "-price"), ("created_at", "id"), ("-price", "price")],
)
def test_cursor_is_refused_under_another_sort(issued: str, used: str) -> None:
    with pytest.raises(ValueError, match="sort"):
        decode_cursor(encode_cursor(issued, ROW), used)


@pytest.mark.parametrize(
    ("raw", "sort"),
    [
        ("", "id"),
        ("!!!", "id"),
        ("not base64 at all", "id"),
        ("é", "id"),
        (token({"sort": "id"}), "id"),
        (token(["id", 1]), "id"),
        (token(["id", 1, 2, 3]), "id"),
        (token(["id", 1, 2]), "id"),
        (token(["id", 1.0, 1.0]), "id"),
        (token(["id", True, True]), "id"),
        (token(["id", "1", "1"]), "id"),
        (token(["price", "abc", 1]), "price"),
        (token(["price", "NaN", 1]), "price"),
        (token(["price", "Infinity", 1]), "price"),
        (token(["price", None, 1]), "price"),
        (token(["created_at", "2024-01-01T00:00:00", 1]), "created_at"),
        (token(["created_at", "yesterday", 1]), "created_at"),
        (token(["created_at", 1700000000, 1]), "created_at"),
    ],
)
def test_cursor_the_server_never_issued_is_refused(raw: str, sort: str) -> None:
    with pytest.raises(ValueError):
        decode_cursor(raw, sort)


@pytest.mark.parametrize(
    ("raw", "sort"),
    [
        (token(["price", "1E+1000000", 1]), "price"),
        (token(["price", "1E-1000000", 1]), "price"),
        (token(["created_at", "0001-01-01T00:00:00+14:00", 1]), "created_at"),
        (token(["created_at", "9999-12-31T23:59:59-14:00", 1]), "created_at"),
        (token(["id", 2**63, 2**63]), "id"),
        (token(["price", "1", 2**63]), "price"),
    ],
    ids=[
        "huge-price",
        "tiny-price",
        "year-1-east",
        "year-9999-west",
        "id-over-bigint",
        "last-id-over-bigint",
    ],
)
def test_cursor_whose_key_the_database_cannot_hold_is_refused(raw: str, sort: str) -> None:
    with pytest.raises(ValueError):
        decode_cursor(raw, sort)


def test_created_at_cursor_in_another_zone_means_the_same_instant() -> None:
    east = timezone(timedelta(hours=2))
    raw = token(["created_at", "2024-01-01T02:00:00+02:00", 7])
    assert decode_cursor(raw, "created_at").key == datetime(2024, 1, 1, 2, tzinfo=east)


# parse_list_query


def test_no_parameters_give_the_defaults() -> None:
    query = parse_list_query({})
    assert (query.limit, query.sort, query.cursor, query.q) == (DEFAULT_LIMIT, "id", None, None)
    assert (query.min_price, query.max_price) == (None, None)


@pytest.mark.parametrize("limit", ["1", "20", "57", "99", "100"])
def test_limit_from_1_to_100_is_accepted(limit: str) -> None:
    assert parse_list_query({"limit": [limit]}).limit == int(limit)


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1.5", "+5", " 5", "１"])
def test_limit_outside_1_to_100_or_not_an_integer_is_refused(limit: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_list_query({"limit": [limit]})
    assert fields(caught.value) == ["limit"]


@pytest.mark.parametrize("sort", SORTS)
def test_each_sort_is_accepted(sort: str) -> None:
    assert parse_list_query({"sort": [sort]}).sort == sort


@pytest.mark.parametrize("sort", ["name", "ID", "+id", "--id", "price,id"])
def test_unknown_sort_is_refused(sort: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_list_query({"sort": [sort]})
    assert fields(caught.value) == ["sort"]


def test_cursor_is_decoded_for_the_sort() -> None:
    cursor = encode_cursor("-price", ROW)
    query = parse_list_query({"sort": ["-price"], "cursor": [cursor]})
    assert query.cursor is not None
    assert query.cursor.id == 42


def test_q_is_kept_as_sent() -> None:
    assert parse_list_query({"q": ["50%_off"]}).q == "50%_off"


def test_empty_q_is_no_filter() -> None:
    assert parse_list_query({"q": [""]}).q is None


def test_q_of_200_characters_is_accepted() -> None:
    assert parse_list_query({"q": ["x" * 200]}).q == "x" * 200


@pytest.mark.parametrize("q", ["x" * 201, "a\x00b"], ids=["201-chars", "NUL"])
def test_q_too_long_or_with_nul_is_refused(q: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_list_query({"q": [q]})
    assert fields(caught.value) == ["q"]


@pytest.mark.parametrize("name", ["min_price", "max_price"])
@pytest.mark.parametrize("value", ["0", "1.5", "9999999999.99", "1e2", "25E-1"])
def test_price_bound_is_parsed_exactly(name: str, value: str) -> None:
    assert getattr(parse_list_query({name: [value]}), name) == Decimal(value)


@pytest.mark.parametrize("name", ["min_price", "max_price"])
@pytest.mark.parametrize(
    "value",
    ["abc", "", "NaN", "Infinity", "-0.01", "10000000000", "1,5", "1e99999999999999999999"],
)
def test_price_bound_that_is_not_a_price_is_refused(name: str, value: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_list_query({name: [value]})
    assert fields(caught.value) == [name]


@pytest.mark.parametrize("name", ["min_price", "max_price"])
@pytest.mark.parametrize(
    "value",
    [" 1", "1 ", "1_0", "+1", "01", ".5", "1.", "\u0661", "\uff11", "0x1"],
    ids=[
        "space",
        "trailing",
        "underscore",
        "plus",
        "leading-0",
        "no-int",
        "no-frac",
        "arabic",
        "fullwidth",
        "hex",
    ],
)
def test_price_bound_is_a_json_number_only(name: str, value: str) -> None:
    # Decimal() takes all of these; a query's number follows JSON's grammar, in ASCII.
    with pytest.raises(QueryError) as caught:
        parse_list_query({name: [value]})
    assert caught.value.errors == [{"field": name, "message": "must be a number"}]


def test_min_price_above_max_price_is_refused() -> None:
    with pytest.raises(QueryError) as caught:
        parse_list_query({"min_price": ["5"], "max_price": ["4.99"]})
    assert fields(caught.value) == ["min_price"]


def test_every_bad_parameter_is_reported_at_once() -> None:
    with pytest.raises(QueryError) as caught:
        parse_list_query({"limit": ["0"], "sort": ["name"], "max_price": ["x"]})
    assert set(fields(caught.value)) == {"limit", "sort", "max_price"}


def test_parameters_are_read_from_sanic_request_args() -> None:
    # Sanic hands handlers a RequestParameters, whose .get() returns the first value only.
    args = RequestParameters(
        {"sort": ["-price"], "limit": ["57"], "q": ["apple"], "min_price": ["10"]}
    )
    query = parse_list_query(args)
    assert (query.sort, query.limit, query.q, query.min_price) == ("-price", 57, "apple", 10)
