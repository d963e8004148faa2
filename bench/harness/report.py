"""Summarise measurements into the markdown table and the JSON report."""

from __future__ import annotations

import contextlib
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.options import AT, BASELINE, SCENARIOS, Options
from harness.wrk import Measurement

OURS = "ours"


@dataclass(frozen=True)
class Summary:
    scenario: str
    rps: dict[str, float]
    p50_ms: dict[str, float]
    p99_ms: dict[str, float]
    errors: dict[str, int]
    # Per server other than a baseline: the median over rounds of server / its baseline (req/s
    # and p99; `ours@1M` against `baseline@1M`), from measurements of one round.
    ratio: dict[str, float]
    ratios: dict[str, list[float]]
    p99_ratio: dict[str, float]
    # Per server with a reference (`reference()`): the median over rounds of server /
    # reference, req/s and p99.
    vs_ref: dict[str, float]
    p99_vs_ref: dict[str, float]
    # Per server that writes the JSON access log: its slowest request server-side over all
    # rounds, and how many took longer than 250 ms.
    slowest_ms: dict[str, float] = field(default_factory=dict)
    over_250ms: dict[str, int] = field(default_factory=dict)
    # Per server: medians over rounds of CPU microseconds per request, the server's process
    # tree and PostgreSQL's (harness/cpu.py).
    server_cpu_us: dict[str, float] = field(default_factory=dict)
    postgres_cpu_us: dict[str, float] = field(default_factory=dict)
    # Per server and kind of batched statement (harness/batches.py), medians over rounds:
    # requests per statement, and the share of the scenario's requests served that way.
    batched: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return any(self.errors.values())


def server_names(measurements: list[Measurement]) -> list[str]:
    return list(dict.fromkeys(m.server for m in measurements))


def counterpart(name: str) -> str:
    """The baseline a server is compared with: the one on the same database."""
    _, at, size = name.partition(AT)
    return f"{BASELINE}{at}{size}"


def reference(name: str) -> str | None:
    """What a copy is measured against: ours for a `--variant`, `X` for `X@<N>`."""
    if AT in name:
        return name.partition(AT)[0]
    return None if name in (OURS, BASELINE) else OURS


def _median_ratios(pairs: list[tuple[Measurement, Measurement]]) -> tuple[float, float] | None:
    """Medians of a/b over paired rounds: req/s and p99; None without pairs."""
    pairs = [(a, b) for a, b in pairs if b.rps and b.p99_ms]
    if not pairs:
        return None
    return (
        statistics.median(a.rps / b.rps for a, b in pairs),
        statistics.median(a.p99_ms / b.p99_ms for a, b in pairs),
    )


def _paired(
    by_server: dict[str, list[Measurement]], name: str, other: str
) -> list[tuple[Measurement, Measurement]]:
    if name == other or other not in by_server:
        return []
    rounds = {m.round: m for m in by_server[other]}
    return [(m, rounds[m.round]) for m in by_server[name] if m.round in rounds]


def summarise(measurements: list[Measurement], opts: Options) -> list[Summary]:
    names = server_names(measurements)
    summaries = []
    for scenario in opts.scenarios:
        by_server = {
            name: [m for m in measurements if m.scenario == scenario and m.server == name]
            for name in names
        }
        ratios: dict[str, list[float]] = {}
        p99_ratio: dict[str, float] = {}
        vs_ref: dict[str, float] = {}
        p99_vs_ref: dict[str, float] = {}
        for name in names:
            pairs = [(a, b) for a, b in _paired(by_server, name, counterpart(name)) if b.rps]
            if pairs:
                ratios[name] = [a.rps / b.rps for a, b in pairs]
                p99_ratio[name] = statistics.median(
                    a.p99_ms / b.p99_ms if b.p99_ms else 0.0 for a, b in pairs
                )
            ref = reference(name)
            medians = _median_ratios(_paired(by_server, name, ref)) if ref else None
            if medians is not None:
                vs_ref[name], p99_vs_ref[name] = medians
        summaries.append(
            Summary(
                scenario=scenario,
                rps={n: statistics.median(m.rps for m in ms) for n, ms in by_server.items()},
                p50_ms={n: statistics.median(m.p50_ms for m in ms) for n, ms in by_server.items()},
                p99_ms={n: statistics.median(m.p99_ms for m in ms) for n, ms in by_server.items()},
                errors={n: sum(m.errors for m in ms) for n, ms in by_server.items()},
                ratio={n: statistics.median(r) for n, r in ratios.items()},
                ratios=ratios,
                p99_ratio=p99_ratio,
                vs_ref=vs_ref,
                p99_vs_ref=p99_vs_ref,
                slowest_ms={
                    n: max(m.slowest_ms for m in ms if m.slowest_ms is not None)
                    for n, ms in by_server.items()
                    if any(m.slowest_ms is not None for m in ms)
                },
                over_250ms={
                    n: sum(m.over_250ms or 0 for m in ms)
                    for n, ms in by_server.items()
                    if any(m.over_250ms is not None for m in ms)
                },
                server_cpu_us=_median_of(by_server, "server_cpu_us"),
                postgres_cpu_us=_median_of(by_server, "postgres_cpu_us"),
                batched={n: _batched(ms) for n, ms in by_server.items() if _batched(ms)},
            )
        )
    return summaries


