"""Benchmark the items service against a raw Sanic + asyncpg baseline with wrk.

One command seeds a database, starts both servers (ours with the settings of a
profile, production by default; optionally over TLS), runs each wrk scenario
against each server in interleaved rounds, checks every response status and
writes a markdown table, a JSON file of raw numbers and, with matplotlib, a chart.
`--variant` adds copies of our server with other settings (the layer-cost
table); `--memory` instead samples our workers' memory under a long mixed load.

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
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from harness import REPO_ROOT, BenchError
from harness.auth import obtain_write_headers
from harness.chart import draw_chart
from harness.database import create_database, migrate, seed
from harness.memory import memory_report, run_memory
from harness.options import BASELINE, Options, parse_args, routes_used
from harness.report import link_latest, server_names, summarise, write_report
from harness.servers import (
    Server,
    collect_list_paths,
    make_cert,
    make_servers,
    preflight,
    running,
)
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


class Preparer:
    """Readies a started server: write headers (obtained once per run), checks, list cursors."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.write_headers: dict[str, str] | None = None

    def __call__(self, server: Server) -> None:
        if self.write_headers is None:
            ours = None if server.name == BASELINE else server
            self.write_headers = obtain_write_headers(self.opts, ours)
        server.write_headers = self.write_headers
        preflight(server, self.opts)
        if "list" in routes_used(self.opts):
            server.list_paths = collect_list_paths(server, self.opts)


def _measure(
    wrk: str, server: Server, scenario: str, round_no: int, opts: Options, run_dir: Path
) -> Measurement:
    m = measure(wrk, server, scenario, round_no, opts, run_dir)
    print(
        f"round {round_no}/{opts.rounds} {scenario:<7} {server.name:<14} "
        f"{m.rps:>9,.0f} req/s  p50 {m.p50_ms:6.2f} ms  "
        f"p99 {m.p99_ms:7.2f} ms  "
        + (f"slowest {m.slowest_ms:7.1f} ms ({m.over_250ms} > 250 ms)  " if m.slowest_ms else "")
        + (
            f"CPU {m.server_cpu_us:4.0f} / {m.postgres_cpu_us:4.0f} us/req  "
            if m.server_cpu_us is not None and m.postgres_cpu_us is not None
            else ""
        )
        + f"errors {m.errors}"
        + (f" {m.statuses} {m.socket_errors}" if m.errors else ""),
        flush=True,
    )
    return m


def measure_all(wrk: str, servers: list[Server], opts: Options, run_dir: Path) -> list[Measurement]:
    prepare = Preparer(opts)
    measurements: list[Measurement] = []
    if not opts.variants and not opts.scale:
        # Both servers stay up; each scenario runs on one, then the other, back to back.
        with running(servers):
            for server in servers:
                prepare(server)
            for round_no in range(1, opts.rounds + 1):
                for scenario in opts.scenarios:
                    for server in servers:
                        measurements.append(
                            _measure(wrk, server, scenario, round_no, opts, run_dir)
                        )
        return measurements
    # Every copy's pools at once would not fit PostgreSQL's max_connections: one server at a
    # time, restarted each round, in the same order.
    for round_no in range(1, opts.rounds + 1):
        for server in servers:
            with running([server]):
                prepare(server)
                for scenario in opts.scenarios:
                    measurements.append(_measure(wrk, server, scenario, round_no, opts, run_dir))
    return measurements


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
        "profile": opts.profile,
        "tls": opts.tls,
    }
    print(f"results go to {run_dir}", flush=True)
    if load_average[0] > BUSY_LOAD:
        print(
            f"warning: load average is {load_average[0]:.2f} before starting; other work on this "
            "machine will add noise to the numbers",
            file=sys.stderr,
            flush=True,
        )

    databases = [(opts.database_url, opts.n_items)]
    if opts.scale:
        databases.append((opts.scale_database_url, opts.scale))
    for url, n_items in databases:
        asyncio.run(create_database(url))
        migrate(opts, run_dir, url)
        started = time.monotonic()
        asyncio.run(seed(url, n_items))
        print(f"seeded {n_items:,} items in {time.monotonic() - started:.1f}s", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-certs-") as cert_dir:
        cert = make_cert(opts, Path(cert_dir)) if opts.tls else None
        servers = make_servers(opts, run_dir, cert)
        meta["server_settings"] = {server.name: server.settings for server in servers}
        if opts.memory:
            return memory_run(wrk, servers[0], opts, run_dir, meta)
        measurements = measure_all(wrk, servers, opts, run_dir)
    meta["load_average_at_end"] = os.getloadavg()

    summaries = summarise(measurements, opts)
    if opts.chart:
        chart = draw_chart(
            run_dir,
            summaries,
            server_names(measurements),
            f"{opts.profile}{' over TLS' if opts.tls else ''}, N={opts.n_items:,}"
            + (f" and {opts.scale:,}" if opts.scale else "")
            + ", "
            f"{opts.rounds} round(s) of {opts.duration}s, git {meta['git']}",
        )
        meta["chart"] = chart.name if chart else None
    table = write_report(run_dir, opts, meta, measurements, summaries)
    print()
    print(table)
    print(f"wrote {run_dir / 'results.md'} and {run_dir / 'results.json'}")
    return 1 if any(s.failed for s in summaries) else 0


def memory_run(wrk: str, server: Server, opts: Options, run_dir: Path, meta: dict[str, Any]) -> int:
    with running([server]):
        Preparer(opts)(server)
        print(
            f"memory run: mixed load for {opts.memory_seconds}s, RSS every {opts.memory_interval}s",
            flush=True,
        )
        samples, measurement = run_memory(wrk, server, opts, run_dir)
    text, ok = memory_report(samples, measurement, opts, meta, run_dir)
    link_latest(run_dir)
    print()
    print(text)
    print(f"wrote {run_dir / 'memory.md'} and {run_dir / 'memory.json'}")
    return 0 if ok and not measurement.errors else 1


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
