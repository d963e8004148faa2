"""Optional OpenTelemetry tracing: a span per request and per database query.

Off by default, and then nothing here is imported on the request path: the request hook and
the database handle test one attribute for None. On (`OTEL_ENABLED=true`), each worker exports
its spans over OTLP/HTTP in the background; a W3C `traceparent` sent by the client becomes the
parent of the request's span, and the query spans are its children. The SDK comes with the
`tracing` extra (`pip install '.[tracing]'`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer
    from sanic import Sanic


def make_provider(settings: Settings, exporter: SpanExporter | None = None) -> TracerProvider:
    """A tracer provider for this worker; `exporter` (tests) is flushed span by span."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create({"service.name": settings.OTEL_SERVICE_NAME})
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.OTEL_EXPORTER_OTLP_ENDPOINT or None
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def parent_context(headers: Any) -> Context:
    """The caller's trace context from its `traceparent` / `tracestate` headers."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract(carrier=headers)


def register(app: Sanic[Any, Any], settings: Settings) -> None:
    """Open this worker's tracer before it serves; flush and close it when it stops."""
    if not settings.OTEL_ENABLED:
        return

    @app.before_server_start
    async def open_tracer(app: Sanic[Any, Any]) -> None:
        provider = make_provider(settings, app.ctx.span_exporter)
        app.ctx.tracer_provider = provider
        tracer: Tracer = provider.get_tracer("items")
        app.tracer = tracer

    @app.after_server_stop
    async def close_tracer(app: Sanic[Any, Any]) -> None:
        provider = app.ctx.tracer_provider
        if provider is not None:
            provider.shutdown()