def _batched(ms: list[Measurement]) -> dict[str, tuple[float, float]]:
    """Per kind: the median requests per batched statement, and share of requests batched."""
    sizes: dict[str, list[float]] = {}
    shares: dict[str, list[float]] = {}
    for m in ms:
        for kind, (served, statements) in (m.batches or {}).items():
            sizes.setdefault(kind, []).append(served / statements)
            shares.setdefault(kind, []).append(served / m.requests if m.requests else 0.0)
    return {
        kind: (statistics.median(sizes[kind]), statistics.median(shares[kind])) for kind in sizes
    }


def _batch_lines(summaries: list[Summary]) -> list[str]:
    rows = [
        f"- {summary.scenario}, `{server}`: "
        + "; ".join(
            f"{kind} {size:.1f} requests per statement ({share:.0%} of requests)"
            for kind, (size, share) in sorted(kinds.items())
        )
        for summary in summaries
        for server, kinds in summary.batched.items()
    ]
    if not rows:
        return []
    return [
        "",
        "Batched statements (app/db/batch.py; medians over rounds, from `items_db_batch_size`):",
        *rows,
    ]


def _median_of(by_server: dict[str, list[Measurement]], attribute: str) -> dict[str, float]:
    """Per server, the median of a measurement's figure over the rounds that have it."""
    medians = {}
    for name, ms in by_server.items():
        values = [getattr(m, attribute) for m in ms if getattr(m, attribute) is not None]
        if values:
            medians[name] = statistics.median(values)
    return medians


def _cpu(summary: Summary, server: str) -> str:
    """`server / PostgreSQL` CPU microseconds per request."""
    if server not in summary.server_cpu_us:
        return ""
    return f"{summary.server_cpu_us[server]:.0f} / {summary.postgres_cpu_us[server]:.0f}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|",
    ]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _slowest(summary: Summary, server: str) -> str:
    """The slowest server-side request over the rounds, and the count over 250 ms."""
    if server not in summary.slowest_ms:
        return ""
    return f"{summary.slowest_ms[server]:.1f} ({summary.over_250ms.get(server, 0)})"


def _wide(summaries: list[Summary], servers: list[str]) -> list[str]:
    """One row per scenario: ours beside the baseline (or one server alone)."""
    paired = servers == [OURS, BASELINE]
    head = ["scenario"] + [f"{s} req/s" for s in servers]
    if paired:
        head += ["ratio", "p99 ratio"]
    for s in servers:
        head += [f"{s} p50 ms", f"{s} p99 ms"]
    logged = [s for s in servers if any(s in x.slowest_ms for x in summaries)]
    head += [f"{s} slowest ms (> 250 ms)" for s in logged]
    head += [f"{s} CPU µs/req server / PG" for s in servers]
    head += ["errors", "result"]
    rows = []
    for summary in summaries:
        row = [summary.scenario] + [f"{summary.rps[s]:,.0f}" for s in servers]
        if paired:
            row.append(f"{summary.ratio[OURS]:.2f}" if OURS in summary.ratio else "n/a")
            row.append(f"{summary.p99_ratio[OURS]:.2f}" if OURS in summary.p99_ratio else "n/a")
        for s in servers:
            row += [f"{summary.p50_ms[s]:.2f}", f"{summary.p99_ms[s]:.2f}"]
        row += [_slowest(summary, s) for s in logged]
        row += [_cpu(summary, s) for s in servers]
        row.append(" / ".join(str(summary.errors[s]) for s in servers))
        row.append("FAIL" if summary.failed else "ok")
        rows.append(row)
    return _table(head, rows)


