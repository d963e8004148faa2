"""Every JSON body is parsed by one strict RFC 8259 parser; text PostgreSQL cannot store, or
a hash cannot take, is refused as a clean 400/422, never a 5xx or a traceback.

Through a real (single-process) Sanic server on a TCP port, shared by the module: its only
state is in the database, reset before each test to one item, which no test may change.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from sanic_testing.reusable import ReusableClient

from app.factory import create_app
from tests.api.items.helpers import Response, assert_problem, error_fields
from tests.support import app_settings, fetch_sql, free_port, run_sql

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"

# How each case breaks a route's body, and what the 400's detail must name. Each is invalid
# per RFC 8259, or not UTF-8 text; the fault sits in a field the route reads, so that a
# lenient parser lets it through to the handler (and the database or a hash function).
MALFORMED: dict[str, tuple[dict[str, bytes], str]] = {
    "leading-zero": ({"number": b"01"}, "leading zero"),
    "leading-zero-negative": ({"number": b"-01"}, "leading zero"),
    "lone-high-surrogate": ({"text": b'"a\\ud800b"'}, "no low surrogate"),
    "lone-low-surrogate": ({"text": b'"a\\udc00b"'}, "invalid high surrogate"),
    "surrogate-as-utf8-bytes": ({"text": b'"a\xed\xa0\x80b"'}, "surrogates not allowed"),
    "nan": ({"number": b"NaN"}, "expected a JSON value"),
    "infinity": ({"number": b"Infinity"}, "expected a JSON value"),
    "minus-infinity": ({"number": b"-Infinity"}, "no digit after sign"),
    "trailing-dot": ({"number": b"1."}, "no digit after decimal point"),
    "empty": ({"whole": b""}, "the body is empty"),
    "only-whitespace": ({"whole": b" \r\n\t"}, "the body is empty"),
    "byte-order-mark": ({"prefix": b"\xef\xbb\xbf"}, "byte order mark"),
    "two-documents": ({"suffix": b" {}"}, "content after document"),
}

ITEM_BODY = b'{"name": %(text)s, "price": %(number)s}'
# Auth bodies have no number: one more member carries it (the handlers ignore others).
LOGIN_BODY = b'{"username": "test-writer", "password": %(text)s, "n": %(number)s}'
TOKEN_BODY = b'{"refresh_token": %(text)s, "n": %(number)s}'

# Every route that reads a JSON body: (method, path, content type, body, extra headers).
ROUTES: dict[str, tuple[str, str, str, bytes, dict[str, str]]] = {
    "create": ("POST", "/items", JSON, ITEM_BODY, {}),
    "create-with-key": ("POST", "/items", JSON, ITEM_BODY, {"Idempotency-Key": "strict-1"}),
    "replace": ("PUT", "/items/1", JSON, ITEM_BODY, {}),
    "patch": ("PATCH", "/items/1", JSON, ITEM_BODY, {}),
    "merge-patch": ("PATCH", "/items/1", MERGE_PATCH, ITEM_BODY, {}),
    "login": ("POST", "/auth", JSON, LOGIN_BODY, {}),
    "refresh": ("POST", "/auth/refresh", JSON, TOKEN_BODY, {}),
    "logout": ("POST", "/auth/logout", JSON, TOKEN_BODY, {}),
}


def _malformed(route: str, case: str) -> bytes:
    fault = MALFORMED[case][0]
    if "whole" in fault:
        return fault["whole"]
    template = ROUTES[route][3]
    body = template % {b"text": fault.get("text", b'"x"'), b"number": fault.get("number", b"1")}
    return fault.get("prefix", b"") + body + fault.get("suffix", b"")


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[ReusableClient]:
    settings = app_settings(database_url, RATE_LIMIT="off", CACHE_ENABLED=False)
    with ReusableClient(create_app(settings), port=free_port()) as client:
        yield client


@pytest.fixture
def api(server: ReusableClient, database_url: str) -> ReusableClient:
    """The module's server, over one item (id 1, version 1) and no idempotency keys."""
    run_sql(
        database_url,
        "DELETE FROM items; DELETE FROM idempotency_keys;"
        "INSERT INTO items (id, name, price) OVERRIDING SYSTEM VALUE VALUES (1, 'untouched', 1)",
    )
    return server


