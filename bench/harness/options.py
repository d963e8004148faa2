"""Command-line options, scenarios, and the headers sent with writes."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import urllib.parse
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
BASELINE = "baseline"
# `--scale N` adds `ours@<N>` and `baseline@<N>`: the same servers on a database of N items.
AT = "@"

# What our server runs with, on top of the settings every run shares (harness/servers.py).
# `production` is what a production deployment turns on (issue 9 measures it): JSON access
# log on stdout (which the harness sends to a file, as a container log driver would), request
# ids and security headers (always on), metrics, and a rate limit high enough never to refuse.
PRODUCTION_ENV = {
    "LOG_FORMAT": "json",
    # The access log is written at INFO: a higher level would silently drop it.
    "LOG_LEVEL": "INFO",
    "ACCESS_LOG": "true",
    "METRICS_ENABLED": "true",
    "RATE_LIMIT": "1000000/minute",
    "CACHE_ENABLED": "false",
}
PROFILES: dict[str, dict[str, str]] = {
    "production": PRODUCTION_ENV,
    "cached": {**PRODUCTION_ENV, "CACHE_ENABLED": "true"},
    # The harness's settings before profiles: no access log, no rate limit (cache off, so
    # `get` reads the database in every profile but `cached`).
    "bare": {
        "LOG_LEVEL": "WARNING",
        "ACCESS_LOG": "false",
        "METRICS_ENABLED": "true",
        "RATE_LIMIT": "off",
        "CACHE_ENABLED": "false",
    },
}


@dataclass(frozen=True)
class Variant:
    """Another copy of our server, measured beside the profile's: `--variant NAME:K=V,K=V`."""

    name: str
    env: dict[str, str]


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
    profile: str
    variants: list[Variant]
    scale: int
    tls: bool
    memory: bool
    memory_seconds: int
    memory_interval: int
    chart: bool
    host: str
    workers: int
    pool_max: int
    cursors: int
    max_walk_pages: int
    write_headers: dict[str, str]
    auth: str

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def scale_label(self) -> str:
        """`1M`, `100k`, `2500`: how `--scale` copies are named (`ours@1M`)."""
        for size, suffix in ((1_000_000, "M"), (1_000, "k")):
            if self.scale >= size and self.scale % size == 0:
                return f"{self.scale // size}{suffix}"
        return str(self.scale)

    @property
    def scale_database_url(self) -> str:
        """`--database-url` with `_<N>` added to the database name."""
        parts = urllib.parse.urlsplit(self.database_url)
        return urllib.parse.urlunsplit(parts._replace(path=f"{parts.path}_{self.scale}"))

    @property
    def profile_env(self) -> dict[str, str]:
        """Our server's environment from the profile, then `--ours-env` on top."""
        return {**PROFILES[self.profile], **self.ours_env}


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
        "--profile",
        choices=tuple(PROFILES),
        default="production",
        help="settings of our server: production (access log, metrics, rate limit; cache "
        "off), cached (production + read cache), bare (no access log, no rate limit)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="also measure our server with these settings on top of the profile's "
        "(repeatable; e.g. no-access-log:ACCESS_LOG=false); servers then start one at a time",
    )
    parser.add_argument(
        "--scale",
        type=int,
        default=0,
        metavar="N",
        help="also seed a database of N items (--database-url's name + _N) and measure each "
        "server on it too, as `ours@<N>` beside `ours` (issue 9: list p99 at 1M <= 1.2x at "
        "10k); servers then start one at a time",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve both servers over TLS with a fresh development certificate; wrk uses https",
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help="memory run instead: the mixed scenario against ours only, sampling each "
        "worker's RSS (see --memory-minutes, --memory-interval)",
    )
    parser.add_argument(
        "--memory-minutes", type=float, default=5, help="length of the --memory run, minutes"
    )
    parser.add_argument(
        "--memory-interval", type=int, default=30, help="seconds between --memory RSS samples"
    )
    parser.add_argument(
        "--no-chart",
        dest="chart",
        action="store_false",
        help="do not draw results.png (drawn only when matplotlib is importable)",
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
    for name in (
        "n_items",
        "duration",
        "connections",
        "threads",
        "rounds",
        "cursors",
        "memory_interval",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.memory_minutes <= 0:
        parser.error("--memory-minutes must be positive")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    if args.scale < 0 or (args.scale and args.scale == args.n_items):
        parser.error("--scale must be positive and differ from --n-items")
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
        variants = [parse_variant(raw) for raw in args.variant]
    except ValueError as exc:
        parser.error(str(exc))
    names = [v.name for v in variants]
    if len(set(names)) != len(names) or set(names) & set(SERVERS):
        parser.error(f"--variant names must be unique and not {' or '.join(SERVERS)}")
    if variants and "ours" not in servers:
        parser.error("--variant needs ours in --servers")
    if args.memory:
        # One long mixed run against our server; its RSS is what is measured.
        scenarios, servers, variants, args.scale = ["mixed"], ["ours"], [], 0

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
        profile=args.profile,
        variants=variants,
        scale=args.scale,
        tls=args.tls,
        memory=args.memory,
        memory_seconds=max(1, round(args.memory_minutes * 60)),
        memory_interval=args.memory_interval,
        chart=args.chart,
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


def parse_variant(raw: str) -> Variant:
    name, sep, pairs = raw.partition(":")
    env = {}
    for pair in pairs.split(","):
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--variant expects NAME:KEY=VALUE[,KEY=VALUE], got {raw!r}")
        env[key.strip()] = value.strip()
    if not sep or not name or not all(ch.isalnum() or ch in "-_" for ch in name):
        raise ValueError(f"--variant NAME must be letters, digits, - or _: {raw!r}")
    return Variant(name, env)


def routes_used(opts: Options) -> frozenset[str]:
    return frozenset[str]().union(*(SCENARIOS[name].routes for name in opts.scenarios))
