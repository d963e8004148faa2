"""The benchmark harness behind `bench/run.py`; see bench/README.md."""

from __future__ import annotations

import os
import shutil
import subprocess
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


def ensure_command(command: str, package: str | None = None) -> str:
    """`command`'s path, installed from Debian's `package` (default: its name) when missing."""
    path = shutil.which(command)
    if path:
        return path
    package = package or command
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise BenchError(
            f"{command} is not installed; install it "
            f"(Debian/Ubuntu: `sudo apt-get install -y {package}`)"
        )
    print(f"{command} not found: installing {package} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BenchError(f"`{' '.join(cmd)}` failed:\n{result.stderr.strip()}")
    path = shutil.which(command)
    if not path:
        raise BenchError(f"apt-get installed {package} but {command} is not on PATH")
    return path
