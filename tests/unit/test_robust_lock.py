"""Shared memory that survives a killed process: the robust lock and the rate-limit table.

A process SIGKILLed (the OOM killer) while it holds the table's lock, or at any instruction
of an update, must leave every other process able to count. Each check runs in a process of
its own, joined with a deadline, so a lock that stays held fails the test instead of hanging
the run.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from typing import Any

from app.ratelimit import robust_lock
from app.ratelimit.robust_lock import RobustLock
from app.ratelimit.window_table import WindowTable

END, NOW = 480, 430
# Generous for a loaded machine: a healthy check takes milliseconds; a wedged one, forever.
CHECK_SECONDS = 20


def _hold(lock_memory: Any, held: Any) -> None:
    lock = RobustLock(lock_memory)
    assert lock.acquire()
    held.set()
    time.sleep(300)


def _count(array: Any, lock_memory: Any, me: int | None, hits: int, out: Any) -> None:
    """The first and last count this process saw, in `out`. Each takes the lock: to claim
    the row, without a worker number, or near the limit of 8 (counts 2 to 14 here)."""
    table = WindowTable(array, lock_memory, 2, me)
    seen = [table.hit("login", END, NOW, 8) for _ in range(hits)]
    out[0], out[1] = seen[0], seen[-1]


def _hammer(array: Any, lock_memory: Any) -> None:
    """Hits without a worker number (each under the lock), claiming rows, until killed."""
    table = WindowTable(array, lock_memory, 2, None)
    n = 0
    while True:
        table.hit(f"client-{n % 40}", END, NOW, 10)
        n += 1


def _check(context: Any, array: Any, lock_memory: Any, me: int | None, hits: int) -> list[int]:
    out = context.Array("q", 2)
    checker = context.Process(target=_count, args=(array, lock_memory, me, hits, out))
    checker.start()
    checker.join(CHECK_SECONDS)
    if checker.exitcode is None:
        checker.kill()
        checker.join()
        raise AssertionError(f"a process still blocks on the table after {CHECK_SECONDS} s")
    assert checker.exitcode == 0
    return list(out)


def test_a_holder_killed_while_holding_the_lock_leaves_the_others_counting() -> None:
    # Spawned like Sanic's workers: the lock reaches them the way app.shared_ctx sends it.
    context = multiprocessing.get_context("spawn")
    array, lock_memory = WindowTable.allocate(64, workers=2)
    held = context.Event()
    holder = context.Process(target=_hold, args=(lock_memory, held))
    holder.start()
    assert held.wait(CHECK_SECONDS), "the holder never took the lock"
    os.kill(holder.pid or 0, signal.SIGKILL)
    holder.join()
    # Both workers' columns and a process without a worker number: every one counts on, and
    # the counts add up (the lock was recovered, not bypassed).
    assert _check(context, array, lock_memory, 0, 5) == [1, 5]
    assert _check(context, array, lock_memory, 1, 5) == [6, 10]
    assert _check(context, array, lock_memory, None, 5) == [11, 15]
    # And this process too, with the lock free again for the next one.
    lock = RobustLock(lock_memory, timeout=1.0)
    assert lock.acquire()
    lock.release()


def test_processes_killed_at_any_instruction_of_an_update_leave_the_table_usable() -> None:
    context = multiprocessing.get_context("fork")
    array, lock_memory = WindowTable.allocate(64, workers=2)
    rounds = 25
    for _ in range(rounds):
        hammer = context.Process(target=_hammer, args=(array, lock_memory))
        hammer.start()
        time.sleep(random.uniform(0.005, 0.05))  # noqa: S311 (a random moment, not a secret)
        os.kill(hammer.pid or 0, signal.SIGKILL)
        hammer.join()
    first, last = _check(context, array, lock_memory, 0, 3)
    assert last == first + 2  # counted under the lock, each hit seeing the one before


def test_a_wait_for_a_live_holder_ends_at_its_timeout() -> None:
    """A holder that is alive but stuck (stopped, descheduled) costs a bounded wait."""
    context = multiprocessing.get_context("fork")
    lock_memory = robust_lock.allocate()
    held = context.Event()
    holder = context.Process(target=_hold, args=(lock_memory, held))
    holder.start()
    try:
        assert held.wait(CHECK_SECONDS)
        lock = RobustLock(lock_memory, timeout=0.05)
        assert not lock.acquire()
        # For a moment after, this process does not wait at all (a stuck holder costs one wait).
        assert not lock.acquire()
    finally:
        holder.kill()
        holder.join()
    lock = RobustLock(lock_memory, timeout=1.0)
    assert lock.acquire()
    # Released before its memory is freed: glibc links a held robust mutex into the thread's
    # list of held locks, and would write into whatever reuses that memory next.
    lock.release()
