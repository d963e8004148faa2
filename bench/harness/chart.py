"""results.png: req/s and p99 per scenario and server, when matplotlib is importable.

matplotlib is the optional `bench` extra (`pip install -e '.[bench]'`); without it the
harness writes the same numbers as tables only.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from harness.report import Summary

CHART_FILE = "results.png"


def draw_chart(
    run_dir: Path, summaries: list[Summary], servers: list[str], title: str
) -> Path | None:
    """Write `run_dir/results.png`; None when matplotlib is not installed."""
    if not summaries or importlib.util.find_spec("matplotlib") is None:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    scenarios = [s.scenario for s in summaries]
    width = 0.8 / len(servers)
    fig, (rps_ax, p99_ax) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for i, server in enumerate(servers):
        xs = [x + (i - (len(servers) - 1) / 2) * width for x in range(len(scenarios))]
        rps_bars = rps_ax.bar(xs, [s.rps[server] for s in summaries], width, label=server)
        p99_ax.bar(xs, [s.p99_ms[server] for s in summaries], width, label=server)
        if server != "baseline":
            labels = [f"{s.ratio[server]:.2f}x" if server in s.ratio else "" for s in summaries]
            rps_ax.bar_label(rps_bars, labels=labels, fontsize=7, padding=2)
    for ax, label in ((rps_ax, "req/s (higher is better)"), (p99_ax, "p99 ms (lower is better)")):
        ax.set_xticks(range(len(scenarios)), scenarios)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    rps_ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    path = run_dir / CHART_FILE
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
