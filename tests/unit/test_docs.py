"""The OpenAPI schemas agree with the validators, and come out in the 3.0 dialect."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from app.http.openapi import openapi30
from app.items.schemas import (
    DESCRIPTION_JSON_SCHEMA,
    NAME_JSON_SCHEMA,
    _clean_description,
    _clean_name,
)


def _accepted(clean: object, value: str) -> bool:
    try:
        clean(value)  # type: ignore[operator]
    except ValueError:
        return False
    return True


@given(st.text(max_size=260))
@example(" \t Widget \n")
@example("a" * 200 + "\u3000")
@example("a" * 201)
@example("\x1ca\x85")
@example("a\x01b")
@example("   ")
def test_the_name_pattern_accepts_exactly_what_the_validator_accepts(value: str) -> None:
    documented = re.fullmatch(NAME_JSON_SCHEMA["pattern"], value) is not None
    assert documented == _accepted(_clean_name, value)


@given(st.text(max_size=50))
@example("tabs\tand\r\nbreaks")
@example("bell\x07")
def test_the_description_pattern_accepts_exactly_what_the_validator_accepts(value: str) -> None:
    documented = re.fullmatch(DESCRIPTION_JSON_SCHEMA["pattern"], value) is not None
    assert documented == _accepted(_clean_description, value)


def test_nullable_becomes_the_30_keyword() -> None:
    schema = {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}], "default": None}
    assert openapi30(schema) == {
        "type": "string",
        "maxLength": 3,
        "default": None,
        "nullable": True,
    }


def test_a_nullable_reference_is_wrapped_because_30_ignores_siblings_of_ref() -> None:
    schema = {"anyOf": [{"$ref": "#/components/schemas/X"}, {"type": "null"}]}
    assert openapi30(schema) == {"allOf": [{"$ref": "#/components/schemas/X"}], "nullable": True}


def test_const_becomes_enum_and_a_null_default_of_a_non_nullable_field_goes() -> None:
    assert openapi30({"const": "a", "default": None}) == {"enum": ["a"]}
