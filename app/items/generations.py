"""Change stamps in shared memory, one cell per id (modulo GENERATION_SLOTS) and one for the
whole table: what the read cache (app/items/cache.py) checks its entries against."""

from __future__ import annotations

import os
import time
from multiprocessing.sharedctypes import RawArray
from typing import Any

# Ids share generation counters modulo this: a collision only costs an extra miss.
GENERATION_SLOTS = 1 << 16
_MASK = GENERATION_SLOTS - 1
# The table's own cell, after the ids' cells: every write to any item moves it.
_TABLE = GENERATION_SLOTS
# A stamp is a process id (below 2**22, Linux's PID_MAX_LIMIT) under a microsecond count.
_PID_BITS = 22
_MICROS_MASK = (1 << (63 - _PID_BITS)) - 1  # wraps after 2**41 us, 25 days


class Generations:
    """Per-id change stamps in shared memory, written and read without a lock.

    A bump stores a stamp that no cell has ever held (`_Stamps`), instead of adding one: a
    single aligned 8-byte store, whole or not at all whatever instruction its process is
    killed at, and no lock that a killed process could leave held for the others. Two bumps
    racing both store fresh values and either one left in place has moved the cell, so the
    only promise the cache needs holds: a cell never goes back to a value it had while an
    entry or a read remembered it. An increment could (a process paused between its load and
    its store writes an old count back), and that is the write a reader would then miss.
    `tests/unit/test_cache.py` kills bumping processes and checks both; the table's cell is
    written the same way (`tests/unit/test_page_cache.py`).
    """

    def __init__(self, array: Any) -> None:
        self._cells = memoryview(array).cast("B").cast("q")

    @staticmethod
    def allocate() -> Any:
        return RawArray("q", GENERATION_SLOTS + 1)

    def current(self, item_id: int) -> int:
        return int(self._cells[item_id & _MASK])

    def table(self) -> int:
        return int(self._cells[_TABLE])

    def bump(self, item_id: int) -> None:
        self._cells[item_id & _MASK] = _STAMPS.next()

    def bump_table(self) -> None:
        self._cells[_TABLE] = _STAMPS.next()


class _Stamps:
    """This process's stamps: its pid under a microsecond count that only grows in it.

    Unique across processes by the pid; across time by the count, which starts at the
    monotonic clock (shared by all processes), so a later process given a dead one's pid
    starts past every stamp the dead one made. The count wraps after 25 days, far beyond any
    entry's life (`CACHE_TTL`) or a read's.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        now = time.monotonic_ns() // 1000
        self._last = now if now > self._last else self._last + 1
        return ((self._last & _MICROS_MASK) << _PID_BITS) | os.getpid()


_STAMPS = _Stamps()
