"""The log formatters: one JSON object (or one readable line) per record, with the request id."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from app.ops.logs import (
    ACCESS_LOGGER,
    JsonFormatter,
    OrderedHandler,
    TextFormatter,
    configure_logging,
    flush_access_lines,
    request_id_var,
    write_access_json,
)
from app.settings import load_settings


def record(name: str = "app.test", msg: str = "hello %s", **extra: object) -> logging.LogRecord:
    made = logging.LogRecord(name, logging.INFO, __file__, 1, msg, ("world",), None)
    made.__dict__.update(extra)
    return made


def test_json_line_carries_the_request_id_of_the_current_context() -> None:
    token = request_id_var.set("req-42")
    try:
        line = JsonFormatter().format(record())
    finally:
        request_id_var.reset(token)
    entry = json.loads(line)
    assert entry["msg"] == "hello world"
    assert entry["request_id"] == "req-42"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "app.test"
    assert entry["ts"].endswith("Z")
    assert isinstance(entry["pid"], int)


def test_json_line_outside_a_request_says_so() -> None:
    assert json.loads(JsonFormatter().format(record()))["request_id"] == "-"


def test_json_line_includes_extras_and_exceptions() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failing = record(status=503, route="/items")
        failing.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(failing))
    assert entry["status"] == 503
    assert entry["route"] == "/items"
    assert "ValueError: boom" in entry["exc"]
    assert "\n" not in JsonFormatter().format(failing)


def test_text_line_is_readable_and_access_lines_are_terse() -> None:
    token = request_id_var.set("abc")
    try:
        plain = TextFormatter().format(record(pool="full"))
        access = TextFormatter().format(record(ACCESS_LOGGER, "GET /x %s", status=200))
    finally:
        request_id_var.reset(token)
    assert plain.endswith("INFO    app.test [abc] hello world pool=full")
    assert access.endswith("[abc] GET /x world")


@pytest.mark.parametrize(
    ("env", "fmt", "json_expected"),
    [
        ("production", "auto", True),
        ("development", "auto", False),
        ("development", "json", True),
        ("production", "text", False),
    ],
)
def test_configure_logging_installs_one_handler(env: str, fmt: str, json_expected: bool) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    saved_switches = logging._srcfile, logging.logThreads
    try:
        settings = load_settings(
            env_file=None,
            ENV=env,
            LOG_FORMAT=fmt,
            JWT_SECRET="x" * 40,
            DATABASE_URL="postgres://postgres@127.0.0.1/items",
        )
        configure_logging(settings)
        configure_logging(settings)
        [handler] = root.handlers
        assert isinstance(handler.formatter, JsonFormatter) is json_expected
        assert logging.getLogger("sanic.root").handlers == []
        assert logging.getLogger("sanic.access").disabled
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("sanic.access").disabled = False
        logging.captureWarnings(False)
        logging._srcfile, logging.logThreads = saved_switches


def test_access_lines_wait_in_a_buffer_but_never_overtake_other_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, write_through=True)
    monkeypatch.setattr(sys, "stdout", stream)
    handler = OrderedHandler(stream)
    handler.setFormatter(JsonFormatter())
    write_access_json("GET", "/items", "/items", 200, 1.5, 20, "127.0.0.1")
    assert raw.getvalue() == b""  # buffered: no write per request
    handler.emit(logging.LogRecord("app.test", logging.WARNING, "", 0, "later", None, None))
    write_access_json("GET", "/items", "/items", 404, 0.5, 20, "127.0.0.1")
    flush_access_lines()
    entries = [json.loads(line) for line in raw.getvalue().decode().splitlines()]
    assert [(e["logger"], e.get("status")) for e in entries] == [
        ("app.access", 200),
        ("app.test", None),
        ("app.access", 404),
    ]
