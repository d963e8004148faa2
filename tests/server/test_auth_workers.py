"""Tokens across the workers of a real server: refresh state lives in PostgreSQL."""

from __future__ import annotations

import httpx
import psutil

from tests.support import TEST_PASSWORD, bearer, create_user_cli

USERNAME = "worker-hopper"


def _server(port: int) -> psutil.Process:
    for proc in psutil.process_iter(["cmdline"]):
        if (proc.info["cmdline"] or [])[-3:] == ["-m", "app", "serve"]:
            try:
                if any(c.laddr.port == port for c in proc.net_connections("tcp")):
                    return proc
            except psutil.Error:
                continue
    raise AssertionError(f"no server process listens on {port}")


def _worker_of(response: httpx.Response, server: psutil.Process) -> int:
    """The pid of the worker holding the (still open) connection `response` came on."""
    client_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    for worker in server.children(recursive=True):
        try:
            conns = worker.net_connections("tcp")
        except psutil.Error:
            continue
        if any(c.raddr and c.raddr.port == client_port for c in conns):
            return worker.pid
    raise AssertionError("no worker holds the connection")


def test_a_token_from_one_worker_refreshes_on_another(live: str, database_url: str) -> None:
    created = create_user_cli(database_url, USERNAME, ["items:write"])
    assert created.returncode == 0, created.stderr
    server = _server(int(live.rsplit(":", 1)[1]))

    with httpx.Client(base_url=live) as first:
        login = first.post("/auth", json={"username": USERNAME, "password": TEST_PASSWORD})
        assert login.status_code == 200, login.text
        login_worker = _worker_of(login, server)
    tokens = login.json()

    # New connections until one lands on the other worker (the split is uneven, not fixed).
    for _ in range(50):
        with httpx.Client(base_url=live) as other:
            probe = other.get("/health")
            if _worker_of(probe, server) == login_worker:
                continue
            refreshed = other.post(
                "/auth/refresh",
                json={"refresh_token": tokens["refresh_token"]},
                headers=bearer(tokens["access_token"]),
            )
            assert _worker_of(refreshed, server) != login_worker
            break
    else:
        raise AssertionError("50 connections all went to the login's worker")
    assert refreshed.status_code == 200, refreshed.text
    write = httpx.post(
        f"{live}/items",
        json={"name": "after refresh", "price": 1},
        headers=bearer(refreshed.json()["access_token"]),
    )
    assert write.status_code == 201, write.text
