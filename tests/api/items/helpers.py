"""Helpers the API tests share: request shortcuts and problem+json checks."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sanic_testing.reusable import ReusableClient
from sanic_testing.testing import TestingResponse as Response

JSON_HEADERS = {"content-type": "application/json"}
PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "request_id"}
# Text that would betray a leaked stack trace or SQL error.
LEAK_MARKERS = ("Traceback", 'File "', "asyncpg", "psycopg", "SELECT ", "UPDATE ", "INSERT ")
LINK_NEXT = re.compile(r'^<([^>]+)>;\s*rel="next"$')


def valid_item(**overrides: Any) -> dict[str, Any]:
    """A body that passes every field rule, with `overrides` applied."""
    body: dict[str, Any] = {"name": "Widget", "price": 9.99}
    body.update(overrides)
    return body


def create(client: ReusableClient, **fields: Any) -> dict[str, Any]:
    """Create an item through the API and return its body."""
    _, resp = client.post("/items", json=valid_item(**fields))
    assert resp.status == 201, resp.text
    item: dict[str, Any] = resp.json
    return item


def assert_problem(resp: Response, status: int) -> dict[str, Any]:
    """Check the RFC 9457 shape every error shares and return the body."""
    assert resp.status == status, resp.text
    assert resp.headers["content-type"].split(";")[0] == "application/problem+json"
    body: dict[str, Any] = resp.json
    assert PROBLEM_KEYS <= body.keys()
    assert body["status"] == status
    assert body["request_id"] == resp.headers["x-request-id"]
    for marker in LEAK_MARKERS:
        assert marker not in resp.text
    return body


def error_fields(body: dict[str, Any]) -> list[str]:
    """The field each entry of a problem's `errors` list names."""
    return [error["field"] for error in body["errors"]]


def assert_rejected_field(resp: Response, field: str, status: int = 422) -> None:
    """A validation problem whose `errors` name `field`."""
    body = assert_problem(resp, status)
    assert field in error_fields(body), body


def parse_timestamp(value: str) -> datetime:
    """An RFC 3339 UTC timestamp as the API writes it (with a `Z`)."""
    assert value.endswith("Z"), value
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() is not None
    return parsed


def next_link(resp: Response) -> str | None:
    """The target of the `Link: <...>; rel="next"` header, if any."""
    header = resp.headers.get("link")
    if header is None:
        return None
    match = LINK_NEXT.match(header)
    assert match, header
    return match[1]
