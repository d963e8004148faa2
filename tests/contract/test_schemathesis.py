"""schemathesis against the served document: every check, a fixed seed, a bounded time.

`make fuzz` runs the same command for ten minutes: FUZZ_SECONDS sets the time, and an empty
FUZZ_SEED lets schemathesis pick a seed (it prints it, to replay a finding).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.contract

HERE = Path(__file__).resolve().parent
SECONDS = int(os.environ.get("FUZZ_SECONDS", "90"))
SEED = os.environ.get("FUZZ_SEED", "1")


def schemathesis_command(base: str, token: str | None, report_dir: Path) -> list[str]:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{base}/docs/openapi.json",
        "--checks",
        "all",
        "--max-time",
        str(SECONDS),
        "--request-timeout",
        "10",
        "--report",
        "junit",
        "--report-dir",
        str(report_dir),
    ]
    if SEED:
        command += ["--seed", SEED]
    if token is not None:
        command += ["--header", f"Authorization: Bearer {token}"]
    return command


def test_the_fuzzer_finds_nothing(
    docs_server: str,
    write_token: str | None,
    output_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.contract.hooks", "NO_COLOR": "1"}
    result = subprocess.run(
        schemathesis_command(docs_server, write_token, output_dir / "schemathesis"),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SECONDS + 240,
    )
    (output_dir / "schemathesis.log").write_text(result.stdout + result.stderr)
    summary = [line for line in result.stdout.splitlines() if re.search(r"\d+ generated", line)]
    with capsys.disabled():  # the summary belongs in the CI log, pass or fail
        last = result.stdout.strip().splitlines()[-1:]
        sys.stdout.write("\nschemathesis: " + " | ".join([*summary, *last]) + "\n")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert summary and "passed" in summary[0], result.stdout[-3000:]
