"""The health and metrics operations of the OpenAPI document: one decorator per handler in
`app/ops/health.py` and `app/ops/metrics.py`."""

from __future__ import annotations

from app.http.openapi import UNAUTHORIZED, operation, response, schema_component

READINESS = schema_component(
    "Readiness",
    {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "fail"]},
            "checks": {
                "type": "object",
                "description": "One entry per dependency, e.g. `database`.",
                "additionalProperties": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"type": "string"}},
                },
            },
        },
    },
)

liveness = operation("health", {"200": response("The process answers.")})
readiness = operation(
    "health",
    {
        "200": response("Every critical dependency answers.", READINESS),
        "503": response(
            "A critical dependency failed, or the server is draining.",
            READINESS,
            required=("Retry-After",),
        ),
    },
)
metrics = operation(
    "metrics",
    {
        "200": response(
            "Prometheus text format, summed over every worker process.",
            {"type": "string"},
            media_type="text/plain",
        ),
        "401": UNAUTHORIZED,
    },
)
