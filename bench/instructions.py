"""Instructions a worker executes per request, under callgrind: the figure noise cannot move.

On this shared two-core machine req/s and CPU µs per request move by tens of percent between
runs (bench/README.md); the instructions a worker executes per request do not: the same server
measured twice agrees within about 1 %. For each configuration (the profile's settings, then
each `--variant` on top), this starts our server with one worker under `valgrind
--tool=callgrind` with instrumentation off, warms it with every path of the run twice, turns
instrumentation on in the worker for `--requests` requests over one keep-alive connection,
and reads the total from the dump. Kernel work (the socket calls) is not counted, nor is
anything outside the worker process (PostgreSQL, the client).

With the `cached` profile (the default) every measured request is a cache hit: `CACHE_TTL` is
raised so that no entry expires during the run (valgrind makes a request ~50x slower).

Run from the repository root (valgrind is installed from Debian's package when missing):

    .venv/bin/python bench/instructions.py --variant no-rate-limit:RATE_LIMIT=off
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import BenchError, ensure_command
from harness.database import create_database, migrate, seed
from harness.options import DEFAULT_DATABASE_URL, PROFILES, parse_args, parse_variant
from harness.servers import (
    Server,
    free_port,
    server_env,
    spawn_server,
    stop_server,
    wait_until_ready,
)

# Valgrind starts a worker in about a minute on this machine; several at once share 2 cores.
READY_TIMEOUT_S = 600.0
_TOTALS = re.compile(rb"^totals:\s+(\d+)", re.MULTILINE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cached")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...")
    parser.add_argument("--requests", type=int, default=2000, help="measured per configuration")
    parser.add_argument("--ids", type=int, default=200, help="items seeded; paths cycle over them")
    parser.add_argument("--path", default="/items/{id}", help="request path; {id} is replaced")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    args = parser.parse_args(argv)
    try:
        variants = [parse_variant(raw) for raw in args.variant]
    except ValueError as exc:
        parser.error(str(exc))
    database_url = args.database_url or DEFAULT_DATABASE_URL.replace("items_bench", "items_instr")
    opts = parse_args(["--database-url", database_url, "--workers", "1", "--pool-max", "4"])
    valgrind = ensure_command("valgrind")
    callgrind_control = ensure_command("callgrind_control", "valgrind")
    paths = [args.path.format(id=n) for n in range(1, args.ids + 1)]

    work = Path(tempfile.mkdtemp(prefix="instructions-"))
    asyncio.run(create_database(database_url))
    migrate(opts, work, database_url)
    asyncio.run(seed(database_url, args.ids))

    profile = {**PROFILES[args.profile], "CACHE_TTL": "86400"}
    configs = [(args.profile, profile)] + [(v.name, {**profile, **v.env}) for v in variants]
    servers = []
    for name, settings in configs:
        port = free_port(opts.host)
        cmd = [
            valgrind,
            "--tool=callgrind",
            "--trace-children=yes",
            "--instr-atstart=no",
            f"--callgrind-out-file={work}/{name}.%p",
            opts.python,
            "-m",
            "app",
            "serve",
        ]
        env = server_env(opts, port, settings)
        log = work / f"server-{name}.log"
        servers.append(Server(name, cmd, env, "http", opts.host, port, log, args.ids, settings))
    results: list[tuple[str, int]] = []
    try:
        for server in servers:
            spawn_server(server)
        for server in servers:
            wait_until_ready(server, READY_TIMEOUT_S)
            send(server, paths * 2)  # warm: every path cached, every code path run
            worker = worker_pid(server)
            control = [callgrind_control]
            # vgdb finds a process by the HOST its environment had; the server's sets one.
            control_env = {**os.environ, "HOST": server.env["HOST"]}
            for option in (["-z"], ["-i", "on"]):
                run_quietly([*control, *option, str(worker)], control_env)
            send(server, [paths[i % len(paths)] for i in range(args.requests)])
            for option in (["-i", "off"], ["-d", "measured"]):
                run_quietly([*control, *option, str(worker)], control_env)
            results.append((server.name, total_instructions(work, server.name, worker)))
            print(f"{server.name}: {results[-1][1] // args.requests:,} instructions/request")
    finally:
        for server in servers:
            stop_server(server)
            # Under valgrind a worker may outlive its main process's stop: none is left behind.
            if server.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.process.pid, signal.SIGKILL)
    print(report(results, args.requests, args.path))
    return 0


def run_quietly(cmd: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BenchError(f"`{' '.join(cmd)}` failed:\n{result.stdout}{result.stderr}")


def send(server: Server, paths: list[str]) -> None:
    """GET each path in turn over one keep-alive connection; each must answer 200."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
    try:
        for path in paths:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise BenchError(f"{server.name}: GET {path} answered {response.status}")
    finally:
        conn.close()


def worker_pid(server: Server) -> int:
    """The worker: the process besides the main one that holds the listening socket."""
    main_pid = server.process.pid if server.process is not None else None
    listening = subprocess.run(
        ["ss", "-ltnpH", f"sport = :{server.port}"], capture_output=True, text=True, check=True
    ).stdout
    pids = {int(pid) for pid in re.findall(r"pid=(\d+)", listening)} - {main_pid}
    if len(pids) != 1:
        raise BenchError(f"{server.name}: expected one worker on port {server.port}, got {pids}")
    return pids.pop()


def total_instructions(work: Path, name: str, pid: int) -> int:
    # callgrind_control returns before the dump is written.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for dump in work.glob(f"{name}.{pid}.*"):
            if match := _TOTALS.search(dump.read_bytes()):
                return int(match[1])
        time.sleep(0.5)
    raise BenchError(f"{name}: no callgrind dump of worker {pid} in {work}")


def report(results: list[tuple[str, int]], requests: int, path: str) -> str:
    """A markdown table: instructions per request of each configuration, against the first."""
    first = results[0][1] / requests
    lines = [
        f"GET {path}, {requests} requests per configuration, one worker under callgrind",
        "",
        "| configuration | instructions/request | vs first |",
        "|---|---:|---:|",
    ]
    for name, total in results:
        per_request = total / requests
        lines.append(f"| {name} | {per_request:,.0f} | {per_request - first:+,.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
