"""Hostile bodies and head bytes against `python -m app serve` (2 workers), written byte for
byte: every answer is a 4xx problem, and the server's log holds no traceback or error line.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.writes import write_headers
from tests.support import Server, server_process

GIVE_UP = 30.0
AUTH = write_headers()["Authorization"].encode()
JSON = b"Content-Type: application/json"
BEARER = b"Authorization: " + AUTH

# (request line, header lines, body, status). Bodies the strict parser refuses reach every
# route that reads one; head bytes that are not UTF-8 reach each place that reads them.
CASES: dict[str, tuple[bytes, list[bytes], bytes, int]] = {
    "leading-zero": (b"POST /items", [JSON, BEARER], b'{"name": "x", "price": 01}', 400),
    "surrogate-create": (b"POST /items", [JSON, BEARER], b'{"name": "a\\ud800", "price": 1}', 400),
    "surrogate-patch": (b"PATCH /items/1", [JSON, BEARER], b'{"name": "a\\ud800"}', 400),
    "surrogate-keyed": (
        b"POST /items",
        [JSON, BEARER, b"Idempotency-Key: k-1"],
        b'{"name": "a\\ud800", "price": 1}',
        400,
    ),
    "surrogate-login": (b"POST /auth", [JSON], b'{"username": "a", "password": "\\ud800"}', 400),
    "surrogate-refresh": (
        b"POST /auth/refresh",
        [JSON, BEARER],
        b'{"refresh_token": "\\udc00"}',
        400,
    ),
    "surrogate-logout": (b"POST /auth/logout", [JSON], b'{"refresh_token": "\\ud800"}', 400),
    "nan": (b"POST /items", [JSON, BEARER], b'{"name": "x", "price": NaN}', 400),
    "empty-create": (b"POST /items", [JSON, BEARER], b"", 400),
    "empty-login": (b"POST /auth", [JSON], b"", 400),
    "nul-password": (b"POST /auth", [JSON], b'{"username": "u", "password": "p\\u0000"}', 400),
    "nul-logout": (b"POST /auth/logout", [JSON], b'{"refresh_token": "t\\u0000"}', 400),
    "content-type-bytes": (b"POST /items", [b"Content-Type: \xff", BEARER], b"{}", 415),
    "content-type-bytes-login": (b"POST /auth", [b"Content-Type: \xfe\xff"], b"{}", 415),
    "method-bytes": (b"\xff\xfe /items", [], b"", 405),
    "idempotency-key-bytes": (
        b"POST /items",
        [JSON, BEARER, b"Idempotency-Key: \xff"],
        b'{"name": "x", "price": 1}',
        400,
    ),
    "idempotency-key-nul": (
        b"POST /items",
        [JSON, BEARER, b"Idempotency-Key: a\x00b"],
        b'{"name": "x", "price": 1}',
        400,
    ),
}


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log_path = Path(tmp_path_factory.mktemp("strict-input")) / "server.log"
    with server_process(database_url, log_path=log_path, WORKERS="2", RATE_LIMIT="off") as s:
        yield s


def _exchange(port: int, line: bytes, headers: list[bytes], body: bytes) -> bytes:
    head = [line + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close", *headers]
    if body or line.startswith((b"POST", b"PATCH")):
        head.append(b"Content-Length: %d" % len(body))
    with socket.create_connection(("127.0.0.1", port), timeout=GIVE_UP) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("case", CASES)
def test_hostile_input_is_a_4xx_problem(server: Server, case: str) -> None:
    line, headers, body, status = CASES[case]
    answer = _exchange(server.port, line, headers, body)
    head, _, content = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), answer[:300]
    assert b"content-type: application/problem+json" in head.lower(), head
    assert b"Traceback" not in content


def test_the_log_holds_no_traceback_or_error(server: Server) -> None:
    # After every case above (pytest runs a module in order), the log of both workers: an
    # unhandled error is logged before its response is sent.
    log = server.log()
    errors = [line for line in log.splitlines() if " ERROR " in line or "CRITICAL" in line]
    assert "Traceback" not in log, log[-3000:]
    assert not errors, errors
