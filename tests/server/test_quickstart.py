"""The README's quickstart block, run as written against a real `make run` on a fresh data dir.

`make run` starts exactly as on a fresh clone: no DATABASE_URL, so the embedded PostgreSQL
is created under a new DATA_DIR, migrated, and the development user made. The block is taken
from README.md (the fenced block after the `<!-- quickstart` marker) and run by bash with
`set -euo pipefail`; the only change is the port (8000 may be taken on a shared machine).
So the README cannot drift from the product: a block that stops working fails here.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from app.auth.dev_user import TOKEN_COMMAND
from tests.support import ROOT, free_port

pytestmark = pytest.mark.server

MARKER = "<!-- quickstart"
STARTUP_TIMEOUT = 120.0  # initdb of a fresh embedded PostgreSQL, migrations, two workers


def quickstart_block() -> str:
    readme = (ROOT / "README.md").read_text()
    assert readme.count(MARKER) == 1, "README.md marks exactly one quickstart block"
    after = readme.split(MARKER, 1)[1]
    found = re.search(r"^```sh\n(.*?)^```", after, flags=re.S | re.M)
    assert found, "a ```sh block follows the quickstart marker"
    return found.group(1)


@dataclass
class MakeRun:
    port: int
    env: dict[str, str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _fresh_clone_env(tmp_path: Path, data_dir: Path, port: int) -> dict[str, str]:
    """The environment of a newcomer's shell: nothing set but what the test must move."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "DB_", "DEV_USER", "TLS_", "ENV", "JWT_", "MAKE"))
        and key not in {"PORT", "HOST", "WORKERS", "DATA_DIR", "METRICS_TOKEN"}
    }
    stamp = tmp_path / "installed-stamp"
    stamp.touch()
    env.update(
        # A free port instead of 8000; the data dir of a fresh clone, in a temporary folder.
        PORT=str(port),
        DATA_DIR=str(data_dir),
        DATABASE_URL="",
        WORKERS="2",
        # This test's interpreter, and no reinstall: `make install` already ran.
        MAKEFLAGS=f"BIN={Path(sys.executable).parent} STAMP={stamp}",
    )
    return env


def _stop(make: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's main process only (STACK-NOTES), then make exits with it."""
    if make.poll() is None:
        for child in psutil.Process(make.pid).children():
            child.send_signal(signal.SIGTERM)
        try:
            make.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for child in psutil.Process(make.pid).children(recursive=True):
                child.kill()
            make.kill()
            make.wait()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A fresh DATA_DIR under .data/: pytest's own temporary folders are closed to the OS user
    the embedded PostgreSQL runs as under root."""
    (ROOT / ".data").mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="quickstart-", dir=ROOT / ".data"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def make_run(tmp_path: Path, data_dir: Path) -> Iterator[MakeRun]:
    port = free_port()
    env = _fresh_clone_env(tmp_path, data_dir, port)
    log_path = tmp_path / "make-run.log"
    with log_path.open("wb") as log:
        make = subprocess.Popen(
            ["make", "run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    run = MakeRun(port, env, log_path)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            assert make.poll() is None, f"make run exited: {run.log()}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"make run not ready: {run.log()}"
            time.sleep(0.2)
        yield run
    finally:
        _stop(make)


def test_the_readme_quickstart_block_works_as_written(make_run: MakeRun) -> None:
    block = quickstart_block()
    assert "localhost:8000" in block
    script = "set -euo pipefail\n" + block.replace("localhost:8000", f"localhost:{make_run.port}")
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env=make_run.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout
    assert done.returncode == 0, f"exit {done.returncode}\n{output}\n{done.stderr}"
    assert '"status":"ok"' in output, output
    assert re.search(r"^HTTP/1\.1 201 Created\r?$", output, flags=re.M), output
    assert re.search(r"^location: /items/1\r?$", output, flags=re.M | re.I), output
    assert output.count('"name":"Widget"') >= 3, output  # the write, the read, the list
    # `make run` said, once, how to get the token the block used.
    assert make_run.log().count(TOKEN_COMMAND) == 1, make_run.log()
