"""Request limits on a real server: a slow or greedy client cannot hold a worker."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import running_server

# Small limits so the tests see them act; the defaults are in app/settings.py.
LIMITS = {
    "REQUEST_TIMEOUT": "1",
    "KEEP_ALIVE_TIMEOUT": "1",
    "RESPONSE_TIMEOUT": "2",
    "REQUEST_MAX_SIZE": "1024",
    "REQUEST_MAX_HEADER_SIZE": "2048",
}
# Far above the 1 s limits: only a server that never cuts the client off reaches it.
GIVE_UP = 15.0


@pytest.fixture(scope="module")
def limited(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    log_path = Path(tmp_path_factory.mktemp("limits")) / "server.log"
    with running_server(database_url, log_path=log_path, WORKERS="2", **LIMITS) as base:
        yield int(base.rsplit(":", 1)[1])


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=GIVE_UP)
    sock.settimeout(GIVE_UP)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_slow_clients_are_cut_off_and_others_still_served(limited: int) -> None:
    # More stalled connections than workers: each sends half a request head, then nothing.
    stalled = [_connect(limited) for _ in range(20)]
    try:
        for sock in stalled:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        assert httpx.get(f"http://127.0.0.1:{limited}/health", timeout=GIVE_UP).status_code == 200
        for sock in stalled:
            answer = _read_until_closed(sock)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
    finally:
        for sock in stalled:
            sock.close()


def test_a_body_that_never_arrives_is_cut_off(limited: int) -> None:
    # Once the head is in, Sanic is in its handler stage: RESPONSE_TIMEOUT applies (503).
    with _connect(limited) as sock:
        sock.sendall(
            b"POST /items HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 503 "), answer[:80]


def test_an_idle_keep_alive_connection_is_closed(limited: int) -> None:
    with _connect(limited) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:80]


def test_oversized_headers_are_413_problem_json(limited: int) -> None:
    resp = httpx.get(
        f"http://127.0.0.1:{limited}/health", headers={"X-Padding": "a" * 4096}, timeout=GIVE_UP
    )
    assert resp.status_code == 413
    assert resp.headers["content-type"] == "application/problem+json"


def test_an_oversized_body_is_413_problem_json_before_any_auth(limited: int) -> None:
    resp = httpx.post(
        f"http://127.0.0.1:{limited}/items",
        content=b" " * 2048,
        headers={"content-type": "application/json"},
        timeout=GIVE_UP,
    )
    assert resp.status_code == 413
    assert resp.headers["content-type"] == "application/problem+json"
