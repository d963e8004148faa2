"""Start, check, walk and stop the servers under test."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import secrets
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import BASELINE_SERVER, REPO_ROOT, BenchError, log_tail
from harness.options import AT, BASELINE, SERVERS, Options, routes_used

READY_TIMEOUT_S = 90.0
STARTUP_SETTLE_S = 2.0
STOP_TIMEOUT_S = 15.0
BENCH_JWT_SECRET = secrets.token_hex(32)


@dataclass
class Server:
    name: str
    cmd: list[str]
    env: dict[str, str]
    scheme: str
    host: str
    port: int
    log_path: Path
    # Rows in the database it serves: --n-items, or --scale for `X@<N>`.
    n_items: int
    # The settings this server runs with beyond the shared ones (profile, variant, TLS).
    settings: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    list_paths: list[str] = field(default_factory=list)
    write_headers: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        if self.scheme == "https":
            context = ssl.create_default_context()
            # Benchmarks run against a local development certificate.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_env(opts: Options, port: int, extra: dict[str, str]) -> dict[str, str]:
    """The environment both servers share, then `extra` (profile, variant, TLS) on top."""
    return {
        # Production refuses to start without a signing secret; a throwaway one
        # per run, unless the environment brings its own (to match a token).
        "JWT_SECRET": BENCH_JWT_SECRET,
        # A token obtained at the start must outlive the run (default 15 minutes).
        "ACCESS_TOKEN_TTL": "86400",
        **os.environ,
        "DATABASE_URL": opts.database_url,
        "HOST": opts.host,
        "PORT": str(port),
        "WORKERS": str(opts.workers),
        "ENV": "production",
        "DB_POOL_MAX": str(opts.pool_max),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def make_cert(opts: Options, out_dir: Path) -> tuple[Path, Path]:
    """A development certificate from the app's own command; both servers serve it."""
    result = subprocess.run(
        [opts.python, "-m", "app", "gen-cert", "--out", str(out_dir), "--force"],
        cwd=REPO_ROOT,
        env={**os.environ, "ENV": "development"},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"`python -m app gen-cert` exited {result.returncode}: {result.stderr}")
    return out_dir / "fullchain.pem", out_dir / "privkey.pem"


def make_servers(
    opts: Options, log_dir: Path, cert: tuple[Path, Path] | None = None
) -> list[Server]:
    """Ours (with the profile), one copy of ours per variant, and the baseline."""
    plans: list[tuple[str, list[str], dict[str, str], int]] = []
    baseline_cmd = [opts.python, str(BASELINE_SERVER)]
    for name in opts.servers:
        if name == BASELINE:
            plans.append((name, baseline_cmd, {}, opts.n_items))
            continue
        plans.append((name, opts.ours_cmd, opts.profile_env, opts.n_items))
        plans += [
            (v.name, opts.ours_cmd, {**opts.profile_env, **v.env}, opts.n_items)
            for v in opts.variants
        ]
    if opts.scale:
        # The same servers again on the database of `--scale` items.
        on_scale = {"DATABASE_URL": opts.scale_database_url}
        plans += [
            (f"{name}{AT}{opts.scale_label}", cmd, {**settings, **on_scale}, opts.scale)
            for name, cmd, settings, _ in list(plans)
            if name in SERVERS
        ]
    servers = []
    for name, cmd, settings, n_items in plans:
        if cert is not None:
            tls = {"TLS_CERT": str(cert[0]), "TLS_KEY": str(cert[1])}
            # The baseline serves whatever TLS_CERT/TLS_KEY name (bench/baseline/server.py).
            settings = (
                {**settings, **tls}
                if name == BASELINE
                else {"TLS_ENABLED": "true", **settings, **tls}
            )
        port = free_port(opts.host)
        servers.append(
            Server(
                name=name,
                cmd=cmd,
                env=server_env(opts, port, settings),
                scheme=opts.scheme,
                host=opts.host,
                port=port,
                log_path=log_dir / f"server-{name}.log",
                n_items=n_items,
                settings=settings,
            )
        )
    return servers


def start_server(server: Server) -> None:
    spawn_server(server)
    wait_until_ready(server)