def _long(summaries: list[Summary], servers: list[str]) -> list[str]:
    """One row per scenario and server: each copy of a server against its reference."""
    head = ["scenario", "server", "req/s", "vs ref", "p99 vs ref", "ratio", "p99 ratio"]
    head += ["p50 ms", "p99 ms", "slowest ms (> 250 ms)", "CPU µs/req server / PG", "errors"]
    rows = []
    for summary in summaries:
        for s in servers:
            vs, p99_vs = summary.vs_ref.get(s), summary.p99_vs_ref.get(s)
            rows.append(
                [
                    summary.scenario,
                    s,
                    f"{summary.rps[s]:,.0f}",
                    f"{(vs - 1) * 100:+.1f} %" if vs is not None else "",
                    f"{p99_vs:.2f}" if p99_vs is not None else "",
                    f"{summary.ratio[s]:.2f}" if s in summary.ratio else "",
                    f"{summary.p99_ratio[s]:.2f}" if s in summary.p99_ratio else "",
                    f"{summary.p50_ms[s]:.2f}",
                    f"{summary.p99_ms[s]:.2f}",
                    _slowest(summary, s),
                    _cpu(summary, s),
                    str(summary.errors[s]) + (" FAIL" if summary.errors[s] else ""),
                ]
            )
    return _table(head, rows)


def describe_setup(opts: Options, meta: dict[str, Any]) -> str:
    load = meta["load_average_at_start"]
    end = meta.get("load_average_at_end")
    return (
        f"N={opts.n_items} items"
        + (f" ({opts.scale} for `X{AT}{opts.scale_label}`)" if opts.scale else "")
        + f", profile `{opts.profile}`"
        f"{', TLS' if opts.tls else ''}, {opts.workers} workers, "
        f"wrk -t{opts.threads} -c{opts.connections} "
        f"-d{opts.duration}s after {opts.warmup}s warm-up, {opts.rounds} interleaved "
        f"round(s), medians; ratio = median over rounds of ours/baseline req/s "
        f"(p99 ratio: of ours/baseline p99); "
        f"{meta['cpu_count']} CPUs shared by wrk, servers and PostgreSQL; "
        f"load average {load[0]:.2f} at start" + (f", {end[0]:.2f} at the end." if end else ".")
    )


def markdown(
    summaries: list[Summary], opts: Options, meta: dict[str, Any], servers: list[str]
) -> str:
    lines = [
        f"Items service benchmark, {meta['started_at']} (git {meta['git'] or 'none'})",
        "",
        describe_setup(opts, meta),
        "",
    ]
    if len(servers) <= 2 and all(reference(s) is None for s in servers):
        lines += _wide(summaries, servers)
    else:
        lines += _long(summaries, servers)
        lines += [
            "",
            "vs ref, p99 vs ref: medians over rounds of the server against its reference "
            f"(ours for a variant, `X` for `X{AT}<N>`); ratio, p99 ratio: against the baseline "
            "on the same database.",
        ]
    lines += _batch_lines(summaries)
    lines += ["", "Scenarios:"]
    lines += [f"- `{name}`: {SCENARIOS[name].description}" for name in opts.scenarios]
    lines += ["", "Settings of each server beyond the shared ones:"]
    for name, settings in meta["server_settings"].items():
        shown = " ".join(
            f"{k}={v}" for k, v in settings.items() if k not in ("TLS_CERT", "TLS_KEY")
        )
        lines.append(f"- `{name}`: {shown or '(none)'}")
    if meta.get("chart"):
        lines += ["", f"![throughput and p99 per scenario]({meta['chart']})"]
    return "\n".join(lines) + "\n"


def write_report(
    run_dir: Path,
    opts: Options,
    meta: dict[str, Any],
    measurements: list[Measurement],
    summaries: list[Summary],
) -> str:
    servers = server_names(measurements)
    table = markdown(summaries, opts, meta, servers)
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
            "servers": servers,
            "profile": opts.profile,
            "tls": opts.tls,
            "workers": opts.workers,
            "pool_max": opts.pool_max,
            "scale": opts.scale,
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
                "p99_ratio": s.p99_ratio,
                "vs_ref": s.vs_ref,
                "p99_vs_ref": s.p99_vs_ref,
                "slowest_ms": s.slowest_ms,
                "over_250ms": s.over_250ms,
                "server_cpu_us": s.server_cpu_us,
                "postgres_cpu_us": s.postgres_cpu_us,
                "batched": s.batched,
                "failed": s.failed,
            }
            for s in summaries
        ],
        "measurements": [m.__dict__ for m in measurements],
    }
    (run_dir / "results.md").write_text(table)
    (run_dir / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    link_latest(run_dir)
    return table


def link_latest(run_dir: Path) -> None:
    latest = run_dir.parent / "latest"
    with contextlib.suppress(OSError):
        latest.unlink(missing_ok=True)
        latest.symlink_to(run_dir.name)
