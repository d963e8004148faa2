"""The one JSON parser of request bodies: RFC 8259 exactly (no server)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import orjson
import pytest
from sanic import Sanic
from sanic.compat import Header

from app.http.bodies import (
    _OVERFLOW,
    JsonRequest,
    MalformedJson,
    _parse_exact,
    json_object,
    parse_json,
)

# Texts RFC 8259 refuses, or that are not UTF-8: each must be refused by both parsers, orjson
# and the exact one (which sees bodies holding a number beyond a double's range).
REFUSED = [
    b"",
    b"  ",
    b"01",
    b"-01",
    b"1.",
    b".5",
    b"+1",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b'"\\ud800"',
    b'"\\udc00"',
    b'"\xed\xa0\x80"',
    b'"\xff"',
    b'\xef\xbb\xbf{"a": 1}',
    b"{} {}",
    b"{'a': 1}",
    b'{"a": 1,}',
    b'"tab\there"',
    b'"\x00"',
    '{"a": 1}'.encode("utf-16"),
    '{"a": 1}'.encode("utf-16-le"),
    b"[" * 5000 + b"]" * 5000,
]
NON_BLANK = [text for text in REFUSED if text.strip()]


@pytest.mark.parametrize("text", REFUSED)
def test_what_rfc_8259_refuses_is_malformed(text: bytes) -> None:
    with pytest.raises(MalformedJson):
        parse_json(text)


@pytest.mark.parametrize("text", NON_BLANK)
def test_an_inexact_number_beside_it_does_not_make_it_json(text: bytes) -> None:
    # The overflow sends the body to the exact parser as well, which must refuse it too.
    with pytest.raises(MalformedJson):
        parse_json(text + b" 1e400")


@pytest.mark.parametrize("text", NON_BLANK)
def test_the_exact_parser_refuses_the_same_texts(text: bytes) -> None:
    with pytest.raises((ValueError, TypeError, RecursionError)):
        _parse_exact(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (b'{"price": 19.99, "quantity": 5}', {"price": 19.99, "quantity": 5}),
        (b"[1e400, -1e400, 2.5]", [Decimal("1e400"), Decimal("-1e400"), Decimal("2.5")]),
        (b"1E+400", Decimal("1e400")),
        (b"1e-400", 0.0),
        (b"1.0000000000000001", 1.0),
        (b"9999999999.99", 9999999999.99),
        (b'"\\u0000 and \\ud83d\\ude00"', "\x00 and \U0001f600"),
    ],
)
def test_numbers_are_doubles_or_beyond_range_decimals(text: bytes, value: Any) -> None:
    parsed = parse_json(text)
    assert parsed == value
    assert type(parsed) is type(value)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (b"", "the body is empty"),
        (b" \n", "the body is empty"),
        (b'{"price": 01}', "number with leading zero is not allowed (line 1, column 11)"),
        (b'{"name": "\\ud800"}', "surrogate"),
    ],
)
def test_the_error_says_what_is_wrong_and_where(text: bytes, named: str) -> None:
    with pytest.raises(MalformedJson, match=re.escape(named)):
        parse_json(text)


def test_orjson_still_reports_an_overflow_as_the_parser_expects() -> None:
    # parse_json recognises orjson's error by its message: a new wording would make 1e400 a 400.
    with pytest.raises(orjson.JSONDecodeError, match=f"^{_OVERFLOW}"):
        orjson.loads(b'{"price": 1e400}')


@pytest.fixture(scope="module")
def app() -> Sanic[Any, Any]:
    return Sanic("bodies")


def _request(app: Sanic[Any, Any], body: bytes) -> JsonRequest:
    request = JsonRequest(b"/auth", Header(), "1.1", "POST", None, app)
    request.body = body
    return request


@pytest.mark.parametrize(
    ("body", "found"),
    [
        (b'{"username": "a"}', {"username": "a"}),
        (b'{"username": 01}', None),
        (b'{"username": "\\ud800"}', None),
        (b"", None),
        (b'["username"]', None),
        (b"null", None),
    ],
)
def test_json_object_is_the_body_object_or_none_and_never_raises(
    app: Sanic[Any, Any], body: bytes, found: dict[str, str] | None
) -> None:
    assert json_object(_request(app, body)) == found


def test_request_json_raises_what_is_wrong(app: Sanic[Any, Any]) -> None:
    request = _request(app, b'{"price": NaN}')
    with pytest.raises(MalformedJson, match="expected a JSON value"):
        _ = request.json
