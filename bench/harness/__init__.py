"""The benchmark harness behind `bench/run.py`; see bench/README.md."""

from __future__ import annotations

from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BENCH_DIR.parent
LUA_DIR = BENCH_DIR / "lua"
BASELINE_SERVER = BENCH_DIR / "baseline" / "server.py"
BASELINE_SCHEMA = BENCH_DIR / "baseline" / "schema.sql"


class BenchError(Exception):
    """A failure that stops the run with a one-line explanation."""


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
