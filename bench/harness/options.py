"""Command-line options, scenarios, and the headers sent with writes."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import BENCH_DIR

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/items_bench"


@dataclass(frozen=True)
class Scenario:
    lua_file: str
    description: str
    routes: frozenset[str]  # of "get", "list", "create": checked before measuring


SCENARIOS: dict[str, Scenario] = {
    "get": Scenario("get_item.lua", "GET /items/{id}, random id in [1, N]", frozenset({"get"})),
    "list": Scenario(
        "list_page.lua", "GET /items?limit=20&cursor=<random cursor>", frozenset({"list"})
    ),
    "create": Scenario("create_item.lua", "POST /items", frozenset({"create"})),
    "mixed": Scenario(
        "mixed.lua", "70% get, 20% list, 10% create", frozenset({"get", "list", "create"})
    ),
}


SERVERS = ("ours", "baseline")


@dataclass(frozen=True)
class Options:
    n_items: int
    duration: int
    warmup: int
    connections: int
    threads: int
    timeout: int
    rounds: int
    scenarios: list[str]
    servers: list[str]
    out: Path
    database_url: str
    schema: str
    python: str
    ours_cmd: list[str]
    ours_env: dict[str, str]
    scheme: str
    host: str
    workers: int
    pool_max: int
    cursors: int
    max_walk_pages: int
    write_headers: dict[str, str]
    auth: str


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark the items service against the raw Sanic baseline with wrk.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--n-items", type=int, default=10_000, help="rows to seed")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up before each")
    parser.add_argument("--connections", "-c", type=int, default=64, help="wrk connections")
    parser.add_argument("--threads", "-t", type=int, default=2, help="wrk threads")
    parser.add_argument("--timeout", type=int, default=5, help="wrk request timeout, seconds")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds (ours, baseline, ...); medians"
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of: {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help="comma-separated subset of: ours, baseline"
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="results directory")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="database to (re)create and seed; env BENCH_DATABASE_URL",
    )
    parser.add_argument(
        "--schema",
        choices=("app", "baseline"),
        default="app",
        help="create the schema with `python -m app migrate` (app) or the baseline's DDL",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter for the servers")
    parser.add_argument(
        "--ours-cmd",
        default="{python} -m app serve",
        help="command that starts our server (run from the repo root)",
    )
    parser.add_argument(
        "--ours-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for our server (repeatable)",
    )
    parser.add_argument(
        "--scheme",
        choices=("http", "https"),
        default="http",
        help="URL scheme; https needs the servers started with TLS (see --ours-env)",
    )
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--pool-max", type=int, default=10, help="DB pool size per worker")
    parser.add_argument(
        "--cursors", type=int, default=300, help="list cursors to sample per server"
    )
    parser.add_argument(
        "--max-walk-pages",
        type=int,
        default=0,
        help="stop collecting cursors after this many list pages (0: walk the whole table)",
    )
    parser.add_argument(
        "--write-header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra header on writes, e.g. 'Authorization: Bearer ...' (repeatable)",
    )
    parser.add_argument(
        "--auth",
        choices=("auto", "off"),
        default="auto",
        help="auto: when our server answers 401 to a write and no Authorization header is "
        "given, create a throwaway user and log in",
    )
    args = parser.parse_args(argv)

    scenarios = _split_choices(args.scenarios, SCENARIOS, "--scenarios")
    servers = _split_choices(args.servers, SERVERS, "--servers")
    for name in ("n_items", "duration", "connections", "threads", "rounds", "cursors"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    if args.threads > args.connections:
        parser.error("--threads must not exceed --connections")
    ours_env = {}
    for pair in args.ours_env:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            parser.error(f"--ours-env expects KEY=VALUE, got {pair!r}")
        ours_env[key] = value
    try:
        write_headers = configured_write_headers(args.write_header)
    except ValueError as exc:
        parser.error(str(exc))

    return Options(
        n_items=args.n_items,
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        threads=args.threads,
        timeout=args.timeout,
        rounds=args.rounds,
        scenarios=scenarios,
        servers=servers,
        out=args.out,
        database_url=args.database_url,
        schema=args.schema,
        python=args.python,
        ours_cmd=shlex.split(args.ours_cmd.format(python=args.python)),
        ours_env=ours_env,
        scheme=args.scheme,
        host="127.0.0.1",
        workers=args.workers,
        pool_max=args.pool_max,
        cursors=args.cursors,
        max_walk_pages=args.max_walk_pages,
        write_headers=write_headers,
        auth=args.auth,
    )


def _split_choices(value: str, allowed: Collection[str], flag: str) -> list[str]:
    chosen = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in allowed]
    if unknown or not chosen:
        raise SystemExit(f"{flag}: unknown or empty {unknown}; choose from {', '.join(allowed)}")
    return [name for name in allowed if name in chosen]


def configured_write_headers(raw_headers: Sequence[str]) -> dict[str, str]:
    """Write headers from ``BENCH_AUTH_TOKEN`` and ``--write-header``.

    ``harness.auth.obtain_write_headers`` adds a token when none is given here.
    """
    headers: dict[str, str] = {}
    token = os.environ.get("BENCH_AUTH_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    for raw in raw_headers:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip() or "\n" in raw:
            raise ValueError(f"--write-header expects 'Name: value', got {raw!r}")
        headers[name.strip()] = value.strip()
    return headers


def routes_used(opts: Options) -> frozenset[str]:
    return frozenset[str]().union(*(SCENARIOS[name].routes for name in opts.scenarios))