@pytest.fixture
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail the test if the server logged a warning or worse (an unhandled error's traceback)."""
    with caplog.at_level(logging.WARNING):
        yield
    bad = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]


def _send(
    api: ReusableClient,
    write_headers: dict[str, str],
    route: str,
    body: bytes,
    **extra: str | bytes,
) -> Response:
    method, path, content_type, _, headers = ROUTES[route]
    sent: dict[str, Any] = {"content-type": content_type, **headers, **extra}
    if not path.startswith("/auth") or route == "refresh":
        sent = {**write_headers, **sent}  # refresh reads the body after the access token
    _, resp = api.request(path, http_method=method.lower(), content=body, headers=sent)
    return resp


def _unchanged(database_url: str) -> None:
    rows = fetch_sql(database_url, "SELECT id, name, version FROM items ORDER BY id")
    assert [tuple(row) for row in rows] == [(1, "untouched", 1)]
    assert fetch_sql(database_url, "SELECT key FROM idempotency_keys") == []


@pytest.mark.usefixtures("no_errors_logged")
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", MALFORMED)
def test_a_body_that_is_not_rfc_8259_json_is_400_naming_the_fault(
    api: ReusableClient,
    write_headers: dict[str, str],
    database_url: str,
    route: str,
    case: str,
) -> None:
    named = MALFORMED[case][1]
    problem = assert_problem(_send(api, write_headers, route, _malformed(route, case)), 400)
    assert problem["type"] == "/problems/malformed-json"
    assert problem["detail"].startswith("The request body is not valid JSON (RFC 8259): ")
    assert named in problem["detail"], problem["detail"]
    _unchanged(database_url)


@pytest.mark.usefixtures("no_errors_logged")
@pytest.mark.parametrize("route", ["create", "replace", "patch"])
@pytest.mark.parametrize("body", [b"[]", b"null", b"1", b'"item"'])
def test_json_that_is_not_an_object_is_422_not_400(
    api: ReusableClient, write_headers: dict[str, str], database_url: str, route: str, body: bytes
) -> None:
    # Well-formed JSON breaking a rule keeps its 422: only malformed text is a 400.
    problem = assert_problem(_send(api, write_headers, route, body), 422)
    assert problem["type"] == "/problems/validation"
    _unchanged(database_url)


@pytest.mark.usefixtures("no_errors_logged")
@pytest.mark.parametrize("route", ["create", "create-with-key", "replace", "patch"])
@pytest.mark.parametrize("price", [b"1e400", b"-1e400", b"1E+400", b"1e-7", b"1.001", b"1e11"])
def test_a_price_beyond_a_double_or_the_rules_is_422(
    api: ReusableClient,
    write_headers: dict[str, str],
    database_url: str,
    route: str,
    price: bytes,
) -> None:
    # Valid JSON that breaks the price rule (range, 2 decimal places), also beyond what a
    # double holds: a 422 naming the field, never a 400.
    body = b'{"name": "x", "price": ' + price + b"}"
    assert "price" in error_fields(assert_problem(_send(api, write_headers, route, body), 422))
    _unchanged(database_url)


@pytest.mark.usefixtures("no_errors_logged")
@pytest.mark.parametrize("route", ["create", "create-with-key", "replace", "patch"])
@pytest.mark.parametrize("field", ["name", "description", "sku"])
def test_nul_in_any_item_text_is_422_naming_the_field(
    api: ReusableClient, write_headers: dict[str, str], database_url: str, route: str, field: str
) -> None:
    fields = {"name": "ok", "price": 1, field: "bad\u0000text"}
    body = orjson.dumps(fields)
    problem = assert_problem(_send(api, write_headers, route, body), 422)
    assert field in error_fields(problem), problem
    _unchanged(database_url)


