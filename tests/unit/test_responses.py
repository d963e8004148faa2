from __future__ import annotations

import pytest
from sanic import HTTPResponse
from sanic.headers import format_http1_response

from app.http.responses import Response, fixed_header

HEADERS = {
    "ETag": '"v1"',
    "RateLimit-Remaining": 999,
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Request-ID": "7d75e313ea3e4403",
    "X-Odd": "caf\u00e9 \t ok",
    "X-Evil": "ok\r\nSet-Cookie: x=1\x00",
    "Bad\r\nName": "v",
}


@pytest.mark.parametrize(
    "value",
    ["", "application/json", '"v12"', "a\r\nSet-Cookie: x=1", "nul\x00in", "\n", "caf\u00e9 \t ok"],
)
def test_headers_are_cleaned_exactly_as_sanic_cleans_them(value: str) -> None:
    assert Response._sanitize_header_value(value) == HTTPResponse._sanitize_header_value(value)


@pytest.mark.parametrize("status", [200, 201, 304, 404])
def test_the_response_head_is_byte_for_byte_sanics(status: int) -> None:
    ours = Response(b"{}", status=status, headers=HEADERS, content_type="application/json")
    sanics = HTTPResponse(b"{}", status=status, headers=HEADERS, content_type="application/json")
    head = format_http1_response(status, ours.processed_headers)
    assert head == format_http1_response(status, sanics.processed_headers)
    assert b"\r\nSet-Cookie" not in head and b"X-Evil: okSet-Cookie: x=1\r\n" in head


def test_a_fixed_header_is_sent_as_sanic_would_send_it_and_only_for_its_own_value() -> None:
    fixed_header("X-Fixed", "one; two")
    for value in ("one; two", "other", "ONE; TWO"):
        headers = {"X-Fixed": value, "x-fixed-too": value, "ETag": '"v3"'}
        ours = Response(b"{}", headers=headers, content_type="application/json")
        sanics = HTTPResponse(b"{}", headers=headers, content_type="application/json")
        head = format_http1_response(200, ours.processed_headers)
        assert head == format_http1_response(200, sanics.processed_headers)
        assert f"X-Fixed: {value}\r\n".encode() in head


def test_common_headers_follow_the_responses_own_as_sanic_would_send_them() -> None:
    own = {"ETag": '"v3"'}
    common = {"X-Frame-Options": "DENY", "X-Request-ID": "7d75e313", "RateLimit-Remaining": "9"}
    ours = Response(b"{}", headers=own, content_type="application/json")
    ours.common_headers = [(name.encode(), value.encode()) for name, value in common.items()]
    sanics = HTTPResponse(b"{}", headers=own, content_type="application/json")
    sanics.headers.update(common)
    head = format_http1_response(200, ours.processed_headers)
    lines = head.split(b"\r\n")
    assert sorted(lines) == sorted(
        format_http1_response(200, sanics.processed_headers).split(b"\r\n")
    )
    assert lines[-4:-2] == [b"X-Request-ID: 7d75e313", b"RateLimit-Remaining: 9"]
