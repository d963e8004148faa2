"""The per-request hook: request id in context, access log, metrics, and the request's span.

One wrapper around `Sanic.handle_request` instead of a request and a response middleware: its
`finally` also runs for a cancelled request (so the in-flight gauge never drifts), it sees the
final status and size after the response is sent, and it costs one coroutine frame.
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import TYPE_CHECKING, Any

from sanic import Request, Sanic
from sanic.app import ctx_type
from sanic.config import Config

from app.http.client import client_ip
from app.http.middleware import request_id
from app.ops import metrics
from app.ops.logs import ACCESS_LOGGER, request_id_var, write_access_json

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from app.ops.balance import Balancer

access_log = logging.getLogger(ACCESS_LOGGER)

UNMATCHED = "<unmatched>"
# A status for requests that ended without a response (the client went away).
NO_RESPONSE = 499


def _route_template(request: Request) -> str:
    route = request.route
    return f"/{route.path}" if route is not None else UNMATCHED


class ObservedSanic(Sanic[Config, ctx_type]):
    """Sanic with the per-request hook; switches are set by `create_app` from settings."""

    __slots__ = (
        "balancer",
        "emit_access_log",
        "fast_json_access",
        "record_metrics",
        "tracer",
        "trusted_proxies",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.emit_access_log = True
        # JSON lines: the access line skips the logging machinery (app.logs.write_access_json).
        self.fast_json_access = False
        self.record_metrics = True
        self.trusted_proxies: tuple[Any, ...] = ()
        self.tracer: Tracer | None = None
        # Set per worker by app.balance when connections are balanced over workers.
        self.balancer: Balancer | None = None

    async def handle_request(self, request: Request) -> None:
        token = request_id_var.set(request_id(request))
        request.ctx.observed = True
        started = perf_counter()
        if self.balancer is not None:
            self.balancer.note(request)
        if self.record_metrics:
            metrics.STATS.started += 1
        try:
            if self.tracer is None:
                await super().handle_request(request)
            else:
                await self._handle_traced(request, self.tracer)
        finally:
            self._record(request, perf_counter() - started)
            request_id_var.reset(token)

    async def handle_exception(
        self, request: Request, exception: BaseException, run_middleware: bool = True
    ) -> None:
        if getattr(request.ctx, "observed", False):
            # Inside handle_request (already observed), or no request to speak of.
            await super().handle_exception(request, exception, run_middleware)
            return
        # Refused before routing (bad head, oversized body): still logged and counted.
        request.ctx.observed = True
        token = request_id_var.set(request_id(request))
        started = perf_counter()
        if self.record_metrics:
            metrics.STATS.started += 1
        try:
            await super().handle_exception(request, exception, run_middleware)
        finally:
            self._record(request, perf_counter() - started)
            request_id_var.reset(token)

    async def _handle_traced(self, request: Request, tracer: Tracer) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        from app.ops.tracing import parent_context

        # OpenTelemetry's HTTP conventions: an unknown method is `_OTHER` (the token as sent
        # in `http.request.method_original`) and names its span `HTTP`, so a client cannot
        # invent span names.
        sent = request.method
        known = sent in metrics.STANDARD_METHODS
        method = sent if known else "HTTP"
        attributes = {"http.request.method": sent if known else "_OTHER", "url.path": request.path}
        if not known:
            attributes["http.request.method_original"] = sent
        with tracer.start_as_current_span(
            f"{method} request",
            context=parent_context(request.headers),
            kind=SpanKind.SERVER,
            attributes=attributes,
        ) as span:
            await super().handle_request(request)
            response = getattr(request.stream, "response", None)
            status = response.status if response is not None else NO_RESPONSE
            route = _route_template(request)
            span.update_name(f"{method} {route}")
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))

    def _record(self, request: Request, seconds: float) -> None:
        response = getattr(request.stream, "response", None)
        status = response.status if response is not None else NO_RESPONSE
        route = _route_template(request)
        if self.record_metrics:
            metrics.STATS.record(metrics.method_label(request.method), route, status, seconds)
        if self.emit_access_log:
            body = getattr(response, "body", None)
            duration_ms = round(seconds * 1000, 3)
            size = len(body) if body else 0
            # The address rate limits count (X-Forwarded-For only from TRUSTED_PROXIES).
            address = client_ip(request, self.trusted_proxies)
            if self.fast_json_access and access_log.isEnabledFor(logging.INFO):
                write_access_json(
                    request.method, route, request.path, status, duration_ms, size, address
                )
                return
            access_log.info(
                "%s %s %s %.1fms %dB %s",
                request.method,
                request.path,
                status,
                duration_ms,
                size,
                address,
                extra={
                    "method": request.method,
                    "route": route,
                    "path": request.path,
                    "status": status,
                    "duration_ms": duration_ms,
                    "bytes": size,
                    "client_ip": address,
                },
            )