@pytest.mark.usefixtures("no_errors_logged")
@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("login", b'{"username": "test-writer\\u0000", "password": "x"}', "username"),
        ("login", b'{"username": "test-writer", "password": "correct\\u0000"}', "password"),
        ("refresh", b'{"refresh_token": "abc\\u0000def"}', "refresh_token"),
        ("logout", b'{"refresh_token": "abc\\u0000def"}', "refresh_token"),
    ],
)
def test_nul_in_a_credential_is_400_before_any_hash(
    api: ReusableClient, write_headers: dict[str, str], route: str, body: bytes, field: str
) -> None:
    problem = assert_problem(_send(api, write_headers, route, body), 400)
    assert problem["type"] == "/problems/bad-auth-request"
    assert f'"{field}" must not contain NUL' in problem["detail"]


def _cursor(payload: bytes) -> str:
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode()


NUL_IN_KEY = _cursor(b'["created_at", "2026-01-01\\u0000", 1]')
NUL_AFTER = _cursor(b'["id", 1, 1]\x00')
SURROGATE_IN_KEY = _cursor(b'["price", "1\\ud800", 1]')


@pytest.mark.usefixtures("no_errors_logged")
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("q=a%00b", "q"),
        ("sort=id%00", "sort"),
        (f"sort=created_at&cursor={NUL_IN_KEY}", "cursor"),
        (f"cursor={NUL_AFTER}", "cursor"),
        (f"sort=price&cursor={SURROGATE_IN_KEY}", "cursor"),
        ("min_price=1%000", "min_price"),
        ("max_price=%00", "max_price"),
        ("limit=1%00", "limit"),
    ],
)
def test_nul_or_a_surrogate_in_a_query_parameter_is_400_naming_it(
    api: ReusableClient, query: str, field: str
) -> None:
    _, resp = api.get(f"/items?{query}")
    assert field in error_fields(assert_problem(resp, 400))


@pytest.mark.usefixtures("no_errors_logged")
@pytest.mark.parametrize(
    ("route", "header", "value", "status"),
    [
        ("create", "content-type", b"\xff", 415),
        ("login", "content-type", b"application/\xffjson", 415),
        ("patch", "content-type", b"\xfe\xff", 415),
        ("create", "idempotency-key", b"k\xff", 400),
        ("replace", "if-match", b'"v\xff"', 412),
        ("replace", "if-match", '"v\u0661"'.encode(), 412),
        ("replace", "if-match", b'"v01"', 412),
    ],
)
def test_header_bytes_that_are_not_our_text_are_a_clean_4xx(
    api: ReusableClient,
    write_headers: dict[str, str],
    database_url: str,
    route: str,
    header: str,
    value: bytes,
    status: int,
) -> None:
    # Sanic keeps bytes that are not UTF-8 as surrogates: quoting one in a problem's detail,
    # or encoding it anywhere, must not fail.
    resp = _send(api, write_headers, route, b'{"name": "x", "price": 1}', **{header: value})
    assert_problem(resp, status)
    _unchanged(database_url)


@pytest.mark.usefixtures("no_errors_logged")
@pytest.mark.parametrize("token", [b"eyJ\xff.e30.x", "eyJ\u0661.e30.x".encode()])
def test_a_bearer_token_that_is_not_ascii_is_401_on_writes_and_anonymous_on_reads(
    api: ReusableClient, database_url: str, token: bytes
) -> None:
    bad = {"authorization": b"Bearer " + token}
    json_bad = {**bad, "content-type": "application/json"}
    _, resp = api.request(
        "/items", http_method="post", content=b'{"name": "x", "price": 1}', headers=json_bad
    )
    assert_problem(resp, 401)
    assert "WWW-Authenticate" in resp.headers
    _, resp = api.request("/items", http_method="get", headers=bad)
    assert resp.status == 200, resp.text
    _unchanged(database_url)
