from __future__ import annotations

import pytest
from sanic import HTTPResponse

from app.responses import Response


@pytest.mark.parametrize(
    "value",
    ["", "application/json", '"v12"', "a\r\nSet-Cookie: x=1", "nul\x00in", "\n", "caf\u00e9 \t ok"],
)
def test_headers_are_cleaned_exactly_as_sanic_cleans_them(value: str) -> None:
    assert Response._sanitize_header_value(value) == HTTPResponse._sanitize_header_value(value)


def test_a_header_cannot_split_the_response() -> None:
    response = Response(b"{}", headers={"X-Test": "ok\r\nInjected: yes"})
    assert dict(response.processed_headers)[b"X-Test"] == b"okInjected: yes"
