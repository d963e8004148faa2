"""The response class of the service's own routes: Sanic's, with cheaper header encoding."""

from __future__ import annotations

from collections.abc import Sequence

from sanic import HTTPResponse
from sanic.helpers import has_message_body
from sanic.response.types import HEADER_TRANSLATION_TABLE

from app.constants import JSON, PROBLEM_JSON

# Encoded header names: this service sets a few dozen distinct names, clients none.
_NAMES: dict[str, bytes] = {}
_MAX_NAMES = 256
# Whole headers whose value the service's configuration fixes (`fixed_header`), encoded once.
_FIXED: dict[tuple[str, str], tuple[bytes, bytes]] = {}


def _sanitize(value: str) -> str:
    if "\r" in value or "\n" in value or "\x00" in value:
        return value.translate(HEADER_TRANSLATION_TABLE)
    return value


def _encoded_name(name: str) -> bytes:
    encoded = _NAMES.get(name)
    if encoded is None:
        encoded = _sanitize(name).encode("ascii")
        if len(_NAMES) < _MAX_NAMES:
            _NAMES[name] = encoded
    return encoded


def fixed_header(name: str, value: str) -> None:
    """Encode `name: value` once; a response carrying exactly that header reuses the bytes.

    For headers most responses carry with a value from code (content types, `connection`),
    never for anything a request chose: the table grows only by these calls.
    """
    _FIXED[(name, value)] = (_encoded_name(name), _sanitize(value).encode(errors="surrogateescape"))


for _content_type in (JSON, PROBLEM_JSON):
    fixed_header("content-type", _content_type)
# Set by Sanic on every HTTP/1.1 response.
fixed_header("connection", "keep-alive")
fixed_header("connection", "close")


EncodedHeaders = Sequence[tuple[bytes, bytes]]


class Response(HTTPResponse):
    """`HTTPResponse` that encodes its headers in about a third of the time, same bytes.

    Sanic strips CR, LF and NUL from every header name and value before sending (no response
    splitting) with `str.translate`, a table lookup per character, then encodes each: 13 % of
    a worker's time on a cached GET /items/{id}, which sends 14 headers. Here a value is
    translated only when it holds one of those characters (no value this service sets does),
    a name is encoded once per process, and a header registered with `fixed_header` is not
    encoded at all. tests/unit/test_responses.py compares the bytes with Sanic's.

    The headers every answer carries (`app.http.middleware.response_headers`: security
    headers, request id, rate limit) come already encoded in `common_headers` and are sent
    after the response's own: nine of those 14 never pass through the header dict.
    """

    __slots__ = ("common_headers",)
    common_headers: EncodedHeaders

    _sanitize_header_value = staticmethod(_sanitize)

    @property
    def processed_headers(self) -> list[tuple[bytes, bytes]]:  # type: ignore[override]
        if has_message_body(self.status):  # type: ignore[no-untyped-call]
            self.headers.setdefault("content-type", self.content_type)
        fixed = _FIXED
        pairs = []
        for name, value in self.headers.items():
            pair = fixed.get((name, value))
            if pair is None:
                pair = (
                    _encoded_name(name),
                    _sanitize(f"{value}").encode(errors="surrogateescape"),
                )
            pairs.append(pair)
        pairs.extend(getattr(self, "common_headers", ()))
        return pairs
