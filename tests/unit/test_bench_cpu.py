"""The benchmark's CPU per request: read from /proc for a server's session and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from harness.cpu import CpuSample, per_request_us, sample

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

# Half a second of CPU, then idle until killed (a dead process's CPU leaves /proc).
BUSY = (
    "import time\nend = time.process_time() + 0.5\n"
    "while time.process_time() < end: pass\ntime.sleep(60)\n"
)
LEADER = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {BUSY!r}])"


def test_a_session_s_cpu_counts_its_children_and_nothing_outside_it() -> None:
    # A server is started in a session of its own; its workers are that session's children.
    leader = subprocess.Popen([sys.executable, "-c", LEADER], start_new_session=True)
    try:
        before = sample(leader.pid)
        assert before is not None
        # This process spins as long, outside the session: it must not be counted.
        end = time.process_time() + 0.5
        while time.process_time() < end:
            pass
        used = 0.0
        deadline = time.monotonic() + 20
        while used < 0.5 and time.monotonic() < deadline:
            time.sleep(0.05)
            now = sample(leader.pid)
            assert now is not None
            used = now.server_s - before.server_s
        # The child's half second, plus two interpreters starting; not this process's.
        assert 0.5 <= used < 0.9, used
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait(timeout=10)


def test_per_request_figures_are_microseconds_over_the_requests() -> None:
    before = CpuSample({10: 1.0}, {20: 1.5, 21: 0.5})
    after = CpuSample({10: 1.5}, {20: 1.75})
    # Backend 21 exited in between: it counts for nothing, never for minus its total.
    assert per_request_us(before, after, 1000) == (500.0, 250.0)
    assert per_request_us(None, after, 1000) == (None, None)
    assert per_request_us(before, after, 0) == (None, None)
