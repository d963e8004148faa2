"""Helpers the test suites share: databases, ports, a real server process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from app.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent

# The session's users (tests/conftest.py `auth_tokens`): scope items:write / items:read only.
WRITER = "test-writer"
READER = "test-reader"
TEST_PASSWORD = "correct horse battery staple"


T = TypeVar("T")
# Far above every wait a bounded test expects, far below a hung run.
BOUND = 3.0


async def bounded(awaitable: Awaitable[T], seconds: float = BOUND) -> T:
    """`awaitable`'s result or exception, failing the test if it is still waiting after
    `seconds` (distinct from a TimeoutError the code under test raises)."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        pytest.fail(f"still waiting after {seconds} s: a deadline was never armed")
    return task.result()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _admin(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(with_database(url, "postgres"))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def create_database(server_url: str, name: str) -> str:
    asyncio.run(
        _admin(
            server_url,
            f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
            f'CREATE DATABASE "{name}"',
        )
    )
    return with_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def run_sql(url: str, *statements: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def fetch_sql(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


@contextmanager
def notify_silenced(database_url: str) -> Iterator[None]:
    """Inside, row writes to `items` send no `NOTIFY items_changed` (TRUNCATE still does).

    The caches' LISTEN connections stay up and hear nothing, so a test sees what a write's
    own invalidation does: the notification reaches every worker within milliseconds and
    would hide a write path that invalidates nothing, or only its own worker.
    """
    run_sql(database_url, "ALTER TABLE items DISABLE TRIGGER items_notify_change")
    try:
        yield
    finally:
        run_sql(database_url, "ALTER TABLE items ENABLE TRIGGER items_notify_change")


def server_env(database_url: str, port: int, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "DB_", "WORKERS", "PORT", "HOST"))
    }
    env.update(
        DATABASE_URL=database_url,
        PORT=str(port),
        HOST="127.0.0.1",
        WORKERS="2",
        DB_POOL_MIN="1",
        DB_POOL_MAX="10",
        ENV="development",
        LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


def create_user_cli(
    database_url: str, username: str, scopes: list[str], password: str = TEST_PASSWORD
) -> subprocess.CompletedProcess[str]:
    """`python -m app create-user`, the password piped on stdin as scripts do."""
    env = server_env(database_url, free_port())
    args = [sys.executable, "-m", "app", "create-user", username]
    for scope in scopes:
        args += ["--scopes", scope]
    return subprocess.run(
        args, cwd=ROOT, env=env, input=password + "\n", capture_output=True, text=True, timeout=60
    )


def login(
    base: str, username: str, password: str = TEST_PASSWORD, verify: ssl.SSLContext | bool = True
) -> dict[str, str]:
    """The token response of `POST /auth` on a real server."""
    body = {"username": username, "password": password}
    resp = httpx.post(f"{base}/auth", json=body, verify=verify)
    assert resp.status_code == 200, resp.text
    tokens: dict[str, str] = resp.json()
    return tokens


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Server:
    """A running `python -m app serve`: its base URL, process and log file."""

    base: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_once_it_has(self, *needles: str, timeout: float = 5.0) -> str:
        """The log, once every needle is in it (access lines are flushed every 0.1 s)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            if all(needle in text for needle in needles) or time.monotonic() > deadline:
                return text
            time.sleep(0.05)


@contextmanager
def running_server(
    database_url: str,
    *,
    log_path: Path,
    startup_timeout: float = 30.0,
    tls_ca: Path | None = None,
    **extra: str,
) -> Iterator[str]:
    """`python -m app serve` as a real process; yields its base URL, stops it with SIGTERM.

    `extra` are environment variables; with `tls_ca` (the CA that signed the server's TLS
    certificate) the URL is https and readiness is polled over verified TLS.
    """
    with server_process(
        database_url, log_path=log_path, startup_timeout=startup_timeout, tls_ca=tls_ca, **extra
    ) as server:
        yield server.base


@contextmanager
def server_process(
    database_url: str,
    *,
    log_path: Path,
    startup_timeout: float = 30.0,
    tls_ca: Path | None = None,
    **extra: str,
) -> Iterator[Server]:
    """Like `running_server`, yielding the process too (for tests that signal it)."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"],
            cwd=ROOT,
            env=server_env(database_url, port, **extra),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"{'https' if tls_ca else 'http'}://127.0.0.1:{port}"
        verify = ssl.create_default_context(cafile=str(tls_ca)) if tls_ca else True
        try:
            deadline = time.monotonic() + startup_timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"server exited: {log_path.read_text()}")
                try:
                    ready = httpx.get(f"{base}/health/ready", timeout=1, verify=verify)
                    if ready.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not ready: {log_path.read_text()}")
                time.sleep(0.1)
            yield Server(base, process, log_path)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    # A second SIGTERM ends a manager wedged during start-up (STACK-NOTES).
                    process.send_signal(signal.SIGTERM)
                    try:
                        process.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()


def app_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for an in-process test app: one worker, a small pool, no access log."""
    values: dict[str, Any] = {
        "DATABASE_URL": database_url,
        "WORKERS": 1,
        "DB_POOL_MIN": 1,
        "DB_POOL_MAX": 4,
        "ACCESS_LOG": False,
    }
    values.update(overrides)
    return load_settings(env_file=None, **values)


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_request(
    port: int,
    method: str,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> RawResponse:
    """One HTTP/1.1 request written byte for byte, for what clients libraries tidy up:
    invented methods, `//auth`, absolute-form targets. Header names come back lower-case."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method not in ("GET", "HEAD"):
        lines.append(f"Content-Length: {len(body)}")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall("\r\n".join(lines).encode() + b"\r\n\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, content = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return RawResponse(int(status_line.split()[1]), parsed, content)
