"""Benchmark the items service against a raw Sanic + asyncpg baseline with wrk.

One command seeds a database, starts both servers with production settings,
runs each wrk scenario against each server in interleaved rounds, checks every
response status and writes a markdown table and a JSON file of raw numbers.

Run from the repository root: ``.venv/bin/python bench/run.py --help``.
See ``bench/README.md`` for what is measured and how to read the numbers.
"""

from __future__ import annotations

import asyncio
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from harness import REPO_ROOT, BenchError
from harness.auth import obtain_write_headers
from harness.database import create_database, migrate, seed
from harness.options import Options, parse_args, routes_used
from harness.report import summarise, write_report
from harness.servers import collect_list_paths, make_servers, preflight, running
from harness.wrk import Measurement, ensure_wrk, measure, wrk_version

BUSY_LOAD = 1.0  # 1-minute load average above which results are flagged noisy


def git_revision() -> str | None:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or None


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(opts: Options) -> int:
    wrk = ensure_wrk()
    started_at = datetime.now(UTC)
    run_dir = opts.out.resolve() / started_at.strftime("%Y%m%dT%H%M%SZ")
    (run_dir / "lua").mkdir(parents=True, exist_ok=True)
    load_average = os.getloadavg()
    meta: dict[str, Any] = {
        "started_at": started_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "git": git_revision(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "wrk": wrk_version(wrk),
        "database_url": opts.database_url,
        "run_dir": str(run_dir),
        "load_average_at_start": load_average,
    }
    print(f"results go to {run_dir}", flush=True)
    if load_average[0] > BUSY_LOAD:
        print(
            f"warning: load average is {load_average[0]:.2f} before starting; other work on this "
            "machine will add noise to the numbers",
            file=sys.stderr,
            flush=True,
        )

    asyncio.run(create_database(opts.database_url))
    migrate(opts, run_dir)
    started = time.monotonic()
    asyncio.run(seed(opts.database_url, opts.n_items))
    print(f"seeded {opts.n_items:,} items in {time.monotonic() - started:.1f}s", flush=True)

    servers = make_servers(opts, run_dir)
    measurements: list[Measurement] = []
    with running(servers):
        ours = next((server for server in servers if server.name == "ours"), None)
        write_headers = obtain_write_headers(opts, ours)
        meta["write_header_names"] = sorted(write_headers)
        for server in servers:
            server.write_headers = write_headers
            preflight(server, opts)
            if "list" in routes_used(opts):
                server.list_paths = collect_list_paths(server, opts)
        for round_no in range(1, opts.rounds + 1):
            for scenario in opts.scenarios:
                for server in servers:
                    m = measure(wrk, server, scenario, round_no, opts, run_dir)
                    measurements.append(m)
                    print(
                        f"round {round_no}/{opts.rounds} {scenario:<7} {server.name:<8} "
                        f"{m.rps:>9,.0f} req/s  p50 {m.p50_ms:6.2f} ms  "
                        f"p99 {m.p99_ms:7.2f} ms  errors {m.errors}"
                        + (f" {m.statuses} {m.socket_errors}" if m.errors else ""),
                        flush=True,
                    )

    summaries = summarise(measurements, opts)
    table = write_report(run_dir, opts, meta, measurements, summaries)
    print()
    print(table)
    print(f"wrote {run_dir / 'results.md'} and {run_dir / 'results.json'}")
    return 1 if any(s.failed for s in summaries) else 0


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return run(opts)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
