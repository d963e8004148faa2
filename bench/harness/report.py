"""Summarise measurements into the markdown table and the JSON report."""

from __future__ import annotations

import contextlib
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.options import SCENARIOS, SERVERS, Options
from harness.wrk import Measurement


@dataclass(frozen=True)
class Summary:
    scenario: str
    rps: dict[str, float]
    p50_ms: dict[str, float]
    p99_ms: dict[str, float]
    errors: dict[str, int]
    ratio: float | None
    ratios: list[float]

    @property
    def failed(self) -> bool:
        return any(self.errors.values())


def summarise(measurements: list[Measurement], opts: Options) -> list[Summary]:
    summaries = []
    for scenario in opts.scenarios:
        by_server = {
            name: [m for m in measurements if m.scenario == scenario and m.server == name]
            for name in opts.servers
        }
        ratios = []
        if set(opts.servers) == set(SERVERS):
            pairs = zip(by_server["ours"], by_server["baseline"], strict=True)
            ratios = [ours.rps / base.rps for ours, base in pairs if base.rps]
        summaries.append(
            Summary(
                scenario=scenario,
                rps={n: statistics.median(m.rps for m in ms) for n, ms in by_server.items()},
                p50_ms={n: statistics.median(m.p50_ms for m in ms) for n, ms in by_server.items()},
                p99_ms={n: statistics.median(m.p99_ms for m in ms) for n, ms in by_server.items()},
                errors={n: sum(m.errors for m in ms) for n, ms in by_server.items()},
                ratio=statistics.median(ratios) if ratios else None,
                ratios=ratios,
            )
        )
    return summaries


def markdown(summaries: list[Summary], opts: Options, meta: dict[str, Any]) -> str:
    servers = opts.servers
    head = ["scenario"]
    head += [f"{s} req/s" for s in servers]
    if len(servers) == 2:
        head.append("ratio")
    for s in servers:
        head += [f"{s} p50 ms", f"{s} p99 ms"]
    head += ["errors", "result"]
    lines = [
        f"Items service benchmark, {meta['started_at']} (git {meta['git'] or 'none'})",
        "",
        f"N={opts.n_items} items, wrk -t{opts.threads} -c{opts.connections} "
        f"-d{opts.duration}s after {opts.warmup}s warm-up, {opts.rounds} interleaved "
        f"round(s), medians; ratio = median over rounds of ours/baseline req/s; "
        f"{meta['cpu_count']} CPUs shared by wrk, servers and PostgreSQL; "
        f"load average {meta['load_average_at_start'][0]:.2f} at start.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|",
    ]
    for summary in summaries:
        row = [summary.scenario]
        row += [f"{summary.rps[s]:,.0f}" for s in servers]
        if len(servers) == 2:
            row.append(f"{summary.ratio:.2f}" if summary.ratio is not None else "n/a")
        for s in servers:
            row += [f"{summary.p50_ms[s]:.2f}", f"{summary.p99_ms[s]:.2f}"]
        row.append(" / ".join(str(summary.errors[s]) for s in servers))
        row.append("FAIL" if summary.failed else "ok")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Scenarios:"]
    lines += [f"- `{name}`: {SCENARIOS[name].description}" for name in opts.scenarios]
    return "\n".join(lines) + "\n"


def write_report(
    run_dir: Path,
    opts: Options,
    meta: dict[str, Any],
    measurements: list[Measurement],
    summaries: list[Summary],
) -> str:
    table = markdown(summaries, opts, meta)
    report = {
        "meta": meta,
        "options": {
            "n_items": opts.n_items,
            "duration_s": opts.duration,
            "warmup_s": opts.warmup,
            "connections": opts.connections,
            "threads": opts.threads,
            "rounds": opts.rounds,
            "scenarios": opts.scenarios,
            "servers": opts.servers,
            "workers": opts.workers,
            "pool_max": opts.pool_max,
            "scheme": opts.scheme,
            "ours_cmd": opts.ours_cmd,
            "auth": opts.auth,
        },
        "summary": [
            {
                "scenario": s.scenario,
                "rps": s.rps,
                "p50_ms": s.p50_ms,
                "p99_ms": s.p99_ms,
                "errors": s.errors,
                "ratio": s.ratio,
                "ratios": s.ratios,
                "failed": s.failed,
            }
            for s in summaries
        ],
        "measurements": [m.__dict__ for m in measurements],
    }
    (run_dir / "results.md").write_text(table)
    (run_dir / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    latest = run_dir.parent / "latest"
    with contextlib.suppress(OSError):
        latest.unlink(missing_ok=True)
        latest.symlink_to(run_dir.name)
    return table