def spawn_server(server: Server) -> None:
    print(f"starting {server.name}: {shlex.join(server.cmd)} on {server.base_url}", flush=True)
    # Appended to: with --variant each server starts once per round.
    with server.log_path.open("ab") as log:
        # A new session keeps Ctrl-C in the terminal from reaching the server
        # directly: stop_server() shuts it down in order instead.
        server.process = subprocess.Popen(
            server.cmd,
            cwd=REPO_ROOT,
            env=server.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_until_ready(server: Server, timeout: float = READY_TIMEOUT_S) -> None:
    if server.process is None:
        raise BenchError(f"{server.name}: wait_until_ready() before spawn_server()")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchError(
                f"{server.name} exited with {server.process.returncode} during start-up; "
                f"see {server.log_path}\n{log_tail(server.log_path)}"
            )
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _, _ = request(server, "GET", "/health", timeout=2.0)
            if status == 200:
                # The first worker answers while the others may still be starting,
                # and a SIGTERM in that window can hang Sanic's manager.
                time.sleep(STARTUP_SETTLE_S)
                return
        time.sleep(0.2)
    raise BenchError(
        f"{server.name} not ready after {timeout:.0f}s; see {server.log_path}\n"
        f"{log_tail(server.log_path)}"
    )


def stop_server(server: Server) -> None:
    """SIGTERM the main PID only (a second one unsticks a hung start), then SIGKILL."""
    process = server.process
    if process is None or process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGTERM, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            print(f"{server.name} still running after {sig.name}", file=sys.stderr)
    # Last resort: the server's own session holds only the processes we started.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=5.0)
    print(f"{server.name} killed with SIGKILL", file=sys.stderr)


@contextlib.contextmanager
def running(servers: list[Server]) -> Iterator[None]:
    try:
        for server in servers:
            start_server(server)
        yield
    finally:
        for server in reversed(servers):
            stop_server(server)


def request(
    server: Server,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    conn = server.connection(timeout=timeout)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        all_headers = {"Content-Type": "application/json", **(headers or {})} if body else {}
        conn.request(method, path, body=payload, headers=all_headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def preflight(server: Server, opts: Options) -> None:
    """Fail fast, with the reason, if a route does not answer as the scenarios expect."""
    checks: dict[str, tuple[str, str, dict[str, Any] | None, int]] = {
        "get": ("GET", f"/items/{server.n_items}", None, 200),
        "list": ("GET", "/items?limit=20", None, 200),
        "create": ("POST", "/items", {"name": "bench preflight", "price": 1.5}, 201),
    }
    for route in sorted(routes_used(opts)):
        method, path, body, expected = checks[route]
        headers = server.write_headers if method == "POST" else None
        status, _, data = request(server, method, path, body=body, headers=headers)
        if status != expected:
            hint = ""
            if status in (401, 403):
                hint = " (a token is missing or lacks scope: see --auth, BENCH_AUTH_TOKEN)"
            raise BenchError(
                f"{server.name}: {method} {path} answered {status}, expected {expected}"
                f"{hint}: {data[:300]!r}"
            )


def collect_list_paths(server: Server, opts: Options) -> list[str]:
    """Walk the list endpoint and sample cursors spread over the whole table.

    Cursors are opaque and each server's format differs, so each server is
    walked on its own. The page size is chosen to give about ``opts.cursors``
    pages for the table size (max 100), then pages are sampled evenly.
    """
    limit = max(1, min(100, server.n_items // opts.cursors))
    cursors: list[str] = []
    cursor: str | None = None
    conn = server.connection()
    started = time.monotonic()
    try:
        pages = itertools.count() if opts.max_walk_pages <= 0 else range(opts.max_walk_pages)
        for _ in pages:
            query = {"limit": str(limit)}
            if cursor:
                query["cursor"] = cursor
            conn.request("GET", "/items?" + urllib.parse.urlencode(query))
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                raise BenchError(f"{server.name}: list walk got {response.status}: {data[:300]!r}")
            cursor = json.loads(data).get("next_cursor")
            if not cursor:
                break
            cursors.append(cursor)
    finally:
        conn.close()
    step = max(1, len(cursors) // opts.cursors)
    sampled = cursors[::step][: opts.cursors]
    print(
        f"{server.name}: walked {len(cursors) + 1} pages of {limit} in "
        f"{time.monotonic() - started:.1f}s, sampled {len(sampled)} cursors",
        flush=True,
    )
    if cursor:
        print(
            f"{server.name}: stopped at --max-walk-pages {opts.max_walk_pages}; "
            "cursors cover only the start of the table",
            flush=True,
        )
    paths = ["/items?limit=20"]
    paths += ["/items?" + urllib.parse.urlencode({"limit": "20", "cursor": c}) for c in sampled]
    return paths
