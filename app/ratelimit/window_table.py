"""The rate limiter's counts for one machine: fixed windows in a shared-memory table."""

from __future__ import annotations

import hashlib
from multiprocessing.sharedctypes import RawArray
from typing import Any

from app.ratelimit import robust_lock
from app.ratelimit.robust_lock import RobustLock

# 65,536 clients per window per machine; beyond that the least-counted client in a probe
# run is forgotten (it may then get a few more requests than its limit).
TABLE_SLOTS = 1 << 16
PROBES = 8
TAG_MEMO = 100_000
TAG_MEMO_KEY_CHARS = 200


def _key_hash(key: str) -> int:
    # A stable hash: Python's own hash() is salted differently in every worker process.
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1


class WindowTable:
    """Fixed-window counters in one shared-memory array.

    Open addressing over `slots` rows of (tag, end of the row's window in epoch seconds, count
    of worker 0 .. count of worker W-1, count of processes without a worker number); a row
    whose window has ended is free for reuse, so the table never needs clearing. A key's count
    is the sum of its row. Rows keep the *end time* of their window, not a window number:
    policies of different periods share the table, and a row is free only once its own window
    is over, whatever the period of the key that probes it (a live count is never reset by
    another policy's key; `test_a_count_survives_keys_of_other_periods`). A lookup reads the
    whole probe run, since free rows may sit between a key's start slot and its row.

    Each numbered worker writes only its own column, so while a key is far from its limit (more
    than `margin`, two per column) a worker counts a request with no lock at all: it adds one
    to its own cell, then reads the row's sum as the request's count; so also far past it (a
    flood of refused requests takes no lock). Near the limit (the addition is then taken
    back), for a key without a row yet, and for processes without a worker number, a hit
    takes the one lock. Every hit adds before it reads, so the n-th
    addition reads a count of at least n: a limit of N never admits more than N, lock or no
    lock. It admits exactly N unless a worker is paused between its addition and its read
    just as the count crosses the limit, which can refuse one request per paused worker
    early (`..._never_past_it` in tests/unit/test_ratelimit.py; reading before adding let
    one too many in as often). A lock on every hit would cost each request, at a limit never
    reached, and stall a worker whenever the other was descheduled holding it.
    Rows are (re)claimed under the lock, counts zeroed before the window end and tag are
    written; plain 8-byte stores, in order on x86-64 (on weaker memory models a reader may
    briefly see a stale count at a window's start).

    The lock is an `app.robust_lock.RobustLock`: a process killed while holding it (at any
    instruction) does not keep it, and a wait for it lasts at most its timeout. Without the
    lock a hit is counted all the same (admit and count): the limit still holds for numbered
    workers; processes without a worker number, which share a column, may lose an addition,
    and two processes claiming a row for one key at once may split its count. Every write is
    a whole 8-byte cell, so no interleaving of processes, and no process dying between two
    writes, leaves the table unusable (`tests/unit/test_robust_lock.py`).
    """

    def __init__(self, array: Any, lock: Any, workers: int = 0, me: int | None = None) -> None:
        self._cells = memoryview(array).cast("B").cast("q")
        self._columns = workers + 1
        self._fields = 2 + self._columns
        self._slots = len(self._cells) // self._fields
        self._lock = RobustLock(lock)
        # This process's column: its worker number, else the last one (written under the lock).
        self._me = me if me is not None and me < workers else None
        self._column = 2 + (self._me if self._me is not None else workers)
        self.margin = 2 * self._columns
        # Keys' hashes, remembered per process (blake2b costs as much as the rest of a hit).
        # At most TAG_MEMO keys of at most TAG_MEMO_KEY_CHARS characters: keys hold client
        # input (a username, a forwarded address), so neither their number nor size may grow
        # this process's memory without bound.
        self._tags: dict[str, int] = {}

    @staticmethod
    def allocate(slots: int = TABLE_SLOTS, workers: int = 0) -> tuple[Any, Any]:
        """The shared array and lock; made in the main process so workers inherit them."""
        return RawArray("q", slots * (3 + workers)), robust_lock.allocate()

    def hit(self, key: str, end: int, now: int, limit: int = 1 << 62) -> int:
        """Count one request for `key` in the window ending at `end` (epoch seconds) at `now`.

        Returns the count including it.
        """
        tag = self._tags.get(key)
        if tag is None:
            tag = _key_hash(key) | 1
            if len(key) <= TAG_MEMO_KEY_CHARS:
                if len(self._tags) >= TAG_MEMO:
                    self._tags.clear()
                self._tags[key] = tag
        cells = self._cells
        start = tag % self._slots
        if self._me is not None:
            row = self._find(tag, end, start)
            if row >= 0:
                # Add, then read: the limit then holds without the lock (class docstring).
                own, counts = row + self._column, row + 2
                cells[own] += 1
                total = sum(cells[counts : counts + self._columns])
                if total + self.margin < limit or total > limit + self.margin:
                    return total  # far below the limit, or far past it (refused anyway)
                cells[own] -= 1  # near the limit: counted again under the lock
        held = self._lock.acquire()
        try:
            row = self._find(tag, end, start)
            if row < 0:
                row = self._claim(tag, end, now, start)
            cells[row + self._column] += 1
            counts = row + 2
            return sum(cells[counts : counts + self._columns])
        finally:
            if held:
                self._lock.release()

    def _find(self, tag: int, end: int, start: int) -> int:
        cells, fields, slots = self._cells, self._fields, self._slots
        for probe in range(PROBES):
            row = ((start + probe) % slots) * fields
            if cells[row] == tag and cells[row + 1] == end:
                return row
        return -1

    def _claim(self, tag: int, end: int, now: int, start: int) -> int:
        """A row for `tag` (under the lock): a free one, else the least counted of the run."""
        cells, fields, slots = self._cells, self._fields, self._slots
        victim, victim_count = -1, -1
        for probe in range(PROBES):
            row = ((start + probe) % slots) * fields
            if cells[row + 1] <= now:  # its window is over (or it was never used)
                victim = row
                break
            count = sum(cells[row + 2 : row + fields])
            if victim < 0 or count < victim_count:
                victim, victim_count = row, count
        for column in range(2, fields):
            cells[victim + column] = 0
        cells[victim + 1] = end
        cells[victim] = tag
        return victim
