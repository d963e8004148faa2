"""A lock shared by processes that one of them dying while holding it cannot wedge.

A `multiprocessing.Lock` stays held when its holder is SIGKILLed (the OOM killer), and every
other process then blocks on it forever. This one is a POSIX *robust* process-shared mutex in
shared memory: when its holder dies, at any instruction, the kernel marks it and the next
process to lock it gets it (`EOWNERDEAD`), makes it consistent and carries on. Every wait has
a deadline too: a holder that is alive but stopped (SIGSTOP, a debugger) or descheduled
costs a waiter at most `timeout`, after which the caller goes on without the lock, and for
`BACKOFF_SECONDS` this process does not wait for it again (a stopped holder costs one wait,
not one per request).

What it guards must therefore stay correct, only less exact, when it is used without the
lock: callers say what that costs where they use it (`app.window_table.WindowTable`).
`tests/unit/test_robust_lock.py` kills holders with SIGKILL and checks the others go on.

Made once in the main process (`allocate`, before workers spawn), reached in each process
through `app.shared_ctx` and opened there (`RobustLock(memory)`). The memory must outlive
every process that may hold the lock, as the server's does. Where the C library has no
robust mutexes (not glibc or musl on Linux), a `multiprocessing.Lock` with the same deadline
stands in: a dead holder then costs every waiter its timeout once per `BACKOFF_SECONDS`.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import multiprocessing
import os
import sys
import time
from multiprocessing.sharedctypes import RawArray
from typing import Any

log = logging.getLogger("app.robust_lock")

# pthread_mutex_t is 40 bytes on x86-64 glibc, 48 on aarch64: 64 leaves room everywhere.
MUTEX_WORDS = 8
_ATTR_BYTES = 64
_PTHREAD_PROCESS_SHARED = 1
_PTHREAD_MUTEX_ROBUST = 1
_CLOCK_MONOTONIC = time.CLOCK_MONOTONIC if sys.platform == "linux" else 1

BACKOFF_SECONDS = 0.5


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


def _pthread() -> Any:
    """The C library's pthread functions, or None where robust mutexes are missing."""
    if sys.platform != "linux":
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    needed = (
        "pthread_mutexattr_init",
        "pthread_mutexattr_setpshared",
        "pthread_mutexattr_setrobust",
        "pthread_mutexattr_destroy",
        "pthread_mutex_init",
        "pthread_mutex_trylock",
        "pthread_mutex_timedlock",
        "pthread_mutex_consistent",
        "pthread_mutex_unlock",
    )
    if not all(hasattr(libc, name) for name in needed):
        return None
    # Every pointer argument typed: untyped, ctypes would pass an address as a 32-bit int.
    for name in needed:
        getattr(libc, name).restype = ctypes.c_int
        getattr(libc, name).argtypes = (ctypes.c_void_p,)
    for name in ("pthread_mutexattr_setpshared", "pthread_mutexattr_setrobust"):
        getattr(libc, name).argtypes = (ctypes.c_void_p, ctypes.c_int)
    libc.pthread_mutex_init.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
    libc.pthread_mutex_timedlock.argtypes = (ctypes.c_void_p, ctypes.POINTER(_Timespec))
    # glibc 2.30+: a deadline on the monotonic clock, which a wall-clock step cannot move.
    if hasattr(libc, "pthread_mutex_clocklock"):
        libc.pthread_mutex_clocklock.restype = ctypes.c_int
        libc.pthread_mutex_clocklock.argtypes = (
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.POINTER(_Timespec),
        )
    return libc


_LIBC = _pthread()


def allocate() -> Any:
    """The lock's shared memory (or a `multiprocessing.Lock`), made in the main process."""
    if _LIBC is None:
        return multiprocessing.Lock()
    memory = RawArray("q", MUTEX_WORDS)
    attr = ctypes.create_string_buffer(_ATTR_BYTES)
    for call, args in (
        (_LIBC.pthread_mutexattr_init, (attr,)),
        (_LIBC.pthread_mutexattr_setpshared, (attr, _PTHREAD_PROCESS_SHARED)),
        (_LIBC.pthread_mutexattr_setrobust, (attr, _PTHREAD_MUTEX_ROBUST)),
        (_LIBC.pthread_mutex_init, (ctypes.addressof(memory), attr)),
    ):
        result = call(*args)
        if result != 0:
            raise OSError(result, f"{call.__name__}: {os.strerror(result)}")
    _LIBC.pthread_mutexattr_destroy(attr)
    return memory


class RobustLock:
    """This process's handle on a lock made by `allocate`."""

    __slots__ = ("_address", "_fallback", "_memory", "_skip_until", "timeout")

    def __init__(self, memory: Any, timeout: float = 0.02) -> None:
        self.timeout = timeout
        self._memory = memory  # keeps the shared memory mapped while this handle lives
        self._fallback: Any = None if _LIBC is not None else memory
        self._address = ctypes.addressof(memory) if self._fallback is None else 0
        self._skip_until = 0.0

    def acquire(self) -> bool:
        """Take the lock within `timeout`; False when it could not be had (go on without)."""
        if self._fallback is not None:
            return self._acquire_fallback()
        result = _LIBC.pthread_mutex_trylock(self._address)
        if result == errno.EBUSY:
            now = time.monotonic()
            if now < self._skip_until:
                return False
            result = self._wait(now + self.timeout)
        if result == 0:
            return True
        if result == errno.EOWNERDEAD:
            # The holder died holding it; what it guarded may be half written, which its users
            # tolerate (see the module docstring). Mark it usable again and go on holding it.
            _LIBC.pthread_mutex_consistent(self._address)
            log.warning("a process died holding a shared lock; it was recovered")
            return True
        if result == errno.ETIMEDOUT:
            self._skip_until = time.monotonic() + BACKOFF_SECONDS
            log.warning(
                "a shared lock was held for over %.0f ms; going on without it for %.1f s",
                self.timeout * 1000,
                BACKOFF_SECONDS,
            )
            return False
        self._skip_until = time.monotonic() + BACKOFF_SECONDS
        log.error("a shared lock failed: %s; going on without it", os.strerror(result))
        return False

    def _wait(self, deadline: float) -> int:
        if hasattr(_LIBC, "pthread_mutex_clocklock"):
            until = _Timespec(int(deadline), int(deadline % 1 * 1e9))
            result: int = _LIBC.pthread_mutex_clocklock(
                self._address, _CLOCK_MONOTONIC, ctypes.byref(until)
            )
            return result
        wall = time.time() + (deadline - time.monotonic())
        until = _Timespec(int(wall), int(wall % 1 * 1e9))
        result = _LIBC.pthread_mutex_timedlock(self._address, ctypes.byref(until))
        return result

    def _acquire_fallback(self) -> bool:
        if time.monotonic() < self._skip_until:
            return bool(self._fallback.acquire(False))
        if self._fallback.acquire(True, self.timeout):
            return True
        self._skip_until = time.monotonic() + BACKOFF_SECONDS
        return False

    def release(self) -> None:
        if self._fallback is not None:
            self._fallback.release()
        else:
            _LIBC.pthread_mutex_unlock(self._address)
