"""The memory run: a long mixed load against our server, sampling each worker's RSS.

Workers are the children of the server's main process that Sanic started as workers
(`SANIC_WORKER_NAME=Sanic-Server-...` in their environment); the main process, the
multiprocessing manager and the resource tracker are not counted.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import BenchError
from harness.options import Options
from harness.servers import Server
from harness.wrk import Measurement, parse_wrk, to_measurement, write_script, wrk_command, wrk_env

MB = 1024 * 1024
RSS_LIMIT_MB = 80.0  # issue 9: per worker, after a 1-minute mixed run
# Growth from minute 1 to the end within this much is noise (allocator arenas, caches settling).
GROWTH_TOLERANCE_MB = 2.0
FIRST_MINUTE_S = 60


@dataclass(frozen=True)
class Sample:
    at_s: float
    worker: str
    pid: int
    rss_mb: float
    uss_mb: float


def worker_processes(main_pid: int) -> list[tuple[str, Any]]:
    """(Sanic worker name, psutil.Process) for each worker of the server `main_pid`."""
    try:
        import psutil
    except ImportError:
        raise BenchError("--memory needs psutil (in the dev extra: pip install psutil)") from None
    workers = []
    for child in psutil.Process(main_pid).children(recursive=False):
        try:
            name = child.environ().get("SANIC_WORKER_NAME", "")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if name.startswith("Sanic-Server"):
            workers.append((name, child))
    return sorted(workers, key=lambda pair: pair[0])


def sample(main_pid: int, at_s: float) -> list[Sample]:
    samples = []
    for name, proc in worker_processes(main_pid):
        info = proc.memory_full_info()
        samples.append(Sample(round(at_s, 1), name, proc.pid, info.rss / MB, info.uss / MB))
    return samples


def sample_times(duration: int, interval: int) -> list[float]:
    times = [float(t) for t in range(0, duration, interval)]
    # The last sample while the load still runs: "minute 5" of a 5-minute run.
    return [*times, max(duration - 2.0, 0.0)]


def run_memory(
    wrk: str, server: Server, opts: Options, run_dir: Path
) -> tuple[list[Sample], Measurement]:
    if server.process is None:
        raise BenchError("memory run: the server is not running")
    script = write_script(server, "mixed", run_dir / "lua")
    cmd = wrk_command(wrk, server, script, opts, opts.memory_seconds)
    samples: list[Sample] = []
    started = time.monotonic()
    wrk_proc = subprocess.Popen(
        cmd, env=wrk_env(server), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        for at in sample_times(opts.memory_seconds, opts.memory_interval):
            time.sleep(max(0.0, started + at - time.monotonic()))
            if wrk_proc.poll() is not None:
                break
            taken = sample(server.process.pid, time.monotonic() - started)
            samples += taken
            print(
                f"memory t={at:5.0f}s "
                + "  ".join(f"{s.worker} pid {s.pid}: RSS {s.rss_mb:.1f} MB" for s in taken),
                flush=True,
            )
        stdout, stderr = wrk_proc.communicate(timeout=opts.memory_seconds + 60)
    finally:
        if wrk_proc.poll() is None:
            wrk_proc.kill()
            wrk_proc.wait()
    raw = parse_wrk(cmd, wrk_proc.returncode, stdout, stderr, run_dir / "wrk.log")
    return samples, to_measurement(raw, server, "mixed", 1)


def _at(samples: list[Sample], at_s: float) -> dict[str, Sample]:
    """Each worker's sample closest to `at_s`."""
    best: dict[str, Sample] = {}
    for s in samples:
        if s.worker not in best or abs(s.at_s - at_s) < abs(best[s.worker].at_s - at_s):
            best[s.worker] = s
    return best


def memory_report(
    samples: list[Sample],
    measurement: Measurement,
    opts: Options,
    meta: dict[str, Any],
    run_dir: Path,
) -> tuple[str, bool]:
    """memory.md and memory.json; returns the markdown and whether both targets hold."""
    workers = sorted({s.worker for s in samples})
    times = sorted({s.at_s for s in samples})
    by_key = {(s.at_s, s.worker): s for s in samples}
    lines = [
        f"Items service memory run, {meta['started_at']} (git {meta['git'] or 'none'})",
        "",
        f"N={opts.n_items} items, profile `{opts.profile}`{', TLS' if opts.tls else ''}, "
        f"{opts.workers} workers, mixed scenario for {opts.memory_seconds}s "
        f"(wrk -t{opts.threads} -c{opts.connections}): {measurement.rps:,.0f} req/s, "
        f"{measurement.errors} errors; load average "
        f"{meta['load_average_at_start'][0]:.2f} at start. RSS (USS) in MB per worker.",
        "",
        "| t (s) | " + " | ".join(workers) + " |",
        "|---:|" + "---:|" * len(workers),
    ]
    for t in times:
        cells = []
        for w in workers:
            s = by_key.get((t, w))
            cells.append(f"{s.rss_mb:.1f} ({s.uss_mb:.1f})" if s else "")
        lines.append(f"| {t:.0f} | " + " | ".join(cells) + " |")
    first, last = _at(samples, FIRST_MINUTE_S), _at(samples, times[-1] if times else 0)
    ok = bool(first)
    lines += [
        "",
        "| worker | RSS at 1 min | RSS at end | growth | result |",
        "|---|---:|---:|---:|---|",
    ]
    for w in workers:
        if w not in first or w not in last or first[w].pid != last[w].pid:
            lines.append(f"| {w} | | | | restarted or missing |")
            ok = False
            continue
        growth = last[w].rss_mb - first[w].rss_mb
        good = first[w].rss_mb <= RSS_LIMIT_MB and growth <= GROWTH_TOLERANCE_MB
        ok = ok and good
        lines.append(
            f"| {w} | {first[w].rss_mb:.1f} MB (t={first[w].at_s:.0f}s) | "
            f"{last[w].rss_mb:.1f} MB (t={last[w].at_s:.0f}s) | {growth:+.1f} MB | "
            f"{'ok' if good else 'MISS'} |"
        )
    lines += [
        "",
        f"Targets: RSS <= {RSS_LIMIT_MB:.0f} MB per worker at 1 min; growth from 1 min to the "
        f"end <= {GROWTH_TOLERANCE_MB:.0f} MB (noise).",
    ]
    text = "\n".join(lines) + "\n"
    (run_dir / "memory.md").write_text(text)
    (run_dir / "memory.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "samples": [asdict(s) for s in samples],
                "measurement": measurement.__dict__,
                "ok": ok,
            },
            indent=2,
        )
        + "\n"
    )
    return text, ok
