"""The one JSON parser of request bodies: RFC 8259 exactly, numbers kept exact (no server)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest

from app.bodies import MalformedJson, _parse_exact, parse_json

# Texts RFC 8259 refuses, or that are not UTF-8: each must be refused by both parsers, the
# fast one and the exact one (which sees bodies holding long or far-exponent numbers).
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
    # The number sends the body to the exact parser as well, which must refuse it too.
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
        (b"[1e400, -1e400]", [Decimal("1e400"), Decimal("-1e400")]),
        (b"1e-400", Decimal("1e-400")),
        (b"1.0000000000000001", Decimal("1.0000000000000001")),
        (b"12345678901234567890", 12345678901234567890),
        (b'{"sku": "1234567890123456", "price": 2.5}', {"sku": "1234567890123456", "price": 2.5}),
        (b'"\\u0000 and \\ud83d\\ude00"', "\x00 and \U0001f600"),
    ],
)
def test_valid_json_parses_with_numbers_exact(text: bytes, value: Any) -> None:
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
