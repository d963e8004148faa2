"""The slowest requests a server saw itself: its JSON access lines written during a measurement.

wrk's p99 is what the client saw; a request that one worker kept waiting while it served others
shows here first, with its server-side duration. Only a server that writes the JSON access log
(ours with the `production` or `cached` profile) has these lines; for the others it is None.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

ACCESS_LOGGER = "app.access"
# A request slower than this server-side is counted; the tail target of the service.
SLOW_MS = 250.0
# Workers flush their buffered access lines every 0.1 s (app/ops/logs.py): wait that out.
FLUSH_WAIT_S = 0.3


@dataclass(frozen=True)
class Slowest:
    ms: float
    route: str
    status: int
    over_slow: int = 0
    lines: int = 0


def log_offset(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def slowest_since(path: Path, offset: int, *, wait: float = FLUSH_WAIT_S) -> Slowest | None:
    """The slowest access line written to `path` after byte `offset`, or None without any."""
    if wait:
        time.sleep(wait)
    with path.open("rb") as log:
        log.seek(offset)
        data = log.read()
    worst: Slowest | None = None
    over = lines = 0
    for raw in data.splitlines():
        if b'"logger":"app.access"' not in raw:
            continue
        try:
            entry = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue  # a line cut by a concurrent write of another worker
        duration = entry.get("duration_ms")
        if not isinstance(duration, int | float):
            continue
        lines += 1
        over += duration > SLOW_MS
        if worst is None or duration > worst.ms:
            worst = Slowest(float(duration), str(entry.get("route")), int(entry.get("status", 0)))
    if worst is None:
        return None
    return replace(worst, over_slow=over, lines=lines)
