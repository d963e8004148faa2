"""Headers for writes: the one place a bearer token is obtained."""

from __future__ import annotations

import json
import secrets
import subprocess

from harness import REPO_ROOT, BenchError
from harness.options import Options
from harness.servers import Server, request

WRITE_SCOPE = "items:write"


def obtain_write_headers(opts: Options, ours: Server | None) -> dict[str, str]:
    """Headers sent with every write, to both servers.

    Headers given on the command line or in ``BENCH_AUTH_TOKEN`` win. Otherwise,
    with ``--auth auto``, a write without a token is tried on our server; if it
    answers 401, a throwaway user with scope ``items:write`` is created with
    ``python -m app create-user`` and logged in with ``POST /auth``. The
    baseline ignores the header but receives it too, so both servers parse the
    same requests.
    """
    headers = dict(opts.write_headers)
    if "authorization" in {name.lower() for name in headers} or opts.auth == "off" or not ours:
        return headers
    # An empty body: 401 when writes need a token, 422 (and no row) when not.
    status, _, _ = request(ours, "POST", "/items", body={})
    if status != 401:
        return headers
    token = log_in(ours, *create_user(opts, ours))
    print("ours: writes need a token; logged in as a throwaway bench user", flush=True)
    return {**headers, "Authorization": f"Bearer {token}"}


def create_user(opts: Options, server: Server) -> tuple[str, str]:
    username = f"bench-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(24)
    cmd = [opts.python, "-m", "app", "create-user", "--scopes", WRITE_SCOPE, username]
    result = subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        env=server.env,
        input=password + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(
            f"`python -m app create-user` exited {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()[-500:]}"
        )
    return username, password


def log_in(server: Server, username: str, password: str) -> str:
    body = {"username": username, "password": password}
    status, _, data = request(server, "POST", "/auth", body=body)
    if status != 200:
        raise BenchError(f"POST /auth answered {status}: {data[:300]!r}")
    token = json.loads(data).get("access_token")
    if not isinstance(token, str) or not token:
        raise BenchError(f"POST /auth gave no access_token: {data[:300]!r}")
    return token
