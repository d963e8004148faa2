"""Entity tags and the If-Match / If-None-Match header parsing (RFC 9110 section 13)."""

from __future__ import annotations

import pytest

from app.items.conditional import etag, if_match, none_match


def test_etag_is_a_strong_quoted_version() -> None:
    assert etag(1) == '"v1"'
    assert etag(2147483647) == '"v2147483647"'


def test_absent_if_match_is_no_precondition() -> None:
    assert if_match(None) is None


@pytest.mark.parametrize("header", ["*", " * "])
def test_if_match_star_accepts_any_version(header: str) -> None:
    precondition = if_match(header)
    assert precondition is not None
    assert precondition.any
    assert precondition.sql_versions() is None


@pytest.mark.parametrize(
    ("header", "versions"),
    [
        ('"v1"', [1]),
        ('"v1", "v2"', [1, 2]),
        (' "v3" ,"v4"', [3, 4]),
        ('"v2147483647"', [2147483647]),
    ],
)
def test_if_match_lists_the_strong_versions(header: str, versions: list[int]) -> None:
    precondition = if_match(header)
    assert precondition is not None
    assert not precondition.any
    assert precondition.sql_versions() == versions


@pytest.mark.parametrize(
    "header",
    [
        'W/"v1"',
        '"1"',
        "v1",
        '"abc"',
        '"v2147483648"',
        '"v99999999999"',
        "",
        '"v-1"',
        '"V1"',
        '"v01"',
        '"v\u0661"',
        '"v\uff11"',
        '\u3000"v1"',
        '"v1"\x0b',
    ],
    ids=[
        "weak",
        "no-v",
        "unquoted",
        "foreign",
        "over-int32",
        "11-digits",
        "empty",
        "negative",
        "upper",
        "leading-zero",
        "arabic-digit",
        "fullwidth-digit",
        "unicode-space",
        "vertical-tab",
    ],
)
def test_if_match_never_matches_weak_or_foreign_tags(header: str) -> None:
    precondition = if_match(header)
    assert precondition is not None
    assert not precondition.any
    assert precondition.sql_versions() == []


def test_if_match_keeps_strong_tags_beside_a_weak_one() -> None:
    precondition = if_match('W/"v1", "v2"')
    assert precondition is not None
    assert precondition.sql_versions() == [2]


def test_absent_if_none_match_never_matches() -> None:
    assert none_match(None, 1) is False


@pytest.mark.parametrize("header", ["*", '"v3"', 'W/"v3"', '"v1", "v3"', '"x", W/"v3"'])
def test_if_none_match_holding_the_version_matches(header: str) -> None:
    assert none_match(header, 3) is True


@pytest.mark.parametrize("header", ['"v2"', 'W/"v4"', '"3"', '"abc"', "", '"v03"', '"v\u0663"'])
def test_if_none_match_without_the_version_does_not_match(header: str) -> None:
    assert none_match(header, 3) is False
