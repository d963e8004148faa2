"""Idempotency-Key parsing and request fingerprints (no server)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from app.idempotency import BadIdempotencyKey, fingerprint, key_of


def _request(key: str | None = None, body: Any = None, path: str = "/items") -> Any:
    headers = {} if key is None else {"idempotency-key": key}
    return SimpleNamespace(headers=headers, json=body, method="POST", path=path)


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


def test_the_fingerprint_ignores_key_order_but_not_values_or_path() -> None:
    first = fingerprint(_request(body={"name": "a", "price": 1}))
    assert first == fingerprint(_request(body={"price": 1, "name": "a"}))
    assert first != fingerprint(_request(body={"name": "a", "price": 2}))
    assert first != fingerprint(_request(body={"name": "a", "price": 1}, path="/other"))
