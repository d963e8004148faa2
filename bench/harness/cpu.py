"""CPU time per request, read from /proc: the server's whole process tree, and PostgreSQL's.

req/s on a shared two-core machine moves by a third between rounds; the CPU a server spends
per request moves far less, so it shows a change of a few percent. A server is started in a
session of its own (`start_new_session=True`), so its tree is every process of that session:
main process, Sanic's manager, workers. PostgreSQL is every process named `postgres` (backends
of every client and the background processes): run nothing else against it while measuring.
Linux only; elsewhere the figures are None.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds so far of each process: the server's, and PostgreSQL's, by pid."""

    server: dict[int, float]
    postgres: dict[int, float]

    @property
    def server_s(self) -> float:
        return sum(self.server.values())

    @property
    def postgres_s(self) -> float:
        return sum(self.postgres.values())


def _used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two samples by the processes alive at the second one.

    A process that exits in between takes its CPU time out of /proc: summing totals would
    then go down (a backend closing during a measurement gave negative figures), so each
    process counts for what it used since the first sample, or since it started.
    """
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def _stat_fields(pid_dir: Path) -> list[str] | None:
    try:
        raw = (pid_dir / "stat").read_text()
    except OSError:
        return None  # gone meanwhile
    # comm (field 2) is in parentheses and may hold spaces: split after its closing one.
    head, _, rest = raw.rpartition(")")
    return [head.split("(", 1)[1], *rest.split()]


def sample(session_id: int | None) -> CpuSample | None:
    """CPU seconds so far of the processes in `session_id`, and of PostgreSQL's processes."""
    if not PROC.is_dir() or session_id is None:
        return None
    server: dict[int, float] = {}
    postgres: dict[int, float] = {}
    for pid_dir in PROC.iterdir():
        if not pid_dir.name.isdigit():
            continue
        fields = _stat_fields(pid_dir)
        if fields is None:
            continue
        # fields[0] is comm, then /proc's own from state on: session at 4, utime 12, stime 13.
        seconds = (int(fields[12]) + int(fields[13])) / TICKS
        if int(fields[4]) == session_id:
            server[int(pid_dir.name)] = seconds
        elif fields[0] == "postgres":
            postgres[int(pid_dir.name)] = seconds
    return CpuSample(server, postgres)


def per_request_us(
    before: CpuSample | None, after: CpuSample | None, requests: int
) -> tuple[float | None, float | None]:
    """Server and PostgreSQL CPU microseconds per request between two samples."""
    if before is None or after is None or not requests:
        return None, None
    return (
        _used(before.server, after.server) / requests * 1e6,
        _used(before.postgres, after.postgres) / requests * 1e6,
    )
