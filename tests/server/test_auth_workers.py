"""Tokens across the workers of a real server: refresh state lives in PostgreSQL."""

from __future__ import annotations

from contextlib import closing

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


def _on_worker(live: str, server: psutil.Process, *, same: bool, as_: int) -> httpx.Client:
    """A client whose connection is held by worker `as_` (same) or by another one."""
    # New connections until one lands where wanted (the split is uneven, not fixed).
    for _ in range(50):
        client = httpx.Client(base_url=live)
        probe = client.get("/health")
        if (_worker_of(probe, server) == as_) == same:
            return client
        client.close()
    raise AssertionError(f"50 connections and none {'on' if same else 'off'} worker {as_}")


def test_a_token_from_one_worker_refreshes_on_another_and_only_once(
    live: str, database_url: str
) -> None:
    created = create_user_cli(database_url, USERNAME, ["items:write"])
    assert created.returncode == 0, created.stderr
    server = _server(int(live.rsplit(":", 1)[1]))

    with httpx.Client(base_url=live) as first:
        login = first.post("/auth", json={"username": USERNAME, "password": TEST_PASSWORD})
        assert login.status_code == 200, login.text
        login_worker = _worker_of(login, server)
    tokens = login.json()

    with closing(_on_worker(live, server, same=False, as_=login_worker)) as other:
        refreshed = other.post(
            "/auth/refresh",
            json={"refresh_token": tokens["refresh_token"]},
            headers=bearer(tokens["access_token"]),
        )
        assert _worker_of(refreshed, server) != login_worker
    assert refreshed.status_code == 200, refreshed.text
    successor = refreshed.json()
    assert successor["refresh_token"] != tokens["refresh_token"]
    write = httpx.post(
        f"{live}/items",
        json={"name": "after refresh", "price": 1},
        headers=bearer(successor["access_token"]),
    )
    assert write.status_code == 201, write.text

    # The login's worker knows the token was used there: a replay revokes the whole login.
    with closing(_on_worker(live, server, same=True, as_=login_worker)) as again:
        replay = again.post(
            "/auth/refresh",
            json={"refresh_token": tokens["refresh_token"]},
            headers=bearer(tokens["access_token"]),
        )
    assert replay.status_code == 401, replay.text
    assert "already used" in replay.json()["detail"]
    revoked = httpx.post(
        f"{live}/auth/refresh",
        json={"refresh_token": successor["refresh_token"]},
        headers=bearer(successor["access_token"]),
    )
    assert revoked.status_code == 401, revoked.text
