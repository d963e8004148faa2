"""At most one log line per interval for a failure that repeats on every request."""

from __future__ import annotations

import time
from collections.abc import Callable


class Throttle:
    """At most one log line per `interval` seconds for a repeating event, counting the rest.

    `ready()` is None while the event should stay quiet (counted as suppressed), else the
    number suppressed since the last line, which the caller then writes. The first event
    always gets a line. Per process, like the loggers; one event loop, so no lock.
    """

    __slots__ = ("_clock", "_next", "interval", "suppressed")

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.suppressed = 0
        self._clock = clock
        self._next: float | None = None

    def ready(self) -> int | None:
        now = self._clock()
        if self._next is not None and now < self._next:
            self.suppressed += 1
            return None
        self._next = now + self.interval
        suppressed, self.suppressed = self.suppressed, 0
        return suppressed
