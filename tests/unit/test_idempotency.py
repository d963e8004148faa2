"""Idempotency-Key parsing and request fingerprints (no server)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from app.items.idempotency import CREATE_ITEM, BadIdempotencyKey, fingerprint, key_of
from app.items.schemas import ItemIn


def _request(key: str | None = None) -> Any:
    headers = {} if key is None else {"idempotency-key": key}
    return SimpleNamespace(headers=headers)


def _validated(**body: Any) -> dict[str, Any]:
    return ItemIn.model_validate(body).model_dump()


@pytest.mark.parametrize(
    ("sent", "key"),
    [
        ('"8e03978e-40d5-43e8-bc93-6894a57f9324"', "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        ("8e03978e-40d5-43e8-bc93-6894a57f9324", "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        ("  order:42  ", "order:42"),
    ],
)
def test_a_key_is_taken_with_or_without_the_drafts_quotes(sent: str, key: str) -> None:
    assert key_of(_request(sent)) == key


def test_no_header_means_no_key() -> None:
    assert key_of(_request()) is None


@pytest.mark.parametrize("sent", ["", '""', "two words", "x" * 256, "caf\u00e9", 'a"b'])
def test_a_malformed_key_is_refused(sent: str) -> None:
    with pytest.raises(BadIdempotencyKey):
        key_of(_request(sent))


def test_the_fingerprint_is_of_the_validated_body_not_its_spelling() -> None:
    first = fingerprint(CREATE_ITEM, _validated(name="a", price=1))
    assert first == fingerprint(CREATE_ITEM, _validated(price=1.0, name="a"))
    assert first == fingerprint(CREATE_ITEM, _validated(name=" a ", price=1, quantity=0))
    assert first != fingerprint(CREATE_ITEM, _validated(name="a", price=1.01))
    assert first != fingerprint(CREATE_ITEM, _validated(name="a", price=1, sku="A"))
    assert first != fingerprint("PUT /items/1", _validated(name="a", price=1))
