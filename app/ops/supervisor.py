"""The main process's supervisor thread.

It
- replaces a worker that died (SIGKILL, OOM kill) and logs it; Sanic 25.12 on its own only
  notes the failure and keeps running with one worker fewer;
- holds back a SIGTERM that arrives while workers are still starting (Sanic's manager can wait
  for their start-up acknowledgement forever then) until they serve;
- just before the drain delay ends (while the workers still accept), stops the shared
  listening socket, so a connection made during shutdown is refused at once instead of
  waiting in the backlog until the process exits.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import traceback
from types import FrameType
from typing import TYPE_CHECKING, Any

from app.settings import Settings

if TYPE_CHECKING:
    from sanic import Sanic
    from sanic.worker.manager import WorkerManager
    from sanic.worker.process import WorkerProcess


log = logging.getLogger("app.lifecycle")


POLL_SECONDS = 0.2


# The listener closes this long before the workers stop accepting (more than a poll): a
# connection the kernel queued after they stopped would be reset once its request was sent,
# which a load balancer may not resend (a POST), where a refused connect it always can.
LISTENER_LEAD_SECONDS = 0.3


# Sanic's own limit for workers to acknowledge start-up (WorkerProcess.THRESHOLD, 30 s).
STARTUP_LIMIT_SECONDS = 30.0


# Past SHUTDOWN_DELAY + GRACEFUL_SHUTDOWN_TIMEOUT, how long a main process whose workers have all
# exited may take to return before it is ended (see Supervisor._exit_if_wedged).
WEDGE_MARGIN = 5.0


SERVER_PROCESS_PREFIX = "Sanic-Server-"


class Supervisor(threading.Thread):
    """The main process's watcher of its workers (see the module docstring)."""

    def __init__(self, app: Sanic[Any, Any], settings: Settings) -> None:
        super().__init__(name="items-supervisor", daemon=True)
        self.manager: WorkerManager = app.manager
        self.settings = settings
        self.listener: socket.socket | None = next(
            (info.settings.get("sock") for info in app.state.server_info), None
        )
        self.started_at = time.monotonic()
        self.handled_pids: set[int] = set()
        self.pending_signal: int | None = None
        self.stopping_since: float | None = None
        self.listener_closed = False
        # Read by the signal handler; kept fresh by this thread. The handler must not touch the
        # manager's shared state itself: it would interleave with the main thread's own calls
        # on the same connection to the multiprocessing manager.
        self.serving = False
        self._forward = self.manager.shutdown_signal
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    # -- signals (main thread: record only) --

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002
        if self.stopping_since is not None:
            # A second signal while draining: stop now (Sanic's own answer, killing its whole
            # process group, would also kill whoever started the server).
            log.warning("%s again: killing the workers", _name(signum))
            for process in list(self.manager.transient_processes):
                if process.pid is not None and process.is_alive():
                    os.kill(process.pid, signal.SIGKILL)
            os._exit(1)
        if self.pending_signal is None and not self.serving:
            log.info("%s during start-up: stopping once the workers serve", _name(signum))
        self.pending_signal = signum

    # -- the watch loop (supervisor thread) --

    def run(self) -> None:
        while True:
            time.sleep(POLL_SECONDS)
            try:
                self._tick()
            except (BrokenPipeError, ConnectionError, EOFError):
                # The manager is gone: the server is stopping. Keep only the wedge watch.
                if self.stopping_since is None:
                    self.stopping_since = time.monotonic()
                self._exit_if_wedged()
            except Exception:
                log.exception("supervisor check failed")

    def _tick(self) -> None:
        if self.stopping_since is None and not self.serving:
            # Asked of the manager only until the workers first serve: the main thread talks
            # to the same manager, and the fewer calls the better.
            self.serving = self._all_serving()
        if self.pending_signal is not None and (
            self.serving or time.monotonic() - self.started_at > STARTUP_LIMIT_SECONDS
        ):
            # Sanic's manager drops a stop request made before every worker acknowledged
            # start-up (and then waits for them forever): pass it on only once they serve.
            signum, self.pending_signal = self.pending_signal, None
            self.stopping_since = time.monotonic()
            self._forward(signum, None)  # type: ignore[no-untyped-call]
        if self.stopping_since is None and self.manager._shutting_down:  # noqa: SLF001
            self.stopping_since = time.monotonic()
        if self.stopping_since is not None:
            self._close_listener_after_delay()
            self._exit_if_wedged()
            return
        for process in list(self.manager.transient_processes):
            pid = process.pid
            if (
                not process.name.startswith(SERVER_PROCESS_PREFIX)
                or pid is None
                or pid in self.handled_pids
                or process.is_alive()
            ):
                continue
            self._replace(process, pid)

    def _all_serving(self) -> bool:
        states = [
            state
            for name, state in self.manager.worker_state.items()
            if name.startswith(SERVER_PROCESS_PREFIX)
        ]
        return len(states) >= self.manager.num_server and all(s.get("serving") for s in states)

    def _replace(self, process: WorkerProcess, pid: int) -> None:
        from app.ops import metrics

        exitcode = process.exitcode
        how = f"signal {_name(-exitcode)}" if exitcode and exitcode < 0 else f"exit {exitcode}"
        log.error("worker %s (pid %d) died (%s); starting a replacement", process.name, pid, how)
        # Restarted from here, not by a message to the manager's loop: during start-up that
        # loop only waits for acknowledgements and would bounce the message forever.
        process.restart()  # type: ignore[no-untyped-call]
        self.handled_pids.add(pid)
        metrics.WORKER_CRASHES.inc()
        metrics.mark_process_dead(pid)

    def _exit_if_wedged(self) -> None:
        """End a main process that outlives its stopped workers.

        Rarely (a SIGTERM during start-up, on a loaded machine) Sanic's manager never returns
        after every worker has completed. Nothing is left to finish then: the workers drained
        and closed their pools. So past the drain budget, log where the main thread is stuck
        and exit 0.
        """
        if self.stopping_since is None:
            return
        budget = (
            self.settings.SHUTDOWN_DELAY + self.settings.GRACEFUL_SHUTDOWN_TIMEOUT + WEDGE_MARGIN
        )
        if time.monotonic() - self.stopping_since < budget:
            return
        alive = [p for p in self.manager.transient_processes if p.is_alive()]
        if alive:
            return
        main = sys._current_frames().get(threading.main_thread().ident or 0)  # noqa: SLF001
        where = "".join(traceback.format_stack(main)) if main is not None else "unknown"
        log.error(
            "workers stopped %.0f s ago but the manager did not return; exiting\n%s", budget, where
        )
        # The multiprocessing manager's process would outlive us (holding our stdout open):
        # end the children this process still has, then this process.
        for child in multiprocessing.active_children():
            child.kill()
        logging.shutdown()
        os._exit(0)

    def _close_listener_after_delay(self) -> None:
        if self.listener_closed or self.stopping_since is None:
            return
        lead = max(0.0, self.settings.SHUTDOWN_DELAY - LISTENER_LEAD_SECONDS)
        if time.monotonic() - self.stopping_since < lead:
            return
        self.listener_closed = True
        if self.listener is not None:
            try:
                self.listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                log.debug("listener already closed")


def _name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
