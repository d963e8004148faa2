"""Optional OpenTelemetry tracing, checked with the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sanic_testing.reusable import ReusableClient

from app.factory import create_app
from app.settings import load_settings
from tests.support import free_port

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def _settings(database_url: str, *, tracing: bool) -> object:
    return load_settings(
        env_file=None,
        DATABASE_URL=database_url,
        WORKERS=1,
        DB_POOL_MIN=1,
        DB_POOL_MAX=2,
        ACCESS_LOG=False,
        RATE_LIMIT="off",
        CACHE_ENABLED=False,
        OTEL_ENABLED=tracing,
    )


# First, before the module's traced server exists: Tortoise allows one global context.
def test_tracing_is_off_by_default(database_url: str) -> None:
    app = create_app(_settings(database_url, tracing=False))  # type: ignore[arg-type]
    with ReusableClient(app, port=free_port()) as client:
        _, response = client.get("/items")
        assert response.status == 200
        assert app.tracer is None
        assert type(app.ctx.db).__name__ == "Database"


@pytest.fixture(scope="module")
def traced(database_url: str) -> Iterator[tuple[ReusableClient, InMemorySpanExporter]]:
    app = create_app(_settings(database_url, tracing=True))  # type: ignore[arg-type]
    exporter = InMemorySpanExporter()
    app.ctx.span_exporter = exporter
    with ReusableClient(app, port=free_port()) as client:
        yield client, exporter


def test_a_request_continues_the_callers_trace_with_a_span_per_query(
    traced: tuple[ReusableClient, InMemorySpanExporter],
) -> None:
    client, exporter = traced
    exporter.clear()
    _, response = client.get(
        "/items/987654", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    )
    assert response.status == 404

    spans = exporter.get_finished_spans()
    [server] = [s for s in spans if s.kind is SpanKind.SERVER]
    [query] = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_ID
    assert server.name == "GET /items/<item_id:int>"
    assert server.attributes["http.response.status_code"] == 404
    assert query.context.trace_id == server.context.trace_id
    assert query.parent is not None and query.parent.span_id == server.context.span_id
    assert query.attributes["db.system"] == "postgresql"
    assert "FROM items" in str(query.attributes["db.statement"])


def test_without_traceparent_a_new_trace_starts(
    traced: tuple[ReusableClient, InMemorySpanExporter],
) -> None:
    client, exporter = traced
    exporter.clear()
    _, response = client.get("/items")
    assert response.status == 200
    [server] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert server.parent is None
    assert server.name == "GET /items"


def test_an_invented_method_names_no_span(
    traced: tuple[ReusableClient, InMemorySpanExporter],
) -> None:
    """A method token is client input: it goes in one attribute, never the span's name."""
    client, exporter = traced
    exporter.clear()

    async def send() -> httpx.Response:
        async with httpx.AsyncClient() as http:
            return await http.request("ZQXYZ", f"http://127.0.0.1:{client.port}/items")

    # The in-process server answers only while its own loop runs.
    response = client._loop.run_until_complete(send())
    assert response.status_code in (404, 405)
    [server] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert server.name == "HTTP <unmatched>"
    assert server.attributes["http.request.method"] == "_OTHER"
    assert server.attributes["http.request.method_original"] == "ZQXYZ"
